"""Every Pub/Sub RPC the subscriber really sends (to Google's emulator) is in the IAM table.

The subscriber service's own worker (`flightpipe_subscriber.Subscriber.run`: pull, extend leases,
dead-letter the invalid, write then ack the valid) runs over a PubSubBroker on the emulator, with
DuckDB as the warehouse. `make_broker` builds the clients' gRPC
channels with a recording interceptor (tests/rpc_log.py), so every emulator test that ran before
this module in the same process is recorded too. A method missing from tests/infra/iam_calls.py
(`RPC_PERMISSIONS`, or `LOCAL_ONLY_RPCS` for topology calls that Pulumi makes in the cloud) fails.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from flightpipe_subscriber import Subscriber

from flightpipe.broker import SubscriptionConfig
from flightpipe.settings import load_settings
from flightpipe.warehouse import Envelope
from flightpipe.warehouse.duckdb import DuckDBWarehouse
from tests import rpc_log
from tests.factories import make_event, payload
from tests.fakes import FlakyWarehouse
from tests.infra.iam_calls import LOCAL_ONLY_RPCS, RPC_PERMISSIONS
from tests.pubsub_emulator import make_broker, pubsub_emulator

__all__ = ["pubsub_emulator"]  # fixture used by name


def test_every_pubsub_rpc_the_subscriber_sends_is_in_the_iam_table(
    pubsub_emulator: str, duckdb_warehouse: DuckDBWarehouse
) -> None:
    # A 10 s deadline (Pub/Sub's minimum): the leaser extends every 3.3 s, during the write.
    settings = load_settings({"FLIGHTPIPE_ACK_DEADLINE_SECONDS": "10"})
    broker = make_broker(pubsub_emulator)
    try:
        broker.create_topic(settings.topic)
        broker.create_topic(settings.dead_letter_topic)
        broker.create_subscription(
            settings.subscription,
            SubscriptionConfig(topic=settings.topic, dead_letter_topic=settings.dead_letter_topic),
        )
        broker.publish(settings.topic, [(payload(make_event()), {}), (b"not json", {})])
        # The subscriber's own threads: puller, writer, acker and leaser send every RPC they use.
        subscriber: Subscriber

        class WaitsForALeaseExtension(FlakyWarehouse):
            def write(self, batch: Sequence[Envelope]) -> int:
                deadline = time.monotonic() + 15
                while subscriber.leases.extensions == 0 and time.monotonic() < deadline:
                    time.sleep(0.05)
                return super().write(batch)

        subscriber = Subscriber(broker, WaitsForALeaseExtension(duckdb_warehouse), settings)
        thread = threading.Thread(target=subscriber.run)
        thread.start()
        deadline = time.monotonic() + 60
        try:
            # Committed and every lease released: the acks of both messages have been sent.
            while time.monotonic() < deadline and not (
                duckdb_warehouse.count_events() == 1 and subscriber.leases.held() == []
            ):
                time.sleep(0.05)
        finally:
            subscriber.stop()
            thread.join(timeout=30)
        assert duckdb_warehouse.count_events() == 1
        assert subscriber.leases.extensions >= 1 and subscriber.failure is None
    finally:
        broker.close()

    pubsub = {m for m in rpc_log.RECORDED if m.startswith("/google.pubsub.")}
    for method in ("Publish", "Pull", "Acknowledge", "ModifyAckDeadline"):
        assert (
            f"/google.pubsub.v1.{'Publisher' if method == 'Publish' else 'Subscriber'}/{method}"
            in pubsub
        )
    assert not sorted(pubsub - set(RPC_PERMISSIONS) - set(LOCAL_ONLY_RPCS))
