"""Every Pub/Sub RPC the broker adapter really sends (to Google's emulator) is in the IAM table.

The subscriber's side of the broker port (publish to the dead-letter topic, pull, ack, nack,
modify the ack deadline) runs against the emulator through `make_broker`, whose channels record
each gRPC method (tests/rpc_log.py); so do the other emulator tests that ran before this module
in the same process. A method missing from tests/infra/iam_calls.py (`RPC_PERMISSIONS`, or
`LOCAL_ONLY_RPCS` for topology calls that Pulumi makes in the cloud) fails here.
"""

from __future__ import annotations

from flightpipe.broker import SubscriptionConfig
from tests import rpc_log
from tests.infra.iam_calls import LOCAL_ONLY_RPCS, RPC_PERMISSIONS
from tests.pubsub_emulator import make_broker, pubsub_emulator

__all__ = ["pubsub_emulator"]  # fixture used by name


def test_every_pubsub_rpc_the_adapter_sends_is_in_the_iam_table(pubsub_emulator: str) -> None:
    broker = make_broker(pubsub_emulator)
    try:
        broker.create_topic("flights")
        broker.create_topic("flights-dead-letter")
        broker.create_subscription(
            "flights-subscriber",
            SubscriptionConfig(topic="flights", dead_letter_topic="flights-dead-letter"),
        )
        broker.publish("flights", [(b"{}", {"source": "rpc-test"})])
        (message,) = broker.pull("flights-subscriber", 10, timeout=5)
        broker.modify_ack_deadline("flights-subscriber", [message.ack_id], 30)
        broker.nack("flights-subscriber", [message.ack_id])
        (again,) = broker.pull("flights-subscriber", 10, timeout=5)
        broker.publish("flights-dead-letter", [(again.data, {"reason": "rpc-test"})])
        broker.ack("flights-subscriber", [again.ack_id])
    finally:
        broker.close()

    pubsub = {m for m in rpc_log.RECORDED if m.startswith("/google.pubsub.")}
    for method in ("Publish", "Pull", "Acknowledge", "ModifyAckDeadline"):
        assert any(m.endswith(f"/{method}") for m in pubsub), f"{method} was not recorded"
    assert not sorted(pubsub - set(RPC_PERMISSIONS) - set(LOCAL_ONLY_RPCS))
