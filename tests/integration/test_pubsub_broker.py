"""PubSubBroker against Google's Pub/Sub emulator: what the shared contract tests do not cover.

The port's semantics are proven by tests/contract (parametrised with "pubsub"); these tests pin
the adapter's own duties: resource paths, the subscription it creates, error mapping, large
backlogs, and the topology `flightpipe serve` creates against the emulator.
"""

from __future__ import annotations

import datetime as dt

import pytest
from google.cloud import pubsub_v1

from flightpipe.broker import BrokerError, Message, NotFound, SubscriptionConfig
from flightpipe.broker.pubsub import PubSubBroker
from flightpipe.composition import ensure_topology
from flightpipe.settings import load_settings
from tests.pubsub_emulator import make_broker, pubsub_broker, pubsub_emulator

__all__ = ["pubsub_broker", "pubsub_emulator"]  # fixtures used by name

pytestmark = pytest.mark.integration


def _admin(host: str, monkeypatch: pytest.MonkeyPatch) -> pubsub_v1.SubscriberClient:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", host)
    return pubsub_v1.SubscriberClient()


def test_create_subscription_sets_deadline_dead_letter_policy_and_retention(
    pubsub_broker: PubSubBroker, pubsub_emulator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pubsub_broker.create_topic("flights")
    pubsub_broker.create_topic("flights-dead-letter")
    config = SubscriptionConfig(
        topic="flights",
        ack_deadline_seconds=42,
        dead_letter_topic="flights-dead-letter",
        max_delivery_attempts=7,
        retention_seconds=3600,
        labels={"app": "flightpipe"},
    )
    pubsub_broker.create_subscription("flights-subscriber", config)

    admin = _admin(pubsub_emulator, monkeypatch)
    sub = admin.get_subscription(subscription=pubsub_broker.subscription_path("flights-subscriber"))
    admin.close()
    assert sub.topic == f"projects/{pubsub_broker.project}/topics/flights"
    assert sub.ack_deadline_seconds == 42
    assert sub.dead_letter_policy.dead_letter_topic == (
        f"projects/{pubsub_broker.project}/topics/flights-dead-letter"
    )
    assert sub.dead_letter_policy.max_delivery_attempts == 7
    assert sub.message_retention_duration.total_seconds() == 3600
    assert dict(sub.labels) == {"app": "flightpipe"}


def test_creating_existing_topic_and_subscription_again_is_a_no_op(
    pubsub_broker: PubSubBroker,
) -> None:
    pubsub_broker.create_topic("flights")
    pubsub_broker.create_subscription("sub-a", SubscriptionConfig(topic="flights"))
    pubsub_broker.publish("flights", [(b"kept", {})])

    pubsub_broker.create_topic("flights")
    pubsub_broker.create_subscription("sub-a", SubscriptionConfig(topic="flights"))

    assert [m.data for m in pubsub_broker.pull("sub-a", 10, timeout=5)] == [b"kept"]


def test_full_resource_paths_and_short_names_address_the_same_resources(
    pubsub_broker: PubSubBroker,
) -> None:
    pubsub_broker.create_topic(pubsub_broker.topic_path("flights"))
    pubsub_broker.create_subscription("sub-a", SubscriptionConfig(topic="flights"))

    pubsub_broker.publish(pubsub_broker.topic_path("flights"), [(b"x", {})])

    got = pubsub_broker.pull(pubsub_broker.subscription_path("sub-a"), 10, timeout=5)
    assert [m.data for m in got] == [b"x"]


def test_missing_topic_and_subscription_raise_not_found(pubsub_broker: PubSubBroker) -> None:
    with pytest.raises(NotFound):
        pubsub_broker.publish("nowhere", [(b"x", {})])
    with pytest.raises(NotFound):
        pubsub_broker.pull("no-such-sub", 1, timeout=0.5)
    with pytest.raises(NotFound):
        pubsub_broker.create_subscription("sub-b", SubscriptionConfig(topic="nowhere"))


def test_invalid_resource_name_raises_broker_error(pubsub_broker: PubSubBroker) -> None:
    with pytest.raises(BrokerError):
        pubsub_broker.create_topic("x")  # names need 3 to 255 characters


def test_draining_a_large_backlog_returns_every_message_once_with_utc_publish_time(
    pubsub_broker: PubSubBroker,
) -> None:
    pubsub_broker.create_topic("flights")
    pubsub_broker.create_subscription("sub-a", SubscriptionConfig(topic="flights"))
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    ids = pubsub_broker.publish("flights", [(str(i).encode(), {"n": str(i)}) for i in range(2500)])

    got: list[Message] = []
    while len(got) < 2500:
        batch = pubsub_broker.pull("sub-a", 2500, timeout=5)
        assert batch, "the emulator stopped delivering before the backlog was drained"
        assert len(batch) <= 1000  # one Pull RPC's worth
        got.extend(batch)
        pubsub_broker.ack("sub-a", [m.ack_id for m in batch])

    assert sorted(m.message_id for m in got) == sorted(ids)
    assert {m.data.decode() for m in got} == {str(i) for i in range(2500)}
    assert all(m.attributes["n"] == m.data.decode() for m in got)
    assert all(m.publish_time.tzinfo is dt.UTC and m.publish_time >= before for m in got)
    assert pubsub_broker.pull("sub-a", 10, timeout=0.5) == []


def test_delivery_attempt_counts_redeliveries_on_a_dead_lettering_subscription(
    pubsub_broker: PubSubBroker,
) -> None:
    pubsub_broker.create_topic("flights")
    pubsub_broker.create_topic("dlq")
    pubsub_broker.create_subscription(
        "sub-a", SubscriptionConfig(topic="flights", dead_letter_topic="dlq")
    )
    pubsub_broker.publish("flights", [(b"x", {})])

    attempts = []
    for _ in range(3):
        (m,) = pubsub_broker.pull("sub-a", 1, timeout=5)
        attempts.append(m.delivery_attempt)
        pubsub_broker.nack("sub-a", [m.ack_id])

    assert attempts == [1, 2, 3]


def test_ensure_topology_against_the_emulator_creates_everything_idempotently(
    pubsub_emulator: str,
) -> None:
    settings = load_settings(
        {},
        broker="pubsub",
        google_cloud_project="flightpipe-topology",
        pubsub_emulator_host=pubsub_emulator,
    )
    broker = make_broker(pubsub_emulator, project="flightpipe-topology")
    try:
        ensure_topology(broker, settings)
        ensure_topology(broker, settings)  # a restart finds everything in place

        broker.publish(settings.topic, [(b"x", {})])
        broker.publish(settings.dead_letter_topic, [(b"y", {})])
        assert [m.data for m in broker.pull(settings.subscription, 5, timeout=5)] == [b"x"]
        assert [m.data for m in broker.pull(settings.dead_letter_subscription, 5, timeout=5)] == [
            b"y"
        ]
    finally:
        broker.close()


def test_broker_on_an_unreachable_endpoint_raises_broker_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:9")  # discard port: nothing listens
    broker = PubSubBroker(project="flightpipe-down", rpc_timeout=1.0)
    try:
        with pytest.raises(BrokerError):
            broker.pull("sub-a", 1, timeout=0.5)
        with pytest.raises(BrokerError):
            broker.ack("sub-a", ["ack-1"])
    finally:
        broker.close()
