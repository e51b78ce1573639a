"""Every Pub/Sub RPC the subscriber really sends (to Google's emulator) is in the IAM table.

The subscriber service's own worker (`flightpipe_subscriber.Subscriber.handle`: dead-letter the
invalid, write then ack the valid) runs over a PubSubBroker on the emulator, after the broker's
pull and lease extension, with DuckDB as the warehouse. `make_broker` builds the clients' gRPC
channels with a recording interceptor (tests/rpc_log.py), so every emulator test that ran before
this module in the same process is recorded too. A method missing from tests/infra/iam_calls.py
(`RPC_PERMISSIONS`, or `LOCAL_ONLY_RPCS` for topology calls that Pulumi makes in the cloud) fails.
"""

from __future__ import annotations

from flightpipe_subscriber import Subscriber, sort_messages

from flightpipe.broker import SubscriptionConfig
from flightpipe.settings import load_settings
from flightpipe.warehouse.duckdb import DuckDBWarehouse
from tests import rpc_log
from tests.factories import make_event, payload
from tests.infra.iam_calls import LOCAL_ONLY_RPCS, RPC_PERMISSIONS
from tests.pubsub_emulator import make_broker, pubsub_emulator

__all__ = ["pubsub_emulator"]  # fixture used by name


def test_every_pubsub_rpc_the_subscriber_sends_is_in_the_iam_table(
    pubsub_emulator: str, duckdb_warehouse: DuckDBWarehouse
) -> None:
    settings = load_settings({})
    broker = make_broker(pubsub_emulator)
    try:
        broker.create_topic(settings.topic)
        broker.create_topic(settings.dead_letter_topic)
        broker.create_subscription(
            settings.subscription,
            SubscriptionConfig(topic=settings.topic, dead_letter_topic=settings.dead_letter_topic),
        )
        broker.publish(settings.topic, [(payload(make_event()), {}), (b"not json", {})])
        pulled = []
        while len(pulled) < 2:
            batch = broker.pull(settings.subscription, 10, timeout=5)
            assert batch, "the emulator stopped delivering"
            pulled += batch
        broker.modify_ack_deadline(settings.subscription, [m.ack_id for m in pulled], 60)
        Subscriber(broker, duckdb_warehouse, settings).handle(sort_messages(pulled))
        assert duckdb_warehouse.count_events() == 1
    finally:
        broker.close()

    pubsub = {m for m in rpc_log.RECORDED if m.startswith("/google.pubsub.")}
    for method in ("Publish", "Pull", "Acknowledge", "ModifyAckDeadline"):
        assert (
            f"/google.pubsub.v1.{'Publisher' if method == 'Publish' else 'Subscriber'}/{method}"
            in pubsub
        )
    assert not sorted(pubsub - set(RPC_PERMISSIONS) - set(LOCAL_ONLY_RPCS))
