"""The flight record: the one data contract every part of flightpipe derives from.

`FlightEvent` is the message publishers send (a JSON object). From this single definition come:

* validation of incoming messages (`decode_event`, msgspec);
* the warehouse columns (`COLUMNS`), in a technology-neutral form (name, `Kind`, nullability,
  description): the contract's fields plus the three the pipeline adds (`message_id`,
  `publish_time`, `ingest_time`). Each warehouse adapter maps a `Kind` to its own type and derives
  its DDL from these (`duckdb.columns_ddl`, `bigquery_sql.events_schema`); the contract knows no
  storage;
* the JSON Schema published for producers (`json_schema`).

Unknown fields are ignored; a missing required field, a wrong type, a value outside its pattern or
malformed JSON makes the message invalid (`InvalidEvent` carries a one-line reason).

Validation rejects whatever a warehouse or the API could not round-trip, so a stored row can always
be read back: timestamps whose UTC value falls outside years 1-9999 (BigQuery's TIMESTAMP range and
Python's `datetime`; `0001-01-01T00:00:00+14:00` is year 0 in UTC), strings with control
characters, non-ASCII digits (`\\d` also accepts Arabic-Indic ones) and a trailing newline
(Python's `$` matches before one: the patterns end in `$(?!\\n)`, which means the same in Python
and in JSON Schema's ECMA-262 dialect). Any decoder failure, including `RecursionError` on deeply
nested JSON, is an `InvalidEvent`: one message can never raise anything else.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import msgspec
import msgspec.inspect as mi

Status = Literal["scheduled", "departed", "arrived", "cancelled", "diverted"]
STATUSES: Final[tuple[str, ...]] = ("scheduled", "departed", "arrived", "cancelled", "diverted")

# `$(?!\n)`: the end of the string in both Python (where `$` alone also matches before a final
# newline) and ECMA-262 (JSON Schema, OpenAPI). ASCII classes only: Python's `\d` is any Unicode
# digit. The API reads these names; keep them stable.
_END: Final = r"$(?!\n)"
FLIGHT_ID_PATTERN: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}-[A-Z0-9]{2}[0-9]{1,5}-[A-Z0-9]{3}" + _END
CARRIER_PATTERN: Final = r"^[A-Z0-9]{2}" + _END
AIRPORT_PATTERN: Final = r"^[A-Z0-9]{3}" + _END
# Registrations are letters, digits and hyphens (N14228, CC-BAW, PR-MYA).
TAIL_NUMBER_PATTERN: Final = r"^[A-Z0-9-]{1,16}" + _END
# Any printable text: no C0/C1 control characters (NUL, newline, escape...), which CSV, logs and
# HTTP headers downstream cannot carry faithfully.
EVENT_ID_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f]{1,128}" + _END
_AIRPORT: Final = AIRPORT_PATTERN
# The range every adapter can store and read back (BigQuery TIMESTAMP, Python datetime).
MIN_UTC: Final = dt.datetime(1, 1, 1, tzinfo=dt.UTC)
MAX_UTC: Final = dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)


# Reusable constrained types; each field adds its own description with a second Meta.
Utc = Annotated[dt.datetime, msgspec.Meta(tz=True)]
Minutes = Annotated[int, msgspec.Meta(ge=-100_000, le=100_000)]
Count = Annotated[int, msgspec.Meta(ge=0, le=20_000)]


def _d(description: str) -> msgspec.Meta:
    return msgspec.Meta(description=description)


class FlightEvent(msgspec.Struct, frozen=True, kw_only=True):
    """One observation of a flight's state, as published to the topic."""

    event_id: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=128,
            pattern=EVENT_ID_PATTERN,
            description="Idempotency key: the same event always carries the same id",
        ),
    ]
    flight_id: Annotated[
        str,
        msgspec.Meta(
            pattern=FLIGHT_ID_PATTERN,
            max_length=32,
            description=(
                "YYYY-MM-DD-<carrier><flight_number>-<origin>, e.g. 2013-01-01-UA1545-EWR;"
                " its date must be `flight_date`"
            ),
        ),
    ]
    event_time: Annotated[Utc, _d("When the source observed this state, UTC (RFC 3339)")]
    flight_date: Annotated[dt.date, msgspec.Meta(description="Local scheduled departure date")]
    carrier: Annotated[
        str, msgspec.Meta(pattern=CARRIER_PATTERN, description="2-character airline code")
    ]
    flight_number: Annotated[int, msgspec.Meta(ge=0, le=99_999, description="Flight number")]
    tail_number: (
        Annotated[
            str,
            msgspec.Meta(
                pattern=TAIL_NUMBER_PATTERN, max_length=16, description="Aircraft tail number"
            ),
        ]
        | None
    ) = None
    origin: Annotated[str, msgspec.Meta(pattern=_AIRPORT, description="Origin airport code")]
    dest: Annotated[str, msgspec.Meta(pattern=_AIRPORT, description="Destination airport code")]
    scheduled_departure: Annotated[Utc, _d("Scheduled departure, UTC (RFC 3339)")]
    actual_departure: Annotated[Utc, _d("Actual departure, UTC (RFC 3339)")] | None = None
    dep_delay_min: Annotated[Minutes, _d("Departure delay in minutes (negative: early)")] | None = (
        None
    )
    scheduled_arrival: Annotated[Utc, _d("Scheduled arrival, UTC (RFC 3339)")] | None = None
    actual_arrival: Annotated[Utc, _d("Actual arrival, UTC (RFC 3339)")] | None = None
    arr_delay_min: Annotated[Minutes, _d("Arrival delay in minutes (negative: early)")] | None = (
        None
    )
    air_time_min: Annotated[Count, _d("Minutes in the air")] | None = None
    distance_mi: Annotated[Count, _d("Distance between the airports in miles")] | None = None
    status: Annotated[Status, msgspec.Meta(description="Lifecycle state of the flight")]

    def __post_init__(self) -> None:
        """Cross-field rules msgspec's per-field constraints cannot state (it reports the error).

        * The id's date is the flight's date: the warehouses find a flight by its id through its
          date (DuckDB's zone maps skip every other day's rows; BigQuery prunes to one
          partition), so an id whose date disagreed would be stored and then not found.
        * No timestamp whose UTC value no warehouse can hold.
        """
        if flight_id_date(self.flight_id) != self.flight_date:
            raise ValueError("`flight_id` must start with `flight_date` (YYYY-MM-DD)")
        # Only years 1 and 9999 can leave the range through their offset: a cheap test first,
        # since this runs for every message.
        for name in _TIMESTAMP_FIELDS:
            value: dt.datetime | None = getattr(self, name)
            if value is not None and value.year in (1, 9999) and not _in_utc_range(value):
                raise ValueError(f"`{name}` is outside 0001-01-01..9999-12-31 UTC")


