"""Types of the warehouse port (see the package docstring for the rules adapters keep)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, runtime_checkable

from flightpipe.contract import FlightEvent


class WarehouseError(Exception):
    """The warehouse rejected the request for good (bad query, schema mismatch)."""


class WarehouseUnavailable(WarehouseError):
    """The warehouse is down, locked, slow or throttling: retry later."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """A valid event together with what the broker said about its message."""

    event: FlightEvent
    message_id: str
    publish_time: dt.datetime


@dataclass(frozen=True, slots=True)
class FlightFilter:
    """Filters shared by the flight listing and the statistics (all optional, all ANDed)."""

    date_from: dt.date | None = None
    date_to: dt.date | None = None
    carrier: str | None = None
    origin: str | None = None
    dest: str | None = None
    status: str | None = None


# The last row of a page: (scheduled_departure, flight_id). Rows are ordered by that pair.
PageKey = tuple[dt.datetime, str]
GroupBy = Literal["carrier", "origin", "dest", "flight_date"]
GROUP_BY_FIELDS: Final[tuple[str, ...]] = ("carrier", "origin", "dest", "flight_date")
# Threshold in minutes for the on-time rate, as the US DOT defines it.
ON_TIME_MINUTES: Final = 15


@dataclass(frozen=True, slots=True)
class DelayStats:
    """One group of `/v1/stats/delays`."""

    key: dict[str, Any]
    flights: int
    cancelled: int
    avg_dep_delay_min: float | None
    avg_arr_delay_min: float | None
    on_time_rate: float | None


@runtime_checkable
class Warehouse(Protocol):
    """Idempotent event storage plus the reads the API serves."""

    def write(self, batch: Sequence[Envelope]) -> int:
        """Store the batch atomically; return how many events were new (duplicates are skipped)."""

    def list_flights(
        self, flt: FlightFilter, limit: int, after: PageKey | None = None
    ) -> list[dict[str, Any]]:
        """Current states matching `flt` by (scheduled_departure, flight_id), after `after`."""

    def get_flight(self, flight_id: str) -> dict[str, Any] | None:
        """The current state of one flight, or None."""

    def delay_stats(self, flt: FlightFilter, group_by: GroupBy) -> list[DelayStats]:
        """Delay statistics over current states, one row per group, ordered by the group key."""

    def newest_publish_time(self) -> dt.datetime | None:
        """The newest committed publish_time: the ingest watermark (None while empty)."""

    def ping(self) -> None:
        """Raise WarehouseUnavailable unless a trivial query succeeds."""

    def close(self) -> None:
        """Release connections."""
