"""`flightpipe serve`'s server settings: exports bounded, waitress's own errors in JSON."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest

from flightpipe.http_server import ExportGate, is_export, make_server
from flightpipe.settings import load_settings
from tests.processes import free_port


@pytest.mark.parametrize(
    ("query", "accept", "expected"),
    [
        ("format=csv&limit=100000", "", True),
        ("format=ndjson", "", True),
        ("", "text/csv", True),
        ("", "application/x-ndjson, */*", True),
        ("format=json", "application/json", False),
        ("carrier=UA", "", False),
    ],
)
def test_exports_are_recognised_by_format_or_accept(
    query: str, accept: str, expected: bool
) -> None:
    assert is_export({"QUERY_STRING": query, "HTTP_ACCEPT": accept}) is expected


def _streaming_app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/csv")])
    yield b"a,b\r\n"


def _call(gate: ExportGate, query: str) -> tuple[str, Any]:
    seen: list[str] = []
    body = gate({"QUERY_STRING": query}, lambda status, headers: seen.append(status))
    return seen[0] if seen else "", body


def test_exports_beyond_the_limit_get_503_and_a_slot_frees_when_the_stream_closes() -> None:
    gate = ExportGate(_streaming_app, limit=2)
    first, second = _call(gate, "format=csv"), _call(gate, "format=csv")
    status, body = _call(gate, "format=csv")
    assert status.startswith("503")
    assert msgspec.json.decode(b"".join(body))["error"]["code"] == 503
    assert _call(gate, "carrier=UA")[1] is not None  # a short request is never refused
    list(first[1])
    first[1].close()  # waitress closes the response when it is sent (or the client left)
    status, again = _call(gate, "format=csv")
    assert not status.startswith("503")
    again.close()
    second[1].close()


def test_the_server_takes_the_connection_settings_and_json_error_channel() -> None:
    settings = load_settings(
        {},
        port=free_port(),
        http_threads=4,
        http_connection_limit=500,
        http_idle_timeout_seconds=7,
    )
    server = make_server(_streaming_app, settings, "127.0.0.1")
    try:
        adj = server.adj
        assert adj.connection_limit == 500 and adj.channel_timeout == 7
        assert adj.asyncore_use_poll is True  # select() cannot watch fds above 1023
        assert server.channel_class.__name__ == "JsonErrorChannel"
    finally:
        server.close()
