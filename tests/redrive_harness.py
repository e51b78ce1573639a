"""A real subscriber over a real broker, run until a condition holds: the redrive tests' harness."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from flightpipe_subscriber import Subscriber

from flightpipe.broker import Broker, SubscriptionConfig
from flightpipe.composition import ensure_topology
from flightpipe.settings import Settings
from flightpipe.warehouse import Warehouse


def topology(broker: Broker, settings: Settings, dead_letter_ack_deadline: int = 60) -> None:
    """The pipeline's topology; the dead-letter subscription's lease as given (created first)."""
    broker.create_topic(settings.dead_letter_topic)
    broker.create_subscription(
        settings.dead_letter_subscription,
        SubscriptionConfig(
            topic=settings.dead_letter_topic, ack_deadline_seconds=dead_letter_ack_deadline
        ),
    )
    ensure_topology(broker, settings)


def run_until(
    broker: Broker,
    warehouse: Warehouse,
    settings: Settings,
    done: Callable[[], bool],
    within: float = 60.0,
) -> None:
    """Run the subscriber (its real threads) until `done()`, then stop it; fail on a timeout."""
    subscriber = Subscriber(broker, warehouse, settings)
    thread = threading.Thread(target=subscriber.run)
    thread.start()
    deadline = time.monotonic() + within
    try:
        while not done():
            assert time.monotonic() < deadline, "the subscriber did not get there in time"
            time.sleep(0.05)
    finally:
        subscriber.stop()
        thread.join(timeout=within)
    assert subscriber.failure is None
