"""The response bodies as msgspec Structs: the one declaration the OpenAPI schemas come from.

The views encode warehouse rows (dicts) directly, which is faster than building Structs per row;
these classes declare the shapes, `openapi.py` turns them into component schemas with
`msgspec.json.schema_components`, and schemathesis checks every response against them.

A flight row is the contract's fields (`FlightEvent`, with their types and descriptions) plus the
pipeline's columns (`contract.PIPELINE_COLUMNS`); a statistics row is the group keys plus the
fields of the warehouse port's `DelayStats`. Nothing here lists a column by hand.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated, Any, Final, get_type_hints

import msgspec

from flightpipe.contract import PIPELINE_COLUMNS, FlightEvent
from flightpipe.warehouse.port import GROUP_BY_FIELDS, ON_TIME_MINUTES, DelayStats

_EVENT: Final = get_type_hints(FlightEvent, include_extras=True)
_PIPELINE_KINDS: Final = {"string": str, "timestamp": dt.datetime}
_ROW_FIELDS: Final = [
    *_EVENT.items(),
    *(
        (c.name, Annotated[_PIPELINE_KINDS[c.kind], msgspec.Meta(description=c.description)])
        for c in PIPELINE_COLUMNS
    ),
]

# Every column present (a flight, an event); every column optional (a page with `fields`).
Flight: Final[Any] = msgspec.defstruct(
    "Flight", _ROW_FIELDS, kw_only=True, forbid_unknown_fields=True
)
FlightFields: Final[Any] = msgspec.defstruct(
    "FlightFields",
    [(name, t, msgspec.UNSET) for name, t in _ROW_FIELDS],
    kw_only=True,
    forbid_unknown_fields=True,
)

_GROUP_TYPES: Final[dict[str, Any]] = {
    "carrier": _EVENT["carrier"],
    "origin": _EVENT["origin"],
    "dest": _EVENT["dest"],
    "flight_date": _EVENT["flight_date"],
    "hour": Annotated[int, msgspec.Meta(ge=0, le=23, description="UTC hour of day")],
}
_METRIC_DOCS: Final = {
    "flights": "Flights in the group",
    "cancelled": "Of those, cancelled",
    "avg_dep_delay_min": "Mean departure delay, minutes",
    "avg_arr_delay_min": "Mean arrival delay, minutes",
    "on_time_rate": f"Share of flights with an arrival delay arriving at most {ON_TIME_MINUTES} "
    "minutes late",
    "median_dep_delay_min": "Median departure delay (interpolated)",
    "p90_dep_delay_min": "90th percentile departure delay (interpolated)",
    "median_arr_delay_min": "Median arrival delay (interpolated)",
    "p90_arr_delay_min": "90th percentile arrival delay (interpolated)",
}
_STATS_TYPES: Final = get_type_hints(DelayStats)
# The statistics of a group, in the port's order: the CSV columns and the JSON keys after the keys.
STATS_COLUMNS: Final[tuple[str, ...]] = tuple(
    f.name for f in dataclasses.fields(DelayStats) if f.name != "key"
)
assert set(_GROUP_TYPES) == set(GROUP_BY_FIELDS), "every group key needs a type"  # noqa: S101
assert set(_METRIC_DOCS) == set(STATS_COLUMNS), "every statistic needs a description"  # noqa: S101

DelayStatsRow: Final[Any] = msgspec.defstruct(
    "DelayStatsRow",
    [
        *((k, t, msgspec.UNSET) for k, t in _GROUP_TYPES.items()),
        *(
            (name, Annotated[_STATS_TYPES[name], msgspec.Meta(description=_METRIC_DOCS[name])])
            for name in STATS_COLUMNS
        ),
    ],
    kw_only=True,
    forbid_unknown_fields=True,
)


def stats_row(stats: DelayStats) -> dict[str, Any]:
    """One group as the response's row: its keys, then every statistic."""
    return {**stats.key, **{name: getattr(stats, name) for name in STATS_COLUMNS}}


class Meta(msgspec.Struct, forbid_unknown_fields=True):
    """What every JSON body says about itself (no timing: that is the Server-Timing header)."""

    count: Annotated[int, msgspec.Meta(ge=0, description="Rows in this response")]


class FlightPage(msgspec.Struct, forbid_unknown_fields=True):
    """A page of GET /v1/flights."""

    data: list[FlightFields]
    next_page_token: Annotated[
        str | None, msgspec.Meta(description="The next page's token; null on the last page")
    ]
    meta: Meta


class FlightResponse(msgspec.Struct, forbid_unknown_fields=True):
    """GET /v1/flights/{flight_id}."""

    data: Flight
    meta: Meta


class EventsResponse(msgspec.Struct, forbid_unknown_fields=True):
    """GET /v1/flights/{flight_id}/events."""

    data: Annotated[list[Flight], msgspec.Meta(min_length=1)]
    meta: Meta


class DelayStatsResponse(msgspec.Struct, forbid_unknown_fields=True):
    """GET /v1/stats/delays."""

    data: list[DelayStatsRow]
    group_by: Annotated[str, msgspec.Meta(description="The group keys, comma-separated")]
    meta: Meta


class ErrorDetail(msgspec.Struct, forbid_unknown_fields=True):
    """The error itself."""

    code: int
    status: str
    message: str
    parameter: Annotated[str, msgspec.Meta(description="The offending parameter of a 400")] = ""


class Error(msgspec.Struct, forbid_unknown_fields=True):
    """The one error shape of every non-2xx response."""

    error: ErrorDetail


class Health(msgspec.Struct, forbid_unknown_fields=True):
    """/healthz and /readyz."""

    status: str


RESPONSES: Final = (FlightPage, FlightResponse, EventsResponse, DelayStatsResponse, Error, Health)
