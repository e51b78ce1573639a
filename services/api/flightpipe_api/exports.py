"""Streamed exports share the server with everyone else: a cap on streams and one lane for work.

A streamed CSV/NDJSON export holds a server thread for its whole transfer (WSGI iterates the body
on the thread that called the app) and, while its query runs, a core (DuckDB renders the rows
itself, so the GIL is held only a few ms per 5,000-row chunk: docs/benchmarks.md). Left alone,
a few large exports take every thread of the image's server (FLIGHTPIPE_HTTP_THREADS) and a
one-flight GET waits behind them. So:
* at most FLIGHTPIPE_HTTP_MAX_EXPORTS exports stream at once (default a quarter of the request
  threads, at least one: with 4 threads, two exports at once still made a one-flight GET wait up
  to 1.2 s and one kept it under 0.11 s, measured side by side with bench/serve_exports.py); one
  more is refused with 503 and Retry-After (the documented "busy, retry" answer), leaving the
  other threads to small requests;
* the exports take turns producing chunks (one lock, held while a chunk is read and encoded), so
  together they use about one core and the other stays free for the rest.
The slot is released when the body has been sent (the generator's `finally`) or when the server
closes the response (`Response.call_on_close`: a client that went away, or a generator closed
before it started, whose `finally` never runs) or when the unread body is garbage-collected
(in-process callers such as test clients may never close it), whichever comes first.

Hand-written: neither Flask nor werkzeug limits concurrent streamed responses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

from flask import current_app

from flightpipe.settings import Settings
from flightpipe_api.errors import RETRY_AFTER_SECONDS, ApiError

EXPORTS_KEY: Final = "flightpipe.exports"


class ExportBusy(ApiError):
    """Every export slot is taken: 503 with Retry-After."""

    def __init__(self) -> None:
        super().__init__(503, "too many exports in progress; retry later")
        self.retry_after = RETRY_AFTER_SECONDS


class ExportGate:
    """Streams admitted and the lane they share (thread-safe)."""

    def __init__(self, streams: int) -> None:
        self.streams = max(1, streams)
        self._slots = threading.BoundedSemaphore(self.streams)
        self._lane = threading.Lock()

    def admit(self) -> Callable[[], None]:
        """Take a slot or raise ExportBusy; returns the (idempotent) release."""
        if not self._slots.acquire(blocking=False):
            raise ExportBusy
        released = threading.Event()

        def release() -> None:
            if not released.is_set():
                released.set()
                self._slots.release()

        return release

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Hold the lane while producing one chunk."""
        with self._lane:
            yield


def max_exports(settings: Settings) -> int:
    """Exports admitted at once: FLIGHTPIPE_HTTP_MAX_EXPORTS, or a quarter of the threads."""
    return settings.http_max_exports or max(1, settings.http_threads // 4)


def export_gate() -> ExportGate:
    """This app's gate."""
    gate: ExportGate = current_app.extensions[EXPORTS_KEY]
    return gate
