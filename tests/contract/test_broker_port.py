"""The broker port's contract: every adapter (embedded SQLite, Pub/Sub emulator) passes these.

Only the port is used: no storage tricks and no fake clock, so the same tests run against Pub/Sub.
Subscriptions get a dead-letter topic because Pub/Sub reports `delivery_attempt` only then.
Waits are poll loops with deadlines, since Pub/Sub may return an empty pull while messages exist.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import pytest

from flightpipe.broker import Broker, Message, NotFound, SubscriptionConfig
from tests.contract.conftest import BACKLOG_IN_MONITORING

# Port contract cases: `make test-integration` selects only their emulator-backed ones.
pytestmark = pytest.mark.contract
Unique = Callable[[str], str]
MIN_ACK_DEADLINE = 10  # Pub/Sub's minimum
MIN_MAX_DELIVERY_ATTEMPTS = 5  # Pub/Sub's minimum


def pull_until(
    broker: Broker, subscription: str, count: int, within: float = 10.0
) -> list[Message]:
    """Pull until `count` messages arrived or `within` seconds passed."""
    received: list[Message] = []
    deadline = time.monotonic() + within
    while len(received) < count and time.monotonic() < deadline:
        received.extend(broker.pull(subscription, count - len(received), timeout=0.5))
    return received


def redelivered(
    broker: Broker, subscription: str, message_id: str, first: Message, within: float = 10.0
) -> Message:
    """The message pulled again after `first` was given back: the same id at a later delivery
    attempt, acked so nothing stays leased."""
    (second,) = pull_until(broker, subscription, 1, within)
    assert second.message_id == message_id
    assert second.delivery_attempt > first.delivery_attempt
    broker.ack(subscription, [second.ack_id])
    return second


def make_subscription(
    broker: Broker, unique: Unique, name: str = "sub", *, topic: str | None = None, ack: int = 10
) -> tuple[str, str]:
    """Create (idempotently) a topic and a dead-lettered subscription; return (topic, sub)."""
    topic = topic or unique("topic")
    dead_letters = unique("dead-letters")
    broker.create_topic(topic)
    broker.create_topic(dead_letters)
    subscription = unique(name)
    broker.create_subscription(
        subscription,
        SubscriptionConfig(
            topic=topic,
            ack_deadline_seconds=ack,
            dead_letter_topic=dead_letters,
            max_delivery_attempts=MIN_MAX_DELIVERY_ATTEMPTS,
        ),
    )
    return topic, subscription


def test_publish_returns_a_distinct_string_id_per_message(broker: Broker, unique: Unique) -> None:
    topic, _ = make_subscription(broker, unique)
    ids = broker.publish(topic, [(b"a", {}), (b"b", {}), (b"c", {})])
    assert len(ids) == 3
    assert len(set(ids)) == 3
    assert all(isinstance(message_id, str) and message_id for message_id in ids)


def test_pull_returns_published_data_and_attributes_intact(broker: Broker, unique: Unique) -> None:
    topic, sub = make_subscription(broker, unique)
    sent = {
        b'{"flight": 1545}': {"event_type": "departure", "carrier": "UA"},
        b"\x00\xffbinary": {},
        "ñandú".encode(): {"ünïcode": "välue"},
    }
    ids = broker.publish(topic, list(sent.items()))

    received = pull_until(broker, sub, len(sent))

    assert sorted(m.message_id for m in received) == sorted(ids)
    assert {m.data: dict(m.attributes) for m in received} == sent
    for message in received:
        assert message.delivery_attempt == 1
        assert message.publish_time.tzinfo is not None
        assert abs(message.publish_time - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    broker.ack(sub, [m.ack_id for m in received])


def test_every_subscription_of_a_topic_gets_every_message(broker: Broker, unique: Unique) -> None:
    topic, first = make_subscription(broker, unique, "first")
    _, second = make_subscription(broker, unique, "second", topic=topic)
    ids = broker.publish(topic, [(b"one", {}), (b"two", {})])

    for sub in (first, second):
        received = pull_until(broker, sub, 2)
        assert sorted(m.message_id for m in received) == sorted(ids)
        broker.ack(sub, [m.ack_id for m in received])


def test_acked_message_is_not_redelivered(broker: Broker, unique: Unique) -> None:
    topic, sub = make_subscription(broker, unique)
    broker.publish(topic, [(b"acked", {}), (b"nacked", {})])
    received = {m.data: m for m in pull_until(broker, sub, 2)}
    assert set(received) == {b"acked", b"nacked"}

    broker.ack(sub, [received[b"acked"].ack_id])
    broker.nack(sub, [m.ack_id for m in received.values()])  # a nack after the ack is a no-op

    again = pull_until(broker, sub, 2, within=1.5)
    assert [m.data for m in again] == [b"nacked"]
    broker.ack(sub, [m.ack_id for m in again])


def test_nack_redelivers_with_delivery_attempt_incremented(broker: Broker, unique: Unique) -> None:
    topic, sub = make_subscription(broker, unique)
    (message_id,) = broker.publish(topic, [(b"retry me", {"k": "v"})])
    (first,) = pull_until(broker, sub, 1)
    assert first.delivery_attempt == 1

    broker.nack(sub, [first.ack_id])

    second = redelivered(broker, sub, message_id, first)
    assert (second.data, dict(second.attributes)) == (b"retry me", {"k": "v"})


def test_zero_ack_deadline_makes_the_message_available_again(
    broker: Broker, unique: Unique
) -> None:
    topic, sub = make_subscription(broker, unique)
    (message_id,) = broker.publish(topic, [(b"give back", {})])
    (first,) = pull_until(broker, sub, 1)

    broker.modify_ack_deadline(sub, [first.ack_id], 0)

    redelivered(broker, sub, message_id, first)


@pytest.mark.slow
def test_message_not_acked_within_deadline_is_redelivered(broker: Broker, unique: Unique) -> None:
    topic, sub = make_subscription(broker, unique, ack=MIN_ACK_DEADLINE)
    (message_id,) = broker.publish(topic, [(b"slow worker", {})])
    (first,) = pull_until(broker, sub, 1)

    # Nothing else comes while the lease holds; the redelivery comes after it ends.
    redelivered(broker, sub, message_id, first, within=MIN_ACK_DEADLINE * 3)


def test_message_moves_to_dead_letter_topic_after_max_delivery_attempts(
    broker: Broker, unique: Unique
) -> None:
    topic, sub = make_subscription(broker, unique)
    dead_letters = unique("dead-letters")
    watcher = unique("dead-letter-watcher")
    broker.create_subscription(watcher, SubscriptionConfig(topic=dead_letters))
    (message_id,) = broker.publish(topic, [(b"poison", {"event_type": "bad"})])

    # Keep refusing the message until it turns up on the dead-letter topic (Pub/Sub forwards it
    # asynchronously, the embedded broker on the next pull of the source subscription).
    attempts: list[int] = []
    dead: list[Message] = []
    deadline = time.monotonic() + 60
    while not dead and time.monotonic() < deadline:
        refused = broker.pull(sub, 10, timeout=0.5)
        attempts.extend(m.delivery_attempt for m in refused)
        if refused:
            broker.nack(sub, [m.ack_id for m in refused])
        dead = broker.pull(watcher, 10, timeout=0.1)

    assert len(dead) == 1
    assert dead[0].data == b"poison"
    assert dead[0].attributes["event_type"] == "bad"
    assert len(attempts) >= MIN_MAX_DELIVERY_ATTEMPTS
    assert message_id not in {m.message_id for m in pull_until(broker, sub, 1, within=1.0)}
    broker.ack(watcher, [dead[0].ack_id])


def test_publish_to_missing_topic_raises_not_found(broker: Broker, unique: Unique) -> None:
    with pytest.raises(NotFound):
        broker.publish(unique("no-such-topic"), [(b"x", {})])


def test_subscription_to_missing_topic_raises_not_found(broker: Broker, unique: Unique) -> None:
    with pytest.raises(NotFound):
        broker.create_subscription(unique("sub"), SubscriptionConfig(topic=unique("nothing")))


def test_pull_from_missing_subscription_raises_not_found(broker: Broker, unique: Unique) -> None:
    with pytest.raises(NotFound):
        broker.pull(unique("no-such-subscription"), 1, timeout=0.1)


def test_creating_topic_and_subscription_twice_is_harmless(broker: Broker, unique: Unique) -> None:
    topic, sub = make_subscription(broker, unique)
    make_subscription(broker, unique)  # same names again
    (message_id,) = broker.publish(topic, [(b"once", {})])

    received = pull_until(broker, sub, 2, within=1.0)

    assert [m.message_id for m in received] == [message_id]
    broker.ack(sub, [m.ack_id for m in received])


def test_backlog_counts_unacked_messages_or_is_reported_elsewhere(
    broker: Broker, broker_name: str, unique: Unique
) -> None:
    topic, sub = make_subscription(broker, unique)
    before_publish = time.time()
    broker.publish(topic, [(b"a", {}), (b"b", {})])
    pulled = pull_until(broker, sub, 2)
    assert len(pulled) == 2
    broker.ack(sub, [pulled[0].ack_id])
    backlog = broker.backlog(sub)
    if broker_name in BACKLOG_IN_MONITORING:
        assert backlog is None
        return
    assert backlog is not None, f"{broker_name} must count its own backlog"
    count, oldest_age = backlog
    assert count == 1  # leased but not acked still counts
    assert oldest_age is not None and 0 <= oldest_age <= time.time() - before_publish
    broker.ack(sub, [pulled[1].ack_id])
    assert broker.backlog(sub) == (0, None)
