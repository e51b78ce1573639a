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


def _plant(fault: str) -> None:
    kind, _, where = fault.partition(":")
    calls = {"n": 0}

    def nth(n: int) -> bool:
        calls["n"] += 1
        return calls["n"] == n

    if fault == "crash:puller":
        pull = EmbeddedBroker.pull

        def bad_pull(self: EmbeddedBroker, *args: Any, **kwargs: Any) -> Any:
            if nth(3):
                raise RuntimeError("injected: a bug in the puller")
            return pull(self, *args, **kwargs)

        EmbeddedBroker.pull = bad_pull  # type: ignore[method-assign]
    elif fault == "crash:acker":
        ack = EmbeddedBroker.ack

        def bad_ack(self: EmbeddedBroker, *args: Any, **kwargs: Any) -> Any:
            if nth(1):
                raise RuntimeError("injected: a bug in the acker")
            return ack(self, *args, **kwargs)

        EmbeddedBroker.ack = bad_ack  # type: ignore[method-assign]
    elif fault == "crash:writer":
        write = duckdb_adapter.DuckDBWarehouse.write

        def bad_write(self: duckdb_adapter.DuckDBWarehouse, batch: Any) -> int:
            if nth(2):
                raise TypeError("injected: a bug in the writer")
            return write(self, batch)

        duckdb_adapter.DuckDBWarehouse.write = bad_write  # type: ignore[method-assign]
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
        steps = duckdb_adapter._write_steps

        class Stalling(list[str]):
            def __iter__(self) -> Iterator[str]:
                for i, statement in enumerate(list.__iter__(self)):
                    if i == 2:  # fresh table built, events inserted: mid-transaction
                        _block("writing")
                    yield statement

        def stalling_steps(**kwargs: bool) -> list[str]:
            return Stalling(steps(**kwargs))

        duckdb_adapter._write_steps = stalling_steps
    elif fault == "block:committed":
        write = duckdb_adapter.DuckDBWarehouse.write

        def committed_write(self: duckdb_adapter.DuckDBWarehouse, batch: Any) -> int:
            new = write(self, batch)
            _block("committed")
            return new

        duckdb_adapter.DuckDBWarehouse.write = committed_write  # type: ignore[method-assign]
    elif fault == "block:acking":
        ack = EmbeddedBroker.ack

        def blocking_ack(self: EmbeddedBroker, subscription: str, ids: Sequence[str]) -> None:
            if subscription == "flights-subscriber":
                _block("acking")
            ack(self, subscription, ids)

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
