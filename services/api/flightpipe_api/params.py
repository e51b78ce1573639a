"""Query-string parameters: declared once, parsed strictly, documented from the same declaration.

Each `Param` holds its OpenAPI schema, its description and its parser; the endpoints list the
parameters they accept and `openapi.py` documents exactly those lists. Anything else is rejected
by name, a parameter given twice is rejected, and each value is checked against the same patterns
as the contract: every bad value is one 400 naming the parameter.

Limits (documented in the OpenAPI description):
* `limit`: 1..MAX_LIMIT for JSON pages, 1..MAX_EXPORT_ROWS for CSV and NDJSON exports;
* a date range longer than MAX_RANGE_DAYS needs a narrowing filter (carrier, flight_number,
  tail_number, origin or dest): that is what keeps an explicit scan bounded.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec
from werkzeug.datastructures import MultiDict

from flightpipe.contract import COLUMN_NAMES, STATUSES
from flightpipe.warehouse import FlightFilter, PageKey
from flightpipe.warehouse.port import (
    DEFAULT_SORT,
    GROUP_BY_FIELDS,
    NULLABLE_SORT_FIELDS,
    SORT_FIELDS,
    Sort,
)
from flightpipe_api.errors import bad_parameter

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
MAX_EXPORT_ROWS: Final = 100_000
MAX_TOKEN_LENGTH: Final = 200
MAX_RANGE_DAYS: Final = 366
MAX_GROUP_FIELDS: Final = 2
FORMATS: Final = ("json", "csv", "ndjson")
NARROWING: Final = ("carrier", "flight_number", "tail_number", "origin", "dest")
_CARRIER = re.compile(r"[A-Z0-9]{2}")
_AIRPORT = re.compile(r"[A-Z0-9]{3}")
_TAIL = re.compile(r"[A-Z0-9-]{1,16}")
_DELAY_BOUND: Final = 100_000
_DATE_TYPES: Final = {"scheduled_departure": "timestamp", "flight_date": "date"}
_TEXT_SORT: Final = frozenset({"carrier", "origin", "dest"})


@dataclass(frozen=True, slots=True)
class Param:
    """One query parameter: OpenAPI schema, description and parser (raises a 400)."""

    name: str
    schema: dict[str, Any]
    description: str
    parse: Callable[[str, str], Any]


def _date(name: str, value: str) -> dt.date:
    try:
        if len(value) != 10:
            raise ValueError
        return dt.date.fromisoformat(value)
    except ValueError:
        raise bad_parameter(name, "expected a date as YYYY-MM-DD") from None


def _pattern(pattern: re.Pattern[str], what: str) -> Callable[[str, str], str]:
    def parse(name: str, value: str) -> str:
        if not pattern.fullmatch(value):
            raise bad_parameter(name, f"expected {what}")
        return value

    return parse


def _integer(low: int, high: int) -> Callable[[str, str], int]:
    def parse(name: str, value: str) -> int:
        digits = value[1:] if value.startswith("-") else value
        if not (digits.isascii() and digits.isdigit() and len(digits) <= 7):
            raise bad_parameter(name, f"expected an integer from {low} to {high}")
        number = int(value)
        if not low <= number <= high:
            raise bad_parameter(name, f"expected an integer from {low} to {high}")
        return number

    return parse


def _status(name: str, value: str) -> str:
    if value not in STATUSES:
        raise bad_parameter(name, f"expected one of {', '.join(STATUSES)}")
    return value


def _sort(name: str, value: str) -> Sort:
    field = value.removeprefix("-")
    if field not in SORT_FIELDS:
        allowed = ", ".join(SORT_FIELDS)
        raise bad_parameter(name, f"expected one of {allowed}, each optionally prefixed by -")
    return Sort(field, descending=value.startswith("-"))


def _names(allowed: Sequence[str], most: int) -> Callable[[str, str], tuple[str, ...]]:
    def parse(name: str, value: str) -> tuple[str, ...]:
        names = tuple(value.split(","))
        unknown = [n for n in names if n not in allowed]
        if unknown:
            shown = ", ".join(repr(n[:40]) for n in unknown[:3])
            raise bad_parameter(name, f"unknown {shown}; allowed: {', '.join(allowed)}")
        if len(set(names)) != len(names):
            raise bad_parameter(name, "a name is repeated")
        if len(names) > most:
            raise bad_parameter(name, f"at most {most} names")
        return names

    return parse


def _format(name: str, value: str) -> str:
    if value not in FORMATS:
        raise bad_parameter(name, f"expected one of {', '.join(FORMATS)}")
    return value


def _limit(name: str, value: str) -> int:
    # The bound depends on the format; `parse_limit` checks it. Here: an integer at all.
    if not value.isascii() or not value.isdigit() or len(value) > 6:
        raise bad_parameter(name, f"expected an integer from 1 to {MAX_LIMIT}")
    return int(value)


def _token(name: str, value: str) -> str:
    if len(value) > MAX_TOKEN_LENGTH or not value.isascii():
        raise bad_parameter(name, "malformed or expired page token")
    return value


def _code_list(values: Iterable[str]) -> str:
    return "|".join(values)


_COLUMNS_PATTERN: Final = f"^({_code_list(COLUMN_NAMES)})(,({_code_list(COLUMN_NAMES)}))*$"
_GROUP_PATTERN: Final = f"^({_code_list(GROUP_BY_FIELDS)})(,({_code_list(GROUP_BY_FIELDS)}))?$"
_SORT_VALUES: Final = [v for f in SORT_FIELDS for v in (f, f"-{f}")]
_MINUTES: Final = {"type": "integer", "minimum": -_DELAY_BOUND, "maximum": _DELAY_BOUND}


def _delay(name: str, column: str, bound: str) -> Param:
    return Param(
        name,
        _MINUTES,
        f"Only flights whose {column} is {bound} this many minutes (inclusive); "
        "flights without that delay never match.",
        _integer(-_DELAY_BOUND, _DELAY_BOUND),
    )


FILTERS: Final[tuple[Param, ...]] = (
    Param(
        "date_from",
        {"type": "string", "format": "date"},
        "First flight_date (local scheduled departure date), inclusive, YYYY-MM-DD.",
        _date,
    ),
    Param(
        "date_to",
        {"type": "string", "format": "date"},
        f"Last flight_date, inclusive, YYYY-MM-DD; not before date_from. A range longer than "
        f"{MAX_RANGE_DAYS} days needs one of {', '.join(NARROWING)}.",
        _date,
    ),
    Param(
        "carrier",
        {"type": "string", "pattern": "^[A-Z0-9]{2}$"},
        "2-character airline code, e.g. UA.",
        _pattern(_CARRIER, "a 2-character airline code"),
    ),
    Param(
        "flight_number",
        {"type": "integer", "minimum": 0, "maximum": 99_999},
        "Flight number, e.g. 1545.",
        _integer(0, 99_999),
    ),
    Param(
        "tail_number",
        {"type": "string", "pattern": "^[A-Z0-9-]{1,16}$"},
        "Aircraft tail number, e.g. N14228.",
        _pattern(_TAIL, "a tail number of 1 to 16 characters A-Z, 0-9 or -"),
    ),
    Param(
        "origin",
        {"type": "string", "pattern": "^[A-Z0-9]{3}$"},
        "Origin airport code, e.g. EWR.",
        _pattern(_AIRPORT, "a 3-letter airport code"),
    ),
    Param(
        "dest",
        {"type": "string", "pattern": "^[A-Z0-9]{3}$"},
        "Destination airport code, e.g. IAH.",
        _pattern(_AIRPORT, "a 3-letter airport code"),
    ),
    Param(
        "status",
        {"type": "string", "enum": list(STATUSES)},
        "Current lifecycle state.",
        _status,
    ),
    _delay("min_dep_delay", "departure delay", "at least"),
    _delay("max_dep_delay", "departure delay", "at most"),
    _delay("min_arr_delay", "arrival delay", "at least"),
    _delay("max_arr_delay", "arrival delay", "at most"),
)
FORMAT: Final = Param(
    "format",
    {"type": "string", "enum": list(FORMATS)},
    "Response format; overrides the Accept header (application/json, text/csv, "
    "application/x-ndjson). Default json.",
    _format,
)
LIMIT: Final = Param(
    "limit",
    {"type": "integer", "minimum": 1, "maximum": MAX_EXPORT_ROWS, "default": DEFAULT_LIMIT},
    f"Rows per page: 1 to {MAX_LIMIT} for JSON, 1 to {MAX_EXPORT_ROWS} for CSV and NDJSON "
    "(streamed). Default 100.",
    _limit,
)
PAGE_TOKEN: Final = Param(
    "page_token",
    {"type": "string", "maxLength": MAX_TOKEN_LENGTH},
    "The previous JSON page's next_page_token (keyset cursor; valid only with the same sort).",
    _token,
)
SORT: Final = Param(
    "sort",
    {"type": "string", "enum": _SORT_VALUES, "default": "scheduled_departure"},
    "Order: a field, ascending, or -field, descending; flight_id breaks ties in the same "
    "direction. Flights without a value of a delay, air time or distance come last.",
    _sort,
)
FIELDS: Final = Param(
    "fields",
    {"type": "string", "pattern": _COLUMNS_PATTERN},
    "Comma-separated columns to return (default: all), in that order, each at most once.",
    _names(COLUMN_NAMES, len(COLUMN_NAMES)),
)
GROUP_BY: Final = Param(
    "group_by",
    {"type": "string", "pattern": _GROUP_PATTERN, "default": "carrier"},
    f"One or two comma-separated keys of {', '.join(GROUP_BY_FIELDS)} (hour: UTC hour of day "
    "of the scheduled departure, 0-23), e.g. carrier,origin. Default carrier.",
    _names(GROUP_BY_FIELDS, MAX_GROUP_FIELDS),
)
LIST_PARAMS: Final = (*FILTERS, SORT, FIELDS, LIMIT, PAGE_TOKEN, FORMAT)
STATS_PARAMS: Final = (*FILTERS, GROUP_BY, FORMAT)
EVENTS_PARAMS: Final = (FORMAT,)


def parse(args: MultiDict[str, str], accepted: Sequence[Param]) -> dict[str, Any]:
    """Reject unknown and repeated parameters; return name -> parsed value."""
    by_name = {p.name: p for p in accepted}
    parsed: dict[str, Any] = {}
    for name in args:
        param = by_name.get(name)
        if param is None:
            allowed = ", ".join(sorted(by_name)) or "none"
            raise bad_parameter(name[:64], f"unknown parameter; allowed: {allowed}")
        given = args.getlist(name)
        if len(given) > 1:
            raise bad_parameter(name, "given more than once")
        parsed[name] = param.parse(name, given[0])
    return parsed


def single_values(args: MultiDict[str, str], allowed: Iterable[str]) -> dict[str, str]:
    """Reject unknown and repeated parameters of an endpoint without typed ones."""
    allowed = set(allowed)
    return parse(args, [Param(n, {"type": "string"}, "", lambda _n, v: v) for n in allowed])


def parse_filter(values: dict[str, Any]) -> FlightFilter:
    """The filters of /v1/flights and /v1/stats/delays, with their cross-parameter rules."""
    date_from, date_to = values.get("date_from"), values.get("date_to")
    if date_from and date_to:
        if date_from > date_to:
            raise bad_parameter("date_to", "must not be before date_from")
        if (date_to - date_from).days >= MAX_RANGE_DAYS and not any(n in values for n in NARROWING):
            raise bad_parameter(
                "date_to",
                f"a range over {MAX_RANGE_DAYS} days needs one of {', '.join(NARROWING)}",
            )
    for low, high in (("min_dep_delay", "max_dep_delay"), ("min_arr_delay", "max_arr_delay")):
        if low in values and high in values and values[low] > values[high]:
            raise bad_parameter(high, f"must not be below {low}")
    return FlightFilter(
        **{p.name: values[p.name] for p in FILTERS if p.name in values},
    )


def parse_limit(values: dict[str, Any], fmt: str = "json") -> int:
    """`limit`: 1..MAX_LIMIT for JSON, 1..MAX_EXPORT_ROWS for exports; default DEFAULT_LIMIT."""
    limit: int = values.get("limit", DEFAULT_LIMIT)
    most = MAX_LIMIT if fmt == "json" else MAX_EXPORT_ROWS
    if not 1 <= limit <= most:
        raise bad_parameter("limit", f"expected an integer from 1 to {most} for format {fmt}")
    return limit


def sort_spec(sort: Sort) -> str:
    """`sort` as written in the query string."""
    return f"-{sort.field}" if sort.descending else sort.field


def _encode_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def encode_page_token(key: PageKey, sort: Sort = DEFAULT_SORT) -> str:
    """Opaque keyset cursor: the sort, the last row's sort value and its flight_id."""
    raw = msgspec.json.encode([sort_spec(sort), _encode_value(key[0]), key[1]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_value(field: str, value: Any) -> Any:
    kind = _DATE_TYPES.get(field)
    if value is None:
        if field not in NULLABLE_SORT_FIELDS:
            raise ValueError
        return None
    if kind == "timestamp":
        moment = dt.datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError
        return moment
    if kind == "date":
        return dt.date.fromisoformat(value)
    if field in _TEXT_SORT:
        if not isinstance(value, str) or len(value) > 3:
            raise ValueError
        return value
    if not isinstance(value, int) or isinstance(value, bool) or abs(value) > 1_000_000:
        raise ValueError
    return value


def decode_page_token(token: str, sort: Sort = DEFAULT_SORT) -> PageKey:
    """Inverse of encode_page_token; any tampering, or another sort, is a 400 naming page_token."""
    error = bad_parameter("page_token", "malformed or expired page token")
    if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        raise error
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        spec, value, flight_id = msgspec.json.decode(raw, type=tuple[str, Any, str])
        if spec != sort_spec(sort):
            raise bad_parameter("page_token", f"made for sort={spec[:40]}; use the same sort")
        key = _decode_value(sort.field, value)
    except (binascii.Error, msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError):
        raise error from None
    if len(flight_id) > 64:
        raise error
    return key, flight_id
