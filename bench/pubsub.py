"""Throughput of PubSubBroker against Google's Pub/Sub emulator.

Run: .venv/bin/python bench/pubsub.py [--messages 100000] [--payload 600] [--batch 1000]
     [--host 127.0.0.1:8085]   (without --host the emulator is started and stopped here)

Phase 1 publishes N messages in batches; phase 2 drains them with synchronous pull + batched ack
(the subscriber's path); phase 3 publishes from another process while draining (end to end);
phase 4 drains N/10 messages with the client's callback-based streaming pull, for comparison
(the reason PubSubBroker pulls synchronously). The emulator is one JVM on the same 2 cores, so
these numbers bound the adapter's overhead, not Pub/Sub's capacity.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flightpipe.broker import SubscriptionConfig
from flightpipe.broker.pubsub import PubSubBroker
from tests.pubsub_emulator import missing_reason, running_emulator


def _broker(host: str, project: str) -> PubSubBroker:
    os.environ["PUBSUB_EMULATOR_HOST"] = host
    return PubSubBroker(project=project)


def _setup(broker: PubSubBroker, sub: str) -> None:
    broker.create_topic("flights")
    broker.create_topic("flights-dlq")
    broker.create_subscription(
        sub, SubscriptionConfig(topic="flights", dead_letter_topic="flights-dlq")
    )


def publish(host: str, project: str, messages: int, payload: int, batch: int) -> float:
    """Publish `messages` in batches of `batch`; return wall seconds."""
    broker = _broker(host, project)
    data = os.urandom(payload // 2).hex().encode()
    start = time.perf_counter()
    sent = 0
    while sent < messages:
        size = min(batch, messages - sent)
        broker.publish("flights", [(data, {"event_type": "flight"})] * size)
        sent += size
    elapsed = time.perf_counter() - start
    broker.close()
    return elapsed


def drain(broker: PubSubBroker, sub: str, expected: int, batch: int) -> tuple[int, float]:
    """Pull + ack until `expected` arrived or 10 s pass without a message."""
    received, start, idle_since = 0, time.perf_counter(), time.monotonic()
    while received < expected and time.monotonic() - idle_since < 10:
        messages = broker.pull(sub, batch, timeout=1.0)
        if messages:
            broker.ack(sub, [m.ack_id for m in messages])
            received += len(messages)
            idle_since = time.monotonic()
    return received, time.perf_counter() - start


def streaming_drain(host: str, project: str, sub: str, expected: int) -> tuple[int, float]:
    """Drain with the client's callback-based streaming pull."""
    from google.cloud import pubsub_v1

    os.environ["PUBSUB_EMULATOR_HOST"] = host
    subscriber = pubsub_v1.SubscriberClient()
    path = subscriber.subscription_path(project, sub)
    done, lock, count = threading.Event(), threading.Lock(), [0]

    def callback(message: pubsub_v1.subscriber.message.Message) -> None:
        message.ack()
        with lock:
            count[0] += 1
            if count[0] >= expected:
                done.set()

    start = time.perf_counter()
    future = subscriber.subscribe(
        path, callback, flow_control=pubsub_v1.types.FlowControl(max_messages=5000)
    )
    done.wait(timeout=max(60.0, expected / 500))
    elapsed = time.perf_counter() - start
    future.cancel()
    subscriber.close()
    return count[0], elapsed


@contextmanager
def emulator(host: str | None) -> Iterator[str]:
    if host:
        yield host
        return
    reason = missing_reason()
    if reason:
        raise SystemExit(reason)
    with tempfile.TemporaryDirectory() as data_dir, running_emulator(Path(data_dir)) as started:
        yield started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--payload", type=int, default=600)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--host", help="use a running emulator instead of starting one")
    args = parser.parse_args()
    n = args.messages

    with emulator(args.host) as host:
        project = f"bench-{uuid.uuid4().hex[:8]}"
        broker = _broker(host, project)
        _setup(broker, "drain")

        wall = publish(host, project, n, args.payload, args.batch)
        print(f"publish      {n:>8} msgs  {wall:6.2f} s  {n / wall:>9,.0f} msg/s")

        cpu = time.process_time()
        got, wall = drain(broker, "drain", n, args.batch)
        cpu = time.process_time() - cpu
        print(
            f"pull+ack     {got:>8} msgs  {wall:6.2f} s  {got / wall:>9,.0f} msg/s"
            f"  (client CPU {cpu:.2f} s)"
        )

        broker.create_subscription("e2e", SubscriptionConfig(topic="flights"))
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            pending = pool.apply_async(publish, (host, project, n, args.payload, args.batch))
            got, wall = drain(broker, "e2e", n, args.batch)
            pending.get()
        print(f"end to end   {got:>8} msgs  {wall:6.2f} s  {got / wall:>9,.0f} msg/s")

        m = max(n // 10, 1)
        broker.create_subscription("streaming", SubscriptionConfig(topic="flights"))
        publish(host, project, m, args.payload, args.batch)
        got, wall = streaming_drain(host, project, "streaming", m)
        print(f"streaming    {got:>8} msgs  {wall:6.2f} s  {got / wall:>9,.0f} msg/s")
        broker.close()


if __name__ == "__main__":
    main()
