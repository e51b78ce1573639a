"""Types of the warehouse port (see the package docstring for the rules adapters keep)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, runtime_checkable

import msgspec

from flightpipe.contract import FlightEvent


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
class FlightFilter:
    """Filters shared by the flight listing and the statistics (all optional, all ANDed).

    Dates and delay bounds are inclusive; a delay bound never matches a flight without that delay.
    """

    date_from: dt.date | None = None
    date_to: dt.date | None = None
    carrier: str | None = None
    flight_number: int | None = None
    tail_number: str | None = None
    origin: str | None = None
    dest: str | None = None
    status: str | None = None
    min_dep_delay: int | None = None
    max_dep_delay: int | None = None
    min_arr_delay: int | None = None
    max_arr_delay: int | None = None


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
# Of those, the ones that may be NULL: their NULLs sort last in both directions.
NULLABLE_SORT_FIELDS: Final = frozenset(
    {"dep_delay_min", "arr_delay_min", "air_time_min", "distance_mi"}
)


@dataclass(frozen=True, slots=True)
class Sort:
    """The order of a listing: one column of SORT_FIELDS, then flight_id, both one direction."""

    field: str = "scheduled_departure"
    descending: bool = False


DEFAULT_SORT: Final = Sort()
# The last row of a page: (its value of the sort column, its flight_id). Rows are ordered by that
# pair; the value is None for a NULL in a nullable sort column.
PageKey = tuple[Any, str]
GroupBy = Literal["carrier", "origin", "dest", "flight_date", "hour"]
# `hour` is the UTC hour of day (0-23) of the scheduled departure.
GROUP_BY_FIELDS: Final[tuple[str, ...]] = ("carrier", "origin", "dest", "flight_date", "hour")
# Threshold in minutes for the on-time rate, as the US DOT defines it.
ON_TIME_MINUTES: Final = 15


@dataclass(frozen=True, slots=True)
class DelayStats:
    """One group of `/v1/stats/delays`: `key` maps each group_by field to its value.

    Medians and 90th percentiles are continuous (interpolated) over the non-null delays.
    """

    key: dict[str, Any]
    flights: int
    cancelled: int
    avg_dep_delay_min: float | None
    avg_arr_delay_min: float | None
    on_time_rate: float | None
    median_dep_delay_min: float | None = None
    p90_dep_delay_min: float | None = None
    median_arr_delay_min: float | None = None
    p90_arr_delay_min: float | None = None


@runtime_checkable
class Warehouse(Protocol):
    """Idempotent event storage plus the reads the API serves."""

    def write(self, batch: Sequence[Envelope]) -> int:
        """Store the batch atomically; return how many events were new (duplicates are skipped)."""

    def list_flights(
        self,
        flt: FlightFilter,
        limit: int,
        after: PageKey | None = None,
        sort: Sort = DEFAULT_SORT,
        columns: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Current states matching `flt` ordered by (sort field, flight_id), after `after`.

        `columns` (default: all) must be warehouse column names; unknown ones raise WarehouseError.
        """

    def export_flights(
        self,
        flt: FlightFilter,
        limit: int,
        after: PageKey | None = None,
        sort: Sort = DEFAULT_SORT,
        columns: Sequence[str] | None = None,
        *,
        fmt: Literal["csv", "ndjson"] = "csv",
        chunk: int = 5000,
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
