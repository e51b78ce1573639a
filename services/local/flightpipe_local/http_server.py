"""The HTTP server of `flightpipe serve`: waitress, configured so no client can lock it up.

Waitress (https://docs.pylonsproject.org/projects/waitress/en/stable/arguments.html) reads requests
and buffers responses in one asyncore loop and runs the app on `threads` task threads, so an idle
or slow client costs a file descriptor, never a thread. What could lock the server up, and what
this module sets against it:

* Open connections: waitress stops accepting at `connection_limit` (default 100, so 100 idle
  sockets would lock `flightpipe serve` up). FLIGHTPIPE_HTTP_CONNECTION_LIMIT (default 1000) with
  poll() instead of select() (select() cannot watch descriptors above 1023), the soft
  RLIMIT_NOFILE raised to fit, and FLIGHTPIPE_HTTP_IDLE_TIMEOUT_SECONDS (`channel_timeout`,
  default 30 s instead of 120 s) closing idle and stalled connections, checked every
  `cleanup_interval`.
* Task threads: a large CSV/NDJSON export streams for seconds on one thread, so a few of them
  would take every task thread and leave small requests waiting. The API itself bounds the
  exports in flight (`flightpipe_api.exports`, FLIGHTPIPE_HTTP_MAX_EXPORTS), so the image's
  Granian server and this one behave alike.
* Errors waitress answers itself (a bad request line, headers over `max_request_header_size`, a
  body too large): `JsonErrorTask` gives them the API's one JSON error shape instead of
  waitress's text/plain page.
* The hand-over to a task thread: waitress's I/O loop (the main thread) queues each request
  (`ThreadedTaskDispatcher.add_task`) and wakes a task thread, which then waits for the GIL
  until the loop blocks or the interpreter's switch interval (`sys.getswitchinterval()`, 5 ms by
  default: https://docs.python.org/3/library/sys.html#sys.setswitchinterval) takes it away.
  `YieldingDispatcher` lets the GIL go right after the hand-over (`time.sleep(0)`), so the
  request starts at once.
* Its queue warnings: waitress logs "Task queue depth is N" (logger `waitress.queue`, WARNING)
  for each request that finds no idle task thread, which under load is every request. The
  logger is raised to ERROR; a request's time, queueing included, is what clients and
  `bench/api.py` measure. Those log writes also released the GIL after each hand-over; the
  explicit yield above does that on purpose (docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from flightpipe_api.errors import error_body
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, MultiSocketServer, create_server
from waitress.task import ErrorTask, ThreadedTaskDispatcher

from flightpipe.settings import Settings

# Request headers larger than this get 431 (waitress's default is 256 KiB per request; nothing in
# the API needs more than a few KiB, and it bounds what one client makes the server buffer).
MAX_REQUEST_HEADER_BYTES: Final = 64 * 1024
# The API takes no request bodies.
MAX_REQUEST_BODY_BYTES: Final = 1024 * 1024
_REASONS: Final = {400: "Bad Request", 413: "Payload Too Large", 431: "Too Large", 503: "Busy"}
# waitress/utilities.py: queue_logger = logging.getLogger("waitress.queue") (waitress 3.0.2).
QUEUE_LOGGER: Final = "waitress.queue"

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class JsonErrorTask(ErrorTask):  # type: ignore[misc]  # waitress ships no type hints
    """Waitress's own error responses (400, 413, 431...) in the API's JSON error shape."""

    def execute(self) -> None:
        error = self.request.error
        body = error_body(int(error.code), f"{error.reason}: {error.body}")
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend(
            [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
        )
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(HTTPChannel):  # type: ignore[misc]
    """A waitress channel whose protocol errors use `JsonErrorTask`."""

    error_task_class = JsonErrorTask


class YieldingDispatcher(ThreadedTaskDispatcher):  # type: ignore[misc]
    """Waitress's task dispatcher, yielding the GIL to the task thread it has just woken."""

    def add_task(self, task: Any) -> None:
        super().add_task(task)
        time.sleep(0)  # CPython releases the GIL for any sleep, zero included


def _raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def make_server(app: WsgiApp, settings: Settings, host: str) -> BaseWSGIServer | MultiSocketServer:
    """A waitress server for `app` on host:PORT with the settings above."""
    # Each connection may hold up to three descriptors (socket, spooled request and response).
    _raise_open_files(settings.http_connection_limit * 3 + 64)
    logging.getLogger(QUEUE_LOGGER).setLevel(logging.ERROR)
    idle = settings.http_idle_timeout_seconds
    sockets: dict[int, Any] = {}  # waitress's socket map: every listening server registers in it
    dispatcher = YieldingDispatcher()
    dispatcher.set_thread_count(settings.http_threads)
    server = create_server(
        app,
        map=sockets,
        # create_server's own construction of its dispatcher, with ours (waitress 3.0.2,
        # server.py: `_dispatcher`, "test shim"; it starts the threads the same way).
        _dispatcher=dispatcher,
        host=host,
        port=settings.port,
        threads=settings.http_threads,
        ident="flightpipe",
        connection_limit=settings.http_connection_limit,
        channel_timeout=max(1, round(idle)),
        cleanup_interval=max(1, round(idle / 3)),
        asyncore_use_poll=True,
        max_request_header_size=MAX_REQUEST_HEADER_BYTES,
        max_request_body_size=MAX_REQUEST_BODY_BYTES,
    )
    for listener in sockets.values():
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = JsonErrorChannel  # read by each accept (handle_accept)
    return server
