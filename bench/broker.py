"""Micro-benchmark of the embedded broker's hot path: batch publish, then pull + ack.

Run: .venv/bin/python bench/broker.py [--messages 336776] [--payload 600] [--dir /dev/shm]
Targets (see the replay budget): publish > 150,000 msg/s in 1,000-message batches;
pull + ack > 100,000 msg/s in 5,000-message batches.

Phase 1 publishes everything, phase 2 drains it; phase 3 does both at once from two processes,
as the replay and the subscriber do. CPU time is printed beside wall time: on a shared 2-core
machine wall time moves with the neighbours' load.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import tempfile
import time
from pathlib import Path

from flightpipe.broker import SubscriptionConfig
from flightpipe.broker.embedded import EmbeddedBroker


def _open(path: Path) -> EmbeddedBroker:
    broker = EmbeddedBroker(path)
    broker.create_topic("flights")
    broker.create_topic("flights-dlq")
    broker.create_subscription(
        "flights-sub", SubscriptionConfig(topic="flights", dead_letter_topic="flights-dlq")
    )
    return broker


def publish_all(path: Path, messages: int, payload: int, batch_size: int) -> tuple[float, float]:
    """Publish `messages` in batches; return (wall, cpu) seconds."""
    broker = _open(path)
    data = os.urandom(payload // 2).hex().encode()
    batch = [(data, {"event_type": "flight"}) for _ in range(batch_size)]
    start, cpu = time.perf_counter(), time.process_time()
    published = 0
    while published < messages:
        size = min(batch_size, messages - published)
        broker.publish("flights", batch[:size])
        published += size
    broker.close()
    return time.perf_counter() - start, time.process_time() - cpu


def drain(broker: EmbeddedBroker, expected: int, batch_size: int, timeout: float) -> int:
    """Pull and ack until `expected` messages arrived or a pull times out."""
    received = 0
    while received < expected:
        messages = broker.pull("flights-sub", batch_size, timeout=timeout)
        if not messages:
            break
        broker.ack("flights-sub", [m.ack_id for m in messages])
        received += len(messages)
    return received


def main() -> None:
    """Run the three phases and print the rates."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=336_776)
    parser.add_argument("--payload", type=int, default=600)
    parser.add_argument("--publish-batch", type=int, default=1_000)
    parser.add_argument("--pull-batch", type=int, default=5_000)
    parser.add_argument("--dir", default=None, help="where the SQLite file goes (e.g. /dev/shm)")
    args = parser.parse_args()
    n = args.messages

    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "broker.sqlite3"
        wall, cpu = publish_all(path, n, args.payload, args.publish_batch)
        print(f"messages={n} payload={args.payload}B file={path.stat().st_size / 1e6:.0f}MB")
        print(
            f"publish  ({args.publish_batch}/batch): {wall:.2f}s wall = {n / wall:,.0f} msg/s;"
            f" {n / cpu:,.0f} msg/s per CPU-second"
        )

        broker = _open(path)
        start, cpu_start = time.perf_counter(), time.process_time()
        received = drain(broker, n, args.pull_batch, timeout=0)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        assert received == n, received
        print(
            f"pull+ack ({args.pull_batch}/batch): {wall:.2f}s wall = {n / wall:,.0f} msg/s;"
            f" {n / cpu:,.0f} msg/s per CPU-second"
        )

        start, cpu_start = time.perf_counter(), time.process_time()
        publisher = multiprocessing.get_context("spawn").Process(
            target=publish_all, args=(path, n, args.payload, args.publish_batch)
        )
        publisher.start()
        received = drain(broker, n, args.pull_batch, timeout=10)
        publisher.join()
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        assert received == n, received
        print(
            f"concurrent publisher process + subscriber: {wall:.2f}s wall for {n} messages"
            f" = {n / wall:,.0f} msg/s; CPU: subscriber {cpu:.2f}s,"
            f" publisher {children.ru_utime + children.ru_stime:.2f}s (incl. interpreter start);"
            f" backlog after: {broker.backlog('flights-sub')}"
        )
        broker.close()


if __name__ == "__main__":
    main()
