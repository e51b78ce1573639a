"""Query parameters: one msgspec Struct per endpoint, the only declaration of its query.

Each endpoint's query is a `msgspec.Struct` below. From that one class come
* parsing and validation (`parse_query`: `msgspec.convert`), every error a 400 naming the parameter;
* the OpenAPI parameters (`openapi.py` reads `msgspec.json.schema_components` of the class);
* the cross-parameter rules (`Filters.flight_filter`, `FlightsQuery.limit_for`).
The filter parameters are not written here either: one per field of the warehouse port's
`FlightFilter` (`port.FILTERS`: its column, description and example), typed as that column.
Patterns and limits are the contract's own annotated types (`flightpipe.contract.FlightEvent`'s
fields, read with `typing.get_type_hints(include_extras=True)`), not copies: a tail number is any
string the contract stores (at most 16 characters), so every stored tail number can be queried.

Why msgspec rather than a Flask extension (flask-smorest/webargs on marshmallow, spectree or
flask-openapi3 on pydantic): the contract already is msgspec, so its `Meta` constraints are reused
as they are, and no second model system enters the API; parsing costs no more than hand-written
parsers did (`bench/api_parse.py`, docs/benchmarks.md).

Written by hand here, because a query string is not a JSON object and msgspec's lax mode is too
lax for it (msgspec docs, '"Strict" vs "Lax" Mode'; 0.18.6 release notes: integral floats coerce
to ints, and msgspec 0.22 here takes `1e3` and `12.0` for an int with `strict=False`): `parse_query`
rejects unknown and repeated names, splits comma-separated lists for tuple fields, turns integer
strings into ints by a strict ASCII rule, then hands the dict to `msgspec.convert` (strict), whose
error path (`$.name`) names the parameter.

Limits (documented in the OpenAPI description): `limit` is 1..MAX_LIMIT for JSON pages and
1..MAX_EXPORT_ROWS for CSV and NDJSON exports; a date range longer than MAX_RANGE_DAYS needs a
narrowing filter (carrier, flight_number, tail_number, origin or dest).
"""

from __future__ import annotations

