"""`flightpipe serve`'s server settings: connection limits, waitress's own errors in JSON."""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flightpipe_local.http_server import QUEUE_LOGGER, YieldingDispatcher, make_server

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
        # Ours, with the configured task threads (waitress names them waitress-<n>).
        assert isinstance(server.task_dispatcher, YieldingDispatcher)
        assert len(server.task_dispatcher.threads) == 4
    finally:
        server.close()
        server.task_dispatcher.shutdown()


def _slow_app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    time.sleep(0.05)
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"ok"


def test_requests_queued_behind_busy_threads_are_served_without_a_warning_each(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # One task thread and six requests at once: five wait in waitress's queue, and waitress's
    # own logger would write "Task queue depth is N" for each of them.
    settings = load_settings({}, port=free_port(), http_threads=1)
    server = make_server(_slow_app, settings, "127.0.0.1")
    runner = threading.Thread(target=server.run, daemon=True)
    caplog.set_level(logging.DEBUG)
    runner.start()
    url = f"http://127.0.0.1:{settings.port}/"

    def get(_: int) -> int:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)

    try:
        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(get, range(6)))
    finally:
        server.close()
        server.task_dispatcher.shutdown()
    assert statuses == [200] * 6
    assert [r.getMessage() for r in caplog.records if r.name == QUEUE_LOGGER] == []
