"""A poison zoo: messages built to break a decoder, a validator, a warehouse or a reader.

`POISON` must all be dead-lettered; `EDGE_VALID` are strange but valid and must be stored and read
back. Each entry names what it attacks.
"""

from __future__ import annotations

import json
from typing import Any

from tests.factories import make_event, payload


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(payload(make_event()))
    body.update(changes)
    return body


def _json(body: object) -> bytes:
    return json.dumps(body).encode()


def _with(raw_suffix: bytes) -> bytes:
    """A valid event with raw JSON appended as an unknown field."""
    return payload(make_event())[:-1] + b',"extra":' + raw_suffix + b"}"


def poison() -> dict[str, bytes]:
    """name -> message body; every one is invalid under the contract."""
    missing = _body()
    del missing["origin"]
    return {
        "2 KB of nested arrays (RecursionError)": _with(b"[" * 1000 + b"]" * 1000),
        "100k nested objects": _with(b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
        "invalid UTF-8": b'{"event_id": "\xff\xfe"}',
        "UTF-8-encoded surrogate": _json(_body(event_id="placeholder")).replace(
            b"placeholder", b"\xed\xa0\x80"
        ),
        "lone surrogate escape": _json(_body(event_id="placeholder")).replace(
            b"placeholder", b"\\ud800"
        ),
        "empty": b"",
        "whitespace": b"   \n",
        "null": b"null",
        "array": b"[1, 2, 3]",
        "string": b'"flight"',
        "truncated": payload(make_event())[:40],
        "NaN literal": _json(_body())[:-1] + b', "dep_delay_min": NaN}',
        "integer beyond 64 bits": _json(_body(flight_number=10**30)),
        "float for an int": _json(_body(dep_delay_min=2.5)),
        "year 0 in UTC (+14:00)": _json(_body(event_time="0001-01-01T00:00:00+14:00")),
        "year 10000 in UTC (-05:00)": _json(_body(scheduled_departure="9999-12-31T23:59:59-05:00")),
        "naive timestamp": _json(_body(event_time="2013-01-01T10:15:00")),
        "Arabic-Indic digits in flight_id": _json(
            _body(flight_id="2013-01-01-UA\u0661\u0665\u0664\u0665-EWR")
        ),
        "trailing newline in flight_id": _json(_body(flight_id="2013-01-01-UA1545-EWR\n")),
        "trailing newline in carrier": _json(_body(carrier="UA\n")),
        "flight_id dated another day than flight_date": _json(_body(flight_date="2013-01-02")),
        "NUL in event_id": _json(_body(event_id="evt\u0000x")),
        "event_id of 129 characters": _json(_body(event_id="e" * 129)),
        "empty event_id": _json(_body(event_id="")),
        "unknown status": _json(_body(status="landed")),
        "missing required field": _json(missing),
        "lowercase tail number": _json(_body(tail_number="n14228")),
        "delay out of range": _json(_body(arr_delay_min=10**6)),
    }


def edge_valid() -> list[bytes]:
    """Strange but valid events: stored, then readable through the API."""
    return [
        payload(make_event(tail_number="CC-BAW")),
        _json(_body(event_id="évènement ✈ 1")),
        _json(_body(event_time="0001-01-01T00:00:00-05:00")),
        _json(_body(actual_arrival="9999-12-31T23:59:59+05:00")),
        _with(b'"' + b"x" * 1_000_000 + b'"'),  # a 1 MB unknown field is ignored
        _with(b"[" * 200 + b"]" * 200),  # shallow nesting in an unknown field is fine
        _json(_body())[:-1] + b', "x": "\xed\xa0\x80"}',  # bad bytes in an ignored field
    ]
