"""Types of the warehouse port (see the package docstring for the rules adapters keep).

Each filter and each statistic is declared once, as a field of `FlightFilter` or `DelayStats`
with its meaning in the field's metadata (`FILTERS`, `STATISTICS`); both adapters' SQL, the API's
query parameters and response schemas, and the OpenAPI document derive theirs from these.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, get_args, runtime_checkable

import msgspec

from flightpipe.contract import COLUMNS, FlightEvent


class WarehouseError(Exception):
    """The warehouse rejected the request for good (bad query, schema mismatch)."""


class WarehouseUnavailable(WarehouseError):
    """The warehouse is down, locked, slow or throttling: retry later."""


class RowErrors(WarehouseError):
    """The warehouse rejected some rows for good; every other row of the batch was stored.

    `errors` maps each rejected event_id to the warehouse's reason: dead-letter those messages
    with the reason and ack them with the rest. `written` counts the rows stored.
    """

    def __init__(self, errors: dict[str, str], written: int) -> None:
        super().__init__(f"the warehouse rejected {len(errors)} rows")
        self.errors = errors
        self.written = written


class Envelope(msgspec.Struct, frozen=True):
    """A valid event together with what the broker said about its message.

    A msgspec Struct (like the event itself): one is built per message on the hot path.
    """

    event: FlightEvent
    message_id: str
    publish_time: dt.datetime


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """What a `FlightFilter` field means: `column op value` when set.

    `column` is a contract column (the API types the parameter as that column); `description`
    and `example` document the parameter. The examples together select nycflights13's first
    flight (2013-01-01 UA1545 EWR-IAH, N14228), so "Try it out" in the API's /docs with every
    example filled in returns a row.
    """

    column: str
    op: Literal["=", ">=", "<="]
    description: str
    example: Any


def _filter(column: str, op: Literal["=", ">=", "<="], description: str, example: Any) -> Any:
    """An optional FlightFilter field (None: no filter) declared with its FilterSpec."""
    return dataclasses.field(
        default=None, metadata={"filter": FilterSpec(column, op, description, example)}
    )


@dataclass(frozen=True, slots=True)
class FlightFilter:
    """Filters shared by the flight listing and the statistics (all optional, all ANDed).

    Dates and delay bounds are inclusive; a delay bound never matches a flight without that delay.
    Each field is declared once, here: the SQL of both adapters (`query.where`), the API's query
    parameters with their contract types, and the OpenAPI document derive from `FILTERS`.
    """

    # `_filter` returns a `dataclasses.field` (RUF009 cannot see that through the helper).
    date_from: dt.date | None = _filter(  # noqa: RUF009
        "flight_date",
        ">=",
        "First flight_date (local scheduled departure date), inclusive",
        "2013-01-01",
    )
    date_to: dt.date | None = _filter(  # noqa: RUF009
        "flight_date", "<=", "Last flight_date, inclusive", "2013-01-31"
    )
    carrier: str | None = _filter("carrier", "=", "Airline code", "UA")
    flight_number: int | None = _filter("flight_number", "=", "Flight number", 1545)
    tail_number: str | None = _filter(
        "tail_number", "=", "Aircraft tail number, exactly as stored", "N14228"
    )
    origin: str | None = _filter("origin", "=", "Origin airport code", "EWR")
    dest: str | None = _filter("dest", "=", "Destination airport code", "IAH")
    status: str | None = _filter("status", "=", "Current lifecycle state", "arrived")
    min_dep_delay: int | None = _filter(
        "dep_delay_min", ">=", "Departure delay at least this (minutes)", 0
    )
    max_dep_delay: int | None = _filter(
        "dep_delay_min", "<=", "Departure delay at most this (minutes)", 60
    )
    min_arr_delay: int | None = _filter(
        "arr_delay_min", ">=", "Arrival delay at least this (minutes)", 0
    )
    max_arr_delay: int | None = _filter(
        "arr_delay_min", "<=", "Arrival delay at most this (minutes)", 60
    )


# Every filter, in declaration order: FlightFilter's field name -> what it means.
FILTERS: Final[Mapping[str, FilterSpec]] = {
    f.name: f.metadata["filter"] for f in dataclasses.fields(FlightFilter)
}


# Columns a listing may be sorted by. flight_id always breaks ties, in the same direction.
SORT_FIELDS: Final[tuple[str, ...]] = (
    "scheduled_departure",
    "flight_date",
    "carrier",
    "flight_number",
    "origin",
    "dest",
    "dep_delay_min",
    "arr_delay_min",
    "air_time_min",
    "distance_mi",
)
# Of those, the ones that may be NULL (the contract's nullable columns): their NULLs sort last in
# both directions.
NULLABLE_SORT_FIELDS: Final = frozenset(c.name for c in COLUMNS if c.nullable) & set(SORT_FIELDS)


@dataclass(frozen=True, slots=True)
class Sort:
    """The order of a listing: one column of SORT_FIELDS, then flight_id, both one direction."""

    field: str = "scheduled_departure"
    descending: bool = False


DEFAULT_SORT: Final = Sort()
# The last row of a page: (its value of the sort column, its flight_id). Rows are ordered by that
# pair; the value is None for a NULL in a nullable sort column.
PageKey = tuple[Any, str]


@dataclass(frozen=True, slots=True)
class Selection:
    """Which rows a listing or an export reads, in which order, with which columns.

    The current states matching `filter`, ordered by (`sort` field, flight_id), strictly after
    the page key `after`, at most `limit` of them; `columns` (default: all) are warehouse column
    names, checked by the adapter. One value for `list_flights` and `export_flights`, so both
    read exactly the same rows.
    """

    filter: FlightFilter
    limit: int
    after: PageKey | None = None
    sort: Sort = DEFAULT_SORT
    columns: Sequence[str] | None = None


GroupBy = Literal["carrier", "origin", "dest", "flight_date", "hour"]
# `hour` is the UTC hour of day (0-23) of the scheduled departure.
GROUP_BY_FIELDS: Final[tuple[str, ...]] = get_args(GroupBy)
# Threshold in minutes for the on-time rate, as the US DOT defines it.
ON_TIME_MINUTES: Final = 15


@dataclass(frozen=True, slots=True)
class Statistic:
    """How a `DelayStats` field is computed over a group's current states, and what it means.

    `sql` is an aggregate that both dialects (DuckDB, BigQuery) run as written. A continuous
    (interpolated) percentile over the non-null values has none: BigQuery has PERCENTILE_CONT only
    as an analytic function, so each adapter writes `percentile` (column, fraction) its own way.
    """

    description: str
    sql: str = ""
    percentile: tuple[str, float] | None = None


def _stat(description: str, sql: str = "", percentile: tuple[str, float] | None = None) -> Any:
    """A DelayStats field declared with its Statistic."""
    return dataclasses.field(metadata={"stat": Statistic(description, sql, percentile)})


@dataclass(frozen=True, slots=True)
class DelayStats:
    """One group of `/v1/stats/delays`: `key` maps each group_by field to its value."""

    key: dict[str, Any]
    flights: int = _stat("Flights in the group", "COUNT(*)")
    cancelled: int = _stat(
        "Of those, cancelled", "COUNT(CASE WHEN status = 'cancelled' THEN 1 END)"
    )
    avg_dep_delay_min: float | None = _stat("Mean departure delay, minutes", "AVG(dep_delay_min)")
    avg_arr_delay_min: float | None = _stat("Mean arrival delay, minutes", "AVG(arr_delay_min)")
    on_time_rate: float | None = _stat(
        f"Share of flights with an arrival delay arriving at most {ON_TIME_MINUTES} minutes late",
        f"AVG(CASE WHEN arr_delay_min <= {ON_TIME_MINUTES} THEN 1.0 "
        "WHEN arr_delay_min IS NOT NULL THEN 0.0 END)",
    )
    median_dep_delay_min: float | None = _stat(
        "Median departure delay (interpolated)", percentile=("dep_delay_min", 0.5)
    )
    p90_dep_delay_min: float | None = _stat(
        "90th percentile departure delay (interpolated)", percentile=("dep_delay_min", 0.9)
    )
    median_arr_delay_min: float | None = _stat(
        "Median arrival delay (interpolated)", percentile=("arr_delay_min", 0.5)
    )
    p90_arr_delay_min: float | None = _stat(
        "90th percentile arrival delay (interpolated)", percentile=("arr_delay_min", 0.9)
    )


# Every statistic, in declaration order (the response's and the CSV's column order).
STATISTICS: Final[Mapping[str, Statistic]] = {
    f.name: f.metadata["stat"] for f in dataclasses.fields(DelayStats) if "stat" in f.metadata
}


@runtime_checkable
class Warehouse(Protocol):
    """Idempotent event storage plus the reads the API serves."""

    def write(self, batch: Sequence[Envelope]) -> int:
        """Store the batch atomically; return how many events were new (duplicates are skipped)."""

    def list_flights(self, selection: Selection) -> list[dict[str, Any]]:
        """The current states `selection` picks, in its order, with its columns.

        Unknown `selection.columns` (not warehouse column names) raise WarehouseError.
        """

    def export_flights(
        self, selection: Selection, *, fmt: Literal["csv", "ndjson"] = "csv", chunk: int = 5000
    ) -> Generator[bytes, None, None]:
        """`list_flights`' rows as `query.render_rows` renders them, `chunk` rows per piece.

        All from one query, so one snapshot. Lazy: the query starts at the first `next()`;
        closing the generator releases it.
        """

    def get_flight(self, flight_id: str) -> dict[str, Any] | None:
        """The current state of one flight, or None."""

    def flight_events(self, flight_id: str) -> list[dict[str, Any]]:
        """Every distinct stored event of one flight, by (event_time, publish_time, event_id)."""

    def delay_stats(
        self, flt: FlightFilter, group_by: GroupBy | Sequence[GroupBy]
    ) -> list[DelayStats]:
        """Delay statistics over current states, one row per group, ordered by the group key(s)."""

    def newest_publish_time(self) -> dt.datetime | None:
        """The newest committed publish_time: the ingest watermark (None while empty)."""

    def count_events(self) -> int:
        """How many distinct events (by `event_id`) are stored: exactly-once, checked."""

    def ping(self) -> None:
        """Raise WarehouseUnavailable unless a trivial query succeeds."""

    def close(self) -> None:
        """Release connections."""