def flight_id_date(flight_id: str) -> dt.date | None:
    """The date a flight id starts with (`FlightEvent.flight_date` of every stored event), or None.

    None for a string that starts with no date: no stored flight has such an id.
    """
    try:
        return dt.date.fromisoformat(flight_id[:10])
    except ValueError:
        return None


class InvalidEvent(ValueError):
    """A message that can never become a valid flight record (dead-letter it, do not retry)."""


def _in_utc_range(value: dt.datetime) -> bool:
    """Whether an aware datetime's UTC value is a valid `datetime` (converting it would raise)."""
    offset = value.utcoffset() or dt.timedelta(0)
    naive = value.replace(tzinfo=None)
    if offset > dt.timedelta(0):
        return naive >= dt.datetime.min + offset
    return naive <= dt.datetime.max + offset


_decoder: Final = msgspec.json.Decoder(FlightEvent)
_encoder: Final = msgspec.json.Encoder()


def decode_event(data: bytes) -> FlightEvent:
    """Validate one message body against the contract; raise InvalidEvent with the reason."""
    try:
        return _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise InvalidEvent(f"schema: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidEvent(f"malformed json: {exc}") from None
    except RecursionError:
        # msgspec recurses per nesting level, even inside ignored fields.
        raise InvalidEvent("malformed json: nested too deeply") from None
    except Exception as exc:
        raise InvalidEvent(f"undecodable: {type(exc).__name__}: {exc}") from None


def encode_event(event: FlightEvent) -> bytes:
    """Serialise an event as the JSON body publishers send."""
    return _encoder.encode(event)


# --- Columns: the contract's fields plus what the pipeline adds ------------------------------

Kind = Literal["string", "int", "timestamp", "date"]


@dataclass(frozen=True)
class Column:
    """One warehouse column, in a technology-neutral form."""

    name: str
    kind: Kind
    nullable: bool
    description: str


def _unwrap(t: mi.Type) -> tuple[mi.Type, str]:
    """Strip msgspec Metadata wrappers, keeping the first description found."""
    description = ""
    while isinstance(t, mi.Metadata):
        extra = t.extra_json_schema or {}
        description = description or str(extra.get("description", ""))
        t = t.type
    return t, description


def _kind(t: mi.Type) -> Kind:
    if isinstance(t, mi.StrType | mi.LiteralType):
        return "string"
    if isinstance(t, mi.IntType):
        return "int"
    if isinstance(t, mi.DateTimeType):
        return "timestamp"
    if isinstance(t, mi.DateType):
        return "date"
    raise TypeError(f"no warehouse type for {t!r}")  # a new field type needs a mapping here


def _contract_columns() -> list[Column]:
    info = mi.type_info(FlightEvent)
    if not isinstance(info, mi.StructType):  # pragma: no cover - FlightEvent is a Struct
        raise TypeError("FlightEvent must be a msgspec Struct")
    columns = []
    for field in info.fields:
        t, description = _unwrap(field.type)
        nullable = False
        if isinstance(t, mi.UnionType):
            (t,) = [m for m in t.types if not isinstance(m, mi.NoneType)]
            t, inner = _unwrap(t)
            description = description or inner
            nullable = True
        columns.append(Column(field.name, _kind(t), nullable, description))
    return columns


CONTRACT_COLUMNS: Final[tuple[Column, ...]] = tuple(_contract_columns())
PIPELINE_COLUMNS: Final[tuple[Column, ...]] = (
    Column("message_id", "string", False, "Broker message id"),
    Column("publish_time", "timestamp", False, "When the broker accepted the message"),
    Column("ingest_time", "timestamp", False, "When the warehouse committed the row"),
)
COLUMNS: Final[tuple[Column, ...]] = CONTRACT_COLUMNS + PIPELINE_COLUMNS
# Read by FlightEvent.__post_init__ (which only runs once decoding starts, after this is set).
_TIMESTAMP_FIELDS: Final = tuple(c.name for c in CONTRACT_COLUMNS if c.kind == "timestamp")
COLUMN_NAMES: Final[tuple[str, ...]] = tuple(c.name for c in COLUMNS)
FIELD_NAMES: Final[tuple[str, ...]] = tuple(c.name for c in CONTRACT_COLUMNS)


def json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) document publishers validate against."""
    _, components = msgspec.json.schema_components([FlightEvent])
    body: dict[str, Any] = dict(components["FlightEvent"])
    body.update(
        {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "urn:flightpipe:schema:flight-event:v1",
            "title": "FlightEvent",
            "description": "One observation of a flight's state, published to the flights topic.",
        }
    )
    return body


# --- Evolution: which changes of the columns a stored table can follow -----------------------


@dataclass(frozen=True)
class Evolution:
    """How a store holding the `old` columns follows the `new` ones (see `evolve`)."""

    added: tuple[Column, ...]  # nullable columns the store adds; its rows read them as null
    relaxed: tuple[Column, ...]  # required columns that became nullable
    refused: tuple[str, ...]  # one reason per change that would lose or misread stored data


def evolve(old: Sequence[Column], new: Sequence[Column]) -> Evolution:
    """Compare two column lists by name: the compatible changes and the refused ones.

    Compatible: an added nullable column, a required column made nullable. Refused: a removed
    column (its data would be dropped), a retyped one (stored values would be misread), an added
    required one (stored rows have no value, and earlier producers never send it) and a nullable
    one made required. The rules hold for both warehouses (docs/architecture.md).
    """
    before = {c.name: c for c in old}
    after = {c.name: c for c in new}
    added, relaxed, refused = [], [], []
    for name in before.keys() - after.keys():
        refused.append(f"column {name} removed (its stored values would be dropped)")
    for column in new:
        was = before.get(column.name)
        if was is None:
            if column.nullable:
                added.append(column)
            else:
                refused.append(f"column {column.name} added as required (stored rows have none)")
        elif was.kind != column.kind:
            refused.append(f"column {column.name} retyped from {was.kind} to {column.kind}")
        elif was.nullable and not column.nullable:
            refused.append(f"column {column.name} made required (stored rows hold nulls)")
        elif not was.nullable and column.nullable:
            relaxed.append(column)
    return Evolution(tuple(added), tuple(relaxed), tuple(sorted(refused)))
