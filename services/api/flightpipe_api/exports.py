"""Streamed exports share the server with everyone else: a cap on streams and one lane for work.

A streamed CSV/NDJSON export holds a server thread for its whole transfer (WSGI iterates the body
on the thread that called the app) and, while its query runs, a core (DuckDB renders the rows
itself, so the GIL is held only briefly per 5,000-row chunk: docs/benchmarks.md). Left alone,
a few large exports take every thread of the image's server (FLIGHTPIPE_HTTP_THREADS) and a
one-flight GET waits behind them. So:
* at most FLIGHTPIPE_HTTP_MAX_EXPORTS exports stream at once (default a quarter of the request
  threads, at least one: each export admitted beside the others lengthens a small request's
  wait, docs/architecture.md "Hot paths"); one more is refused with 503 and Retry-After (the
  documented "busy, retry" answer), leaving the other threads to small requests;
* the exports take turns producing chunks on one lane: a single thread that reads and encodes
  every export's next chunk, so together they use at most one core, and it runs at a lower CPU
  priority (`os.setpriority`, nice +10; Linux applies it per thread: setpriority(2), "a thread
  ID") so the kernel gives a waiting small request's thread the core first. DuckDB executes a
  query on the thread that runs it (`threads` = FLIGHTPIPE_DUCKDB_THREADS, default 1), so the
  export's query runs on the lane too; the request thread only waits for the chunk and sends it.
  Small requests get a lower p99 and a higher rate beside exports, at the cost of slower
  exports (docs/benchmarks.md).
  The lane's thread lowers only its own priority, once, and keeps it: an unprivileged process
  (the image's user) may not raise it again.
The slot is released when the body has been sent (the generator's `finally`) or when the server
closes the response (`Response.call_on_close`: a client that went away, or a generator closed
before it started, whose `finally` never runs) or when the unread body is garbage-collected
(in-process callers such as test clients may never close it), whichever comes first.

Hand-written: neither Flask nor werkzeug limits concurrent streamed responses.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

from flask import current_app

from flightpipe.settings import Settings
from flightpipe_api.errors import RETRY_AFTER_SECONDS, ApiError

EXPORTS_KEY: Final = "flightpipe.exports"
# How much lower the lane runs than the request threads (nice 0). At +10 CFS weighs the lane at
# ~1/10 of a request thread (kernel/sched/core.c, sched_prio_to_weight: 1024 against 110) when
# both want a core, and gives it the whole core when nothing else does.
LANE_NICENESS: Final = 10

log = logging.getLogger(__name__)
T = TypeVar("T")


def _lower_priority() -> None:
    """Runs once on the lane's thread: nice it by LANE_NICENESS (a no-op where unsupported)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LANE_NICENESS)
    except (AttributeError, OSError) as exc:  # not Linux, or a sandbox that forbids it
        log.warning("export lane keeps the default CPU priority: %s", exc)


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
        # The thread starts at the first chunk; at exit concurrent.futures joins it once idle.
        self._lane = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="export-lane", initializer=_lower_priority
        )

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

    def produce(self, pieces: Iterator[T]) -> T | None:
        """The next piece of `pieces` (None at the end), produced on the lane.

        The caller waits for it, so one export's generator never runs on two threads at once;
        an exception raised while producing is raised here, in the request's thread.
        """
        return self._lane.submit(next, pieces, None).result()


def max_exports(settings: Settings) -> int:
    """Exports admitted at once: FLIGHTPIPE_HTTP_MAX_EXPORTS, or a quarter of the threads."""
    return settings.http_max_exports or max(1, settings.http_threads // 4)


def export_gate() -> ExportGate:
    """This app's gate."""
    gate: ExportGate = current_app.extensions[EXPORTS_KEY]
    return gate
