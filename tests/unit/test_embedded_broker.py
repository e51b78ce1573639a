"""EmbeddedBroker behaviour beyond the port contract: time, storage, processes and threads.

Time-driven paths use an injected clock (no sleeping); the multi-process tests start real Python
processes on the same SQLite file.

Why one module of ~410 lines: the broker-specific behaviour of one adapter (clock, storage,
processes); the port's behaviour is in tests/contract.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flightpipe.broker import BrokerError, NotFound, SubscriptionConfig
from flightpipe.broker.embedded import EmbeddedBroker

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "broker.sqlite3"


@pytest.fixture
def broker(db: Path, clock: Clock) -> Iterator[EmbeddedBroker]:
    instance = EmbeddedBroker(db, clock=clock)
    instance.create_topic("flights")
    instance.create_topic("dead-letters")
    yield instance
    instance.close()


@pytest.fixture
def real_broker(db: Path) -> Iterator[EmbeddedBroker]:
    """On the real clock, like the other processes sharing its file."""
    instance = EmbeddedBroker(db)
    instance.create_topic("flights")
    yield instance
    instance.close()


def subscribe(broker: EmbeddedBroker, name: str = "sub", **config: object) -> str:
    broker.create_subscription(name, SubscriptionConfig(topic="flights", **config))  # type: ignore[arg-type]
    return name


def count_rows(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


# -- time -------------------------------------------------------------------------------------


def test_unacked_message_is_redelivered_only_after_its_deadline(
    broker: EmbeddedBroker, clock: Clock
) -> None:
    sub = subscribe(broker, ack_deadline_seconds=30)
    broker.publish("flights", [(b"m", {})])
    (first,) = broker.pull(sub, 10, timeout=0)

    clock.now += 29
    assert broker.pull(sub, 10, timeout=0) == []
    clock.now += 2
    (second,) = broker.pull(sub, 10, timeout=0)

    assert second.message_id == first.message_id
    assert (first.delivery_attempt, second.delivery_attempt) == (1, 2)


def test_modify_ack_deadline_extends_the_lease(broker: EmbeddedBroker, clock: Clock) -> None:
    sub = subscribe(broker, ack_deadline_seconds=30)
    broker.publish("flights", [(b"m", {})])
    (first,) = broker.pull(sub, 10, timeout=0)

    clock.now += 20
    broker.modify_ack_deadline(sub, [first.ack_id], 60)
    clock.now += 59
    assert broker.pull(sub, 10, timeout=0) == []
    clock.now += 2
    assert [m.message_id for m in broker.pull(sub, 10, timeout=0)] == [first.message_id]


def test_stale_ack_id_cannot_move_a_newer_lease(broker: EmbeddedBroker, clock: Clock) -> None:
    sub = subscribe(broker, ack_deadline_seconds=30)
    broker.publish("flights", [(b"m", {})])
    (first,) = broker.pull(sub, 10, timeout=0)
    clock.now += 31
    broker.pull(sub, 10, timeout=0)  # second delivery, leased to someone else

    broker.nack(sub, [first.ack_id])

    assert broker.pull(sub, 10, timeout=0) == []


def test_messages_past_retention_are_dropped(
    broker: EmbeddedBroker, clock: Clock, db: Path
) -> None:
    sub = subscribe(broker, retention_seconds=3600)
    broker.publish("flights", [(b"old", {})])
    clock.now += 1800
    broker.publish("flights", [(b"young", {})])

    clock.now += 1801

    assert [m.data for m in broker.pull(sub, 10, timeout=0)] == [b"young"]
    assert broker.backlog(sub)[0] == 1
    assert count_rows(db, "messages") == 1


def test_dead_lettered_message_carries_reason_and_source(
    broker: EmbeddedBroker, clock: Clock
) -> None:
    sub = subscribe(
        broker, ack_deadline_seconds=10, dead_letter_topic="dead-letters", max_delivery_attempts=5
    )
    broker.create_subscription("dlq-sub", SubscriptionConfig(topic="dead-letters"))
    broker.publish("flights", [(b"poison", {"event_type": "departure"})])

    attempts = []
    for _ in range(6):  # five leases that expire, then the sixth pull dead-letters it
        attempts += [m.delivery_attempt for m in broker.pull(sub, 10, timeout=0)]
        clock.now += 11

    assert attempts == [1, 2, 3, 4, 5]
    (dead,) = broker.pull("dlq-sub", 10, timeout=0)
    assert dead.data == b"poison"
    assert dict(dead.attributes) == {
        "event_type": "departure",
        "dead_letter_reason": "max_delivery_attempts",
        "CloudPubSubDeadLetterSourceSubscription": sub,
        "CloudPubSubDeadLetterSourceDeliveryCount": "5",
        "CloudPubSubDeadLetterSourceTopicPublishTime": "2023-11-14T22:13:20+00:00",
    }
    assert broker.backlog(sub) == (0, None)


def test_without_dead_letter_topic_message_is_redelivered_forever(
    broker: EmbeddedBroker,
) -> None:
    sub = subscribe(broker, max_delivery_attempts=5)
    broker.publish("flights", [(b"m", {})])
    attempts = []
    for _ in range(8):
        (message,) = broker.pull(sub, 10, timeout=0)
        attempts.append(message.delivery_attempt)
        broker.nack(sub, [message.ack_id])
    assert attempts == list(range(1, 9))


# -- ordering and fan-out ---------------------------------------------------------------------


def test_pull_returns_messages_in_publish_order(broker: EmbeddedBroker) -> None:
    sub = subscribe(broker)
    broker.publish("flights", [(str(i).encode(), {}) for i in range(50)])
    broker.publish("flights", [(str(i).encode(), {}) for i in range(50, 100)])

    received = broker.pull(sub, 60, timeout=0) + broker.pull(sub, 60, timeout=0)

    assert [int(m.data) for m in received] == list(range(100))


def test_nacked_message_is_redelivered_ahead_of_the_backlog(broker: EmbeddedBroker) -> None:
    sub = subscribe(broker)
    broker.publish("flights", [(str(i).encode(), {}) for i in range(10)])
    first = broker.pull(sub, 2, timeout=0)

    broker.nack(sub, [first[1].ack_id])

    assert [m.data for m in broker.pull(sub, 3, timeout=0)] == [b"1", b"2", b"3"]


def test_many_leased_messages_do_not_hide_available_ones(broker: EmbeddedBroker) -> None:
    sub = subscribe(broker)
    broker.publish("flights", [(str(i).encode(), {}) for i in range(20_000)])
    broker.pull(sub, 19_990, timeout=0)  # leased, not acked

    assert [int(m.data) for m in broker.pull(sub, 100, timeout=0)] == list(range(19_990, 20_000))


def test_pull_query_is_served_by_the_ready_index(broker: EmbeddedBroker, db: Path) -> None:
    from flightpipe.broker.embedded import _READY

    with sqlite3.connect(db) as conn:
        plan = " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {_READY}", (1, 0, 1)))
    assert "USING INDEX deliveries_ready" in plan
    assert "TEMP B-TREE" not in plan  # no sort of the whole backlog


def test_subscription_gets_only_messages_published_after_it_exists(
    broker: EmbeddedBroker,
) -> None:
    early = subscribe(broker, "early")
    broker.publish("flights", [(b"before", {})])
    late = subscribe(broker, "late")
    broker.publish("flights", [(b"after", {})])

    assert [m.data for m in broker.pull(early, 10, timeout=0)] == [b"before", b"after"]
    assert [m.data for m in broker.pull(late, 10, timeout=0)] == [b"after"]


def test_pull_and_ack_on_missing_subscription_raise_not_found(broker: EmbeddedBroker) -> None:
    with pytest.raises(NotFound):
        broker.pull("missing", 1, timeout=0)
    with pytest.raises(NotFound):
        broker.ack("missing", ["1:1"])


def test_subscription_with_missing_dead_letter_topic_raises_not_found(
    broker: EmbeddedBroker,
) -> None:
    with pytest.raises(NotFound):
        subscribe(broker, dead_letter_topic="missing")


# -- storage ----------------------------------------------------------------------------------


def test_payload_is_stored_once_and_freed_when_every_subscription_acked(
    broker: EmbeddedBroker, db: Path
) -> None:
    first, second = subscribe(broker, "first"), subscribe(broker, "second")
    broker.publish("flights", [(b"x" * 1000, {})])
    assert count_rows(db, "messages") == 1

    broker.ack(first, [m.ack_id for m in broker.pull(first, 1, timeout=0)])
    assert count_rows(db, "messages") == 1
    broker.ack(second, [m.ack_id for m in broker.pull(second, 1, timeout=0)])
    assert count_rows(db, "messages") == 0
    assert count_rows(db, "deliveries") == 0


def test_file_stops_growing_when_published_messages_are_acked(
    broker: EmbeddedBroker, db: Path
) -> None:
    sub = subscribe(broker)
    payload = os.urandom(300).hex().encode()
    sizes = []
    for _ in range(8):
        broker.publish("flights", [(payload, {"k": "v"})] * 2000)
        broker.ack(sub, [m.ack_id for m in broker.pull(sub, 2000, timeout=0)])
        with sqlite3.connect(db) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        sizes.append(db.stat().st_size)

    assert sizes[-1] <= sizes[1] * 1.1, sizes


def test_ids_are_never_reused_after_storage_is_reclaimed(broker: EmbeddedBroker) -> None:
    sub = subscribe(broker)
    (first,) = broker.publish("flights", [(b"a", {})])
    broker.ack(sub, [m.ack_id for m in broker.pull(sub, 1, timeout=0)])
    (second,) = broker.publish("flights", [(b"b", {})])
    assert int(second) > int(first)


def test_publish_without_subscriptions_returns_ids_and_stores_nothing(
    broker: EmbeddedBroker, db: Path
) -> None:
    ids = broker.publish("flights", [(b"lost", {}), (b"lost too", {})])
    assert len(set(ids)) == 2
    assert count_rows(db, "messages") == 0


def test_backlog_reports_unacked_count_and_oldest_age(broker: EmbeddedBroker, clock: Clock) -> None:
    sub = subscribe(broker)
    assert broker.backlog(sub) == (0, None)
    broker.publish("flights", [(b"a", {})])
    clock.now += 10
    broker.publish("flights", [(b"b", {}), (b"c", {})])
    clock.now += 15

    first = broker.pull(sub, 1, timeout=0)  # leased messages are still unacked
    assert broker.backlog(sub) == (3, 25.0)
    broker.ack(sub, [first[0].ack_id])
    assert broker.backlog(sub) == (2, 15.0)


# -- threads and processes --------------------------------------------------------------------


def test_pull_and_ack_work_from_different_threads(broker: EmbeddedBroker) -> None:
    sub = subscribe(broker)
    broker.publish("flights", [(b"m", {})])
    pulled = []
    puller = threading.Thread(target=lambda: pulled.extend(broker.pull(sub, 1, timeout=5)))
    puller.start()
    puller.join()

    broker.ack(sub, [pulled[0].ack_id])

    assert broker.backlog(sub) == (0, None)


def test_publish_raises_broker_error_when_the_write_lock_stays_taken(db: Path) -> None:
    broker = EmbeddedBroker(db, busy_timeout=0.2)
    broker.create_topic("flights")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(BrokerError):
            broker.publish("flights", [(b"m", {})])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert broker.publish("flights", [(b"m", {})])  # and works once the lock is released
    broker.close()


def test_pull_waits_for_a_message_published_meanwhile(real_broker: EmbeddedBroker) -> None:
    sub = subscribe(real_broker)
    publisher = threading.Timer(0.2, real_broker.publish, ("flights", [(b"late", {})]))
    publisher.start()
    received = real_broker.pull(sub, 1, timeout=10)
    publisher.join()
    assert [m.data for m in received] == [b"late"]


PUBLISHER = textwrap.dedent(
    """
    import sys
    from flightpipe.broker.embedded import EmbeddedBroker

    broker = EmbeddedBroker(sys.argv[1])
    batches, size = int(sys.argv[2]), int(sys.argv[3])
    batch = 0
    while batches < 0 or batch < batches:
        ids = broker.publish("flights", [(f"{batch}.{i}".encode(), {}) for i in range(size)])
        print(batch, *ids, flush=True)  # only after publish returned
        batch += 1
    """
)


def start_publisher(db: Path, batches: int, size: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", PUBLISHER, str(db), str(batches), str(size)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def test_messages_published_by_another_process_arrive_exactly_once(
    real_broker: EmbeddedBroker, db: Path
) -> None:
    broker = real_broker
    sub = subscribe(broker)
    publisher = start_publisher(db, batches=40, size=250)
    received: list[bytes] = []
    while len(received) < 10_000:
        messages = broker.pull(sub, 1000, timeout=30)
        assert messages, "publisher stalled"
        assert all(m.delivery_attempt == 1 for m in messages)
        received += [m.data for m in messages]
        broker.ack(sub, [m.ack_id for m in messages])
    publisher.communicate(timeout=30)

    assert publisher.returncode == 0
    assert sorted(received) == sorted(f"{b}.{i}".encode() for b in range(40) for i in range(250))
    assert broker.pull(sub, 1, timeout=0) == []


def test_publisher_killed_with_sigkill_loses_nothing_it_returned(
    real_broker: EmbeddedBroker, db: Path
) -> None:
    broker = real_broker
    sub = subscribe(broker)
    publisher = start_publisher(db, batches=-1, size=100)
    assert publisher.stdout is not None
    confirmed = {}
    for _ in range(30):
        batch, *ids = publisher.stdout.readline().split()
        confirmed[batch] = set(ids)
    publisher.send_signal(signal.SIGKILL)
    publisher.wait(timeout=10)

    by_batch: dict[str, set[str]] = {}
    while messages := broker.pull(sub, 5000, timeout=0):
        for m in messages:
            by_batch.setdefault(m.data.decode().split(".")[0], set()).add(m.message_id)
        broker.ack(sub, [m.ack_id for m in messages])

    for batch, ids in confirmed.items():
        assert by_batch[batch] == ids
    assert all(len(ids) == 100 for ids in by_batch.values())  # a batch is all or nothing
