"""`flightpipe serve`'s server settings: connection limits, waitress's own errors in JSON."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flightpipe_local.http_server import make_server

from flightpipe.settings import load_settings
from tests.processes import free_port


def _streaming_app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/csv")])
    yield b"a,b\r\n"


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
