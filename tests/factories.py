"""Builders of valid flight events and messages for tests."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable
from typing import Any

import msgspec

from flightpipe.contract import FlightEvent, encode_event
from flightpipe.warehouse import Envelope

BASE = dt.datetime(2013, 1, 1, 10, 15, tzinfo=dt.UTC)
_counter = itertools.count(1)


def make_event(**overrides: Any) -> FlightEvent:
    """A valid arrived flight; override any field."""
    n = next(_counter)
    number = overrides.pop("flight_number", 1000 + n % 9000)
    carrier = overrides.pop("carrier", "UA")
    origin = overrides.pop("origin", "EWR")
    flight_date = overrides.pop("flight_date", dt.date(2013, 1, 1))
    departure = overrides.pop(
        "scheduled_departure",
        dt.datetime.combine(flight_date, dt.time(10, 15), dt.UTC) + dt.timedelta(minutes=n % 600),
    )
    fields: dict[str, Any] = {
        "event_id": f"evt-{n}",
        "flight_id": f"{flight_date.isoformat()}-{carrier}{number}-{origin}",
        "event_time": departure + dt.timedelta(hours=3),
        "flight_date": flight_date,
        "carrier": carrier,
        "flight_number": number,
        "tail_number": "N14228",
        "origin": origin,
        "dest": "IAH",
        "scheduled_departure": departure,
        "actual_departure": departure + dt.timedelta(minutes=2),
        "dep_delay_min": 2,
        "scheduled_arrival": departure + dt.timedelta(hours=3),
        "actual_arrival": departure + dt.timedelta(hours=3, minutes=11),
        "arr_delay_min": 11,
        "air_time_min": 227,
        "distance_mi": 1400,
        "status": "arrived",
    }
    fields.update(overrides)
    return FlightEvent(**fields)


def payload(event: FlightEvent) -> bytes:
    """The JSON a publisher sends for `event`."""
    return encode_event(event)


def as_dict(event: FlightEvent) -> dict[str, Any]:
    """The event as the JSON object the API returns (RFC 3339 strings for times)."""
    result: dict[str, Any] = msgspec.json.decode(encode_event(event))
    return result


def envelopes(events: Iterable[FlightEvent], published: dt.datetime) -> list[Envelope]:
    """The events as one warehouse batch, message ids m0, m1, ... all published at `published`."""
    return [Envelope(e, f"m{i}", published) for i, e in enumerate(events)]
