"""The response bodies as msgspec Structs: the one declaration the OpenAPI schemas come from.

The views encode warehouse rows (dicts) directly, which is faster than building Structs per row;
these classes declare the shapes, `openapi.py` turns them into component schemas with
`msgspec.json.schema_components`, and schemathesis checks every response against them.

A flight row is the contract's fields (`FlightEvent`, with their types and descriptions) plus the
pipeline's columns (`contract.PIPELINE_COLUMNS`); a statistics row is the group keys plus the
warehouse port's statistics (`port.STATISTICS`: `DelayStats`' fields, with their descriptions).
Nothing here lists a column or a statistic by hand.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Annotated, Any, Final, get_type_hints

import msgspec

from flightpipe.contract import PIPELINE_COLUMNS, FlightEvent, Kind
from flightpipe.warehouse.port import GROUP_BY_FIELDS, STATISTICS, DelayStats

_EVENT: Final = get_type_hints(FlightEvent, include_extras=True)
# The Python type msgspec encodes for each kind of column the contract's own fields do not type.
_PYTHON: Final[Mapping[Kind, type]] = {
    "string": str,
    "int": int,
    "timestamp": dt.datetime,
    "date": dt.date,
}
_ROW_FIELDS: Final = [
    *_EVENT.items(),
    *(
        (c.name, Annotated[_PYTHON[c.kind], msgspec.Meta(description=c.description)])
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

# A group key is typed as its contract column, but for the computed hour.
_HOUR: Final = Annotated[int, msgspec.Meta(ge=0, le=23, description="UTC hour of day")]
_GROUP_TYPES: Final[dict[str, Any]] = {
    k: _HOUR if k == "hour" else _EVENT[k] for k in GROUP_BY_FIELDS
}
_STATS_TYPES: Final = get_type_hints(DelayStats)
# The statistics of a group, in the port's order: the CSV columns and the JSON keys after the keys.
STATS_COLUMNS: Final[tuple[str, ...]] = tuple(STATISTICS)

DelayStatsRow: Final[Any] = msgspec.defstruct(
    "DelayStatsRow",
    [
        *((k, t, msgspec.UNSET) for k, t in _GROUP_TYPES.items()),
        *(
            (name, Annotated[_STATS_TYPES[name], msgspec.Meta(description=stat.description)])
            for name, stat in STATISTICS.items()
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