import re
from functools import cache
from types import UnionType
from typing import (
    TYPE_CHECKING,
    Annotated,
    Any,
    Final,
    Literal,
    TypeAlias,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

import msgspec
import msgspec.inspect as mi
from werkzeug.datastructures import MultiDict

from flightpipe.contract import COLUMN_NAMES, FlightEvent
from flightpipe.warehouse import FlightFilter
from flightpipe.warehouse.port import FILTERS, SORT_FIELDS, FilterSpec, GroupBy, Sort
from flightpipe_api.errors import bad_parameter

DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1000
MAX_EXPORT_ROWS: Final = 100_000
MAX_TOKEN_LENGTH: Final = 200
MAX_RANGE_DAYS: Final = 366
FORMATS: Final = ("json", "csv", "ndjson")
NARROWING: Final = ("carrier", "flight_number", "tail_number", "origin", "dest")
SORT_VALUES: Final = tuple(v for f in SORT_FIELDS for v in (f, f"-{f}"))

if TYPE_CHECKING:  # mypy sees the base types; msgspec sees the constrained ones
    SortSpec: TypeAlias = str
    ColumnName: TypeAlias = str
    Format: TypeAlias = str
else:
    SortSpec = Literal[SORT_VALUES]
    ColumnName = Literal[COLUMN_NAMES]
    Format = Literal[FORMATS]


def _doc(description: str, *examples: Any, **extra: Any) -> msgspec.Meta:
    return msgspec.Meta(
        description=description, examples=list(examples) or None, extra_json_schema=extra or None
    )


# The contract's field types, constraints included (pattern, length, range, enum).
_EVENT: Final = get_type_hints(FlightEvent, include_extras=True)
_DATE_TO_RULE: Final = (
    f"; not before date_from. A range longer than {MAX_RANGE_DAYS} days needs one of "
    f"{', '.join(NARROWING)}"
)


def _filter_parameter(name: str, spec: FilterSpec) -> tuple[str, Any, None]:
    """One filter as a query parameter: its column's contract type (None stripped), documented."""
    column = _EVENT[spec.column]
    if get_origin(column) in (Union, UnionType):
        (column,) = [t for t in get_args(column) if t is not type(None)]
    description = spec.description + (_DATE_TO_RULE if name == "date_to" else "")
    return name, Annotated[column, _doc(description, spec.example)] | None, None


if TYPE_CHECKING:
    _FilterParameters = msgspec.Struct
else:
    # One optional parameter per FlightFilter field, in its order (`Filters.flight_filter`).
    _FilterParameters = msgspec.defstruct(
        "_FilterParameters",
        [_filter_parameter(name, spec) for name, spec in FILTERS.items()],
        kw_only=True,
        frozen=True,
        forbid_unknown_fields=True,
        module=__name__,
    )


class Filters(_FilterParameters, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The filters shared by /v1/flights and /v1/stats/delays (all optional, all ANDed)."""

    def flight_filter(self) -> FlightFilter:
        """The filter, after the rules between parameters (date order and span, delay bounds)."""
        # The filter fields come first in every subclass, in FlightFilter's order.
        flt = FlightFilter(*msgspec.structs.astuple(self)[: len(FILTERS)])
        if flt.date_from and flt.date_to:
            if flt.date_from > flt.date_to:
                raise bad_parameter("date_to", "must not be before date_from")
            if (flt.date_to - flt.date_from).days >= MAX_RANGE_DAYS and not _narrowed(flt):
                raise bad_parameter(
                    "date_to",
                    f"a range over {MAX_RANGE_DAYS} days needs one of {', '.join(NARROWING)}",
                )
        _ordered(flt.min_dep_delay, flt.max_dep_delay, "min_dep_delay", "max_dep_delay")
        _ordered(flt.min_arr_delay, flt.max_arr_delay, "min_arr_delay", "max_arr_delay")
        return flt


def _narrowed(flt: FlightFilter) -> bool:
    return any(getattr(flt, n) is not None for n in NARROWING)


def _ordered(low: int | None, high: int | None, low_name: str, high_name: str) -> None:
    if low is not None and high is not None and low > high:
        raise bad_parameter(high_name, f"must not be below {low_name}")


FormatParam = Annotated[
    Format,
    _doc(
        "Response format; overrides the Accept header (application/json, text/csv, "
        "application/x-ndjson). Default json",
    ),
]


class FlightsQuery(Filters, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """GET /v1/flights."""

    sort: Annotated[
        SortSpec,
        _doc(
            "Order: a field, ascending, or -field, descending; flight_id breaks ties in the "
            "same direction. Flights without a value of a delay, air time or distance come last",
            "-dep_delay_min",
        ),
    ] = "scheduled_departure"
    fields: (
        Annotated[
            tuple[ColumnName, ...],
            msgspec.Meta(min_length=1),
            _doc(
                "Comma-separated columns to return (default: all), in that order, each once",
                ["flight_id", "carrier", "dep_delay_min"],
                uniqueItems=True,
            ),
        ]
        | None
    ) = None
    limit: Annotated[
        int,
        msgspec.Meta(ge=1, le=MAX_EXPORT_ROWS),
        _doc(f"Rows per page: 1 to {MAX_LIMIT} for JSON, 1 to {MAX_EXPORT_ROWS} for exports", 100),
    ] = DEFAULT_LIMIT
    page_token: (
        Annotated[
            str,
            msgspec.Meta(max_length=MAX_TOKEN_LENGTH),
            _doc("The previous JSON page's next_page_token (valid only with the same sort)"),
        ]
        | None
    ) = None
    format: FormatParam | None = None

    @property
    def order(self) -> Sort:
        """`sort` as the warehouse's Sort."""
        return Sort(self.sort.removeprefix("-"), descending=self.sort.startswith("-"))

    def limit_for(self, fmt: str) -> int:
        """`limit`, checked against the bound of the chosen format."""
        most = MAX_LIMIT if fmt == "json" else MAX_EXPORT_ROWS
        if self.limit > most:
            raise bad_parameter("limit", f"expected an integer from 1 to {most} for format {fmt}")
        return self.limit


class StatsQuery(Filters, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """GET /v1/stats/delays."""

    group_by: Annotated[
        tuple[GroupBy, ...],
        msgspec.Meta(min_length=1, max_length=2),
        _doc(
            "One or two comma-separated keys (hour: UTC hour of day of the scheduled departure)",
            ["carrier", "origin"],
            uniqueItems=True,
        ),
    ] = ("carrier",)
    format: FormatParam | None = None


class EventsQuery(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """GET /v1/flights/{flight_id}/events."""

    format: FormatParam | None = None


class NoQuery(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An endpoint without query parameters."""


# msgspec builds a Struct's decoding info on its first use and caches it on the class before it
# is complete; a second thread converting the same Struct meanwhile reads a NULL field type and
# the process dies with SIGSEGV in `convert` (tests/integration/test_api_params_threads.py). So
# each query's info is built once, here, at import, before any request thread runs.
QUERIES: Final = (FlightsQuery, StatsQuery, EventsQuery, NoQuery)
for _query in QUERIES:
    msgspec.json.Decoder(_query)


# --- the query string -> Struct bridge ---------------------------------------------------------

Q = TypeVar("Q", bound=msgspec.Struct)
_PATH = re.compile(r" - at `\$\.([A-Za-z_]+)")
_INTEGER = re.compile(r"-?[0-9]{1,7}")


def _base(t: mi.Type) -> mi.Type:
    while isinstance(t, mi.Metadata):
        t = t.type
    if isinstance(t, mi.UnionType):
        (t,) = [m for m in t.types if not isinstance(m, mi.NoneType)]
    while isinstance(t, mi.Metadata):
        t = t.type
    return t


@cache
def _shape(cls: type[msgspec.Struct]) -> tuple[frozenset[str], frozenset[str], str]:
    """(integer fields, list fields, the allowed names for messages) of a query Struct."""
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)  # noqa: S101 - every query class is a Struct
    kinds = {f.name: _base(f.type) for f in info.fields}
    ints = frozenset(n for n, t in kinds.items() if isinstance(t, mi.IntType))
    lists = frozenset(n for n, t in kinds.items() if isinstance(t, mi.VarTupleType))
    return ints, lists, ", ".join(sorted(kinds)) or "none"


def parse_query(args: MultiDict[str, str], cls: type[Q]) -> Q:
    """The endpoint's query as its Struct; any bad, unknown or repeated parameter is a 400."""
    ints, lists, allowed = _shape(cls)
    fields = cls.__struct_fields__
    values: dict[str, Any] = {}
    for name, given in args.lists():
        if name not in fields:
            raise bad_parameter(name[:64], f"unknown parameter; allowed: {allowed}")
        if len(given) > 1:
            raise bad_parameter(name, "given more than once")
        value: Any = given[0]
        if name in ints:
            if not _INTEGER.fullmatch(value):
                raise bad_parameter(name, "expected an integer")
            value = int(value)
        elif name in lists:
            value = value.split(",")
            if len(set(value)) != len(value):
                raise bad_parameter(name, "a name is repeated")
        values[name] = value
    try:
        return msgspec.convert(values, cls)
    except msgspec.ValidationError as exc:
        message = str(exc)
        found = _PATH.search(message)
        name = found.group(1) if found else "query"
        raise bad_parameter(name, message[: found.start()] if found else message) from None
