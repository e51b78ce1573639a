"""The real subscriber entrypoint with one fault planted (`python -m tests.faults.<this module>`).

FAULT=crash:<thread> makes that thread raise an unexpected exception (a bug), once:
  puller (the 3rd pull), acker (the first ack), writer (the 2nd write), leaser (the first tick).
FAULT=block:<phase> prints `FAULT-PHASE <phase>` and blocks that thread there, so the test can
SIGKILL the process in that exact phase of a batch:
  pulled (leased, not yet queued), writing (inside the warehouse transaction, events inserted,
  not committed), committed (commit done, ack not sent), acking (ack about to be sent),
  dead_letter_published (invalid messages published to the dead-letter topic, not yet acked).
Everything else is the production code path (`flightpipe_subscriber.__main__.main`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from flightpipe_subscriber import __main__ as entry
from flightpipe_subscriber import worker
from flightpipe_subscriber.leases import Leases

from flightpipe.broker.embedded import EmbeddedBroker
from flightpipe.warehouse import duckdb as duckdb_adapter

FAULT = os.environ.get("FAULT", "")


def _block(phase: str) -> None:
    print(f"FAULT-PHASE {phase}", flush=True)
    time.sleep(600)


# crash:<thread> -> (class, method, which call raises, what it raises)
_CRASHES: dict[str, tuple[type, str, int, Exception]] = {
    "puller": (EmbeddedBroker, "pull", 3, RuntimeError("injected: a bug in the puller")),
    "acker": (EmbeddedBroker, "ack", 1, RuntimeError("injected: a bug in the acker")),
    "writer": (
        duckdb_adapter.DuckDBWarehouse,
        "write",
        2,
        TypeError("injected: a bug in the writer"),
    ),
}


def _crash_on_call(owner: type, method: str, n: int, error: Exception) -> None:
    """`owner.method` raises `error` on its n-th call (over every instance), once."""
    original = getattr(owner, method)
    calls = 0

    def crashing(self: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == n:
            raise error
        return original(self, *args, **kwargs)

    setattr(owner, method, crashing)


def _plant(fault: str) -> None:
    kind, _, where = fault.partition(":")
    if kind == "crash" and where in _CRASHES:
        _crash_on_call(*_CRASHES[where])
    elif fault == "crash:leaser":

        def bad_extend(self: Leases) -> None:
            raise RuntimeError("injected: a bug in the lease keeper")

        Leases.extend_all = bad_extend  # type: ignore[method-assign]
    elif fault == "block:pulled":
        pull_batch = worker.Subscriber._pull_batch

        def blocking_pull(self: worker.Subscriber) -> Any:
            messages = pull_batch(self)
            if messages:
                _block("pulled")
            return messages

        worker.Subscriber._pull_batch = blocking_pull  # type: ignore[method-assign]
    elif fault == "block:writing":
        steps = duckdb_adapter._write_steps  # type: ignore[attr-defined]

        class Stalling(list[str]):
            def __iter__(self) -> Iterator[str]:
                for i, statement in enumerate(list.__iter__(self)):
                    if i == 2:  # fresh table built, events inserted: mid-transaction
                        _block("writing")
                    yield statement

        def stalling_steps(**kwargs: bool) -> list[str]:
            return Stalling(steps(**kwargs))

        duckdb_adapter._write_steps = stalling_steps  # type: ignore[attr-defined]
    elif fault == "block:committed":
        write = duckdb_adapter.DuckDBWarehouse.write

        def committed_write(self: duckdb_adapter.DuckDBWarehouse, batch: Any) -> int:
            new = write(self, batch)
            _block("committed")
            return new

        duckdb_adapter.DuckDBWarehouse.write = committed_write  # type: ignore[method-assign]
    elif fault == "block:acking":
        ack = EmbeddedBroker.ack

        def blocking_ack(self: EmbeddedBroker, subscription: str, ack_ids: Sequence[str]) -> None:
            if subscription == "flights-subscriber":
                _block("acking")
            ack(self, subscription, ack_ids)

        EmbeddedBroker.ack = blocking_ack  # type: ignore[method-assign]
    elif fault == "block:dead_letter_published":
        publish = EmbeddedBroker.publish

        def blocking_publish(self: EmbeddedBroker, topic: str, messages: Any) -> list[str]:
            ids = publish(self, topic, messages)
            if topic == "flights-dead-letter":
                _block("dead_letter_published")
            return ids

        EmbeddedBroker.publish = blocking_publish  # type: ignore[method-assign]
    elif fault:
        raise SystemExit(f"unknown FAULT {fault!r} ({kind}:{where})")


if __name__ == "__main__":
    _plant(FAULT)
    sys.exit(entry.main())
