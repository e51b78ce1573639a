"""One thread that interrupts queries running past their deadline.

DuckDB has no statement timeout; interrupting the cursor from another thread is its equivalent.
A `threading.Timer` per query would start a thread and wait for it to be scheduled on every
query, a large share of the API's CPU under load (docs/benchmarks.md). Here one daemon thread
sleeps until the earliest deadline instead. Written by hand: the standard library's
`sched` is not thread-safe for adding entries while it waits, and no small library does this.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final


class Watchdog:
    """Calls an entry's callback once its deadline passes, unless the entry ended first."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._wake = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._callbacks: dict[int, Callable[[], object]] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    @contextmanager
    def guard(self, seconds: float, on_timeout: Callable[[], object]) -> Iterator[None]:
        """Run the block; call `on_timeout` (from the watchdog thread) if it lasts `seconds`."""
        key = next(self._ids)
        deadline = self._clock() + seconds
        with self._wake:
            self._callbacks[key] = on_timeout
            heapq.heappush(self._heap, (deadline, key))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)
                self._thread.start()
            if self._heap[0][1] == key:
                self._wake.notify()  # the new deadline is the earliest: re-arm the sleep
        try:
            yield
        finally:
            with self._wake:
                # The heap entry stays until its deadline; without a callback it does nothing.
                self._callbacks.pop(key, None)

    def _run(self) -> None:
        with self._wake:
            while True:
                now = self._clock()
                while self._heap and self._heap[0][0] <= now:
                    _, key = heapq.heappop(self._heap)
                    callback = self._callbacks.pop(key, None)
                    if callback is not None:
                        callback()
                if not self._callbacks:
                    self._heap.clear()  # only ended entries are left
                    self._wake.wait()
                else:
                    self._wake.wait(self._heap[0][0] - now)


WATCHDOG: Final = Watchdog()
