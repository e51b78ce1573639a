"""Hostile publishers: a poison zoo mixed into valid traffic, through the subscriber process."""

from __future__ import annotations

import random
import time

import pytest
from flask.testing import FlaskClient
from flightpipe_api import create_app

from flightpipe.broker.embedded import EmbeddedBroker
from flightpipe.composition import make_warehouse
from flightpipe.contract import decode_event
from flightpipe.settings import Settings
from tests.factories import payload
from tests.faults import harness
from tests.faults.poison import edge_valid, poison

pytestmark = pytest.mark.integration


def test_a_poison_zoo_is_dead_lettered_alone_and_every_valid_event_is_stored_and_readable(
    broker: EmbeddedBroker, settings: Settings, start_subscriber: harness.StartSubscriber
) -> None:
    zoo = poison()
    figures = harness.Figures(f"poison zoo ({len(zoo)} kinds x 3) mixed into 3,000 valid")
    bad = [body for body in zoo.values() for _ in range(3)]
    edges = edge_valid()
    valid = harness.valid_events(3000, "zoo")
    # The edge cases are valid: their decoded events join the expected set.
    valid_events_all = valid + [decode_event(b) for b in edges]
    bodies = [payload(e) for e in valid] + edges + bad
    random.Random(12).shuffle(bodies)  # poison leased in the same batches as valid messages
    figures.published_valid, figures.published_invalid = len(valid_events_all), len(bad)

    subscriber = start_subscriber()
    harness.publish(broker, bodies)
    started = time.monotonic()
    health: set[int] = set()
    while time.monotonic() - started < 60 and broker.backlog("flights-subscriber")[0]:
        health.add(subscriber.health()[0])
        time.sleep(0.1)
    harness.drain(broker, timeout=5)
    figures.recovery_seconds = 0.0
    figures.notes.append(f"drained in {time.monotonic() - started:.1f} s")
    figures.max_delivery_attempt = int(subscriber.metric("flightpipe_delivery_attempt_max")) or 1
    figures.duplicates_written = int(subscriber.metric("flightpipe_messages_duplicate_total"))
    assert health == {200}, "the subscriber stopped being healthy"
    line = subscriber.wait_for_line("nested too deeply")
    assert "dead-lettered" in line
    assert subscriber.stop() == 0, subscriber.log()

    harness.check_promises(figures, broker, settings, valid_events_all, bad)
    assert figures.max_delivery_attempt == 1, "a lease lapsed or a batch was redelivered"
    figures.record()

    # Everything stored can be read back through the API (no 500 on any stored value).
    app = create_app(settings, warehouse=make_warehouse(settings, read_only=True))
    client: FlaskClient = app.test_client()
    for event in valid_events_all[-len(edges) :] + valid[:50]:
        response = client.get(f"/v1/flights/{event.flight_id}/events")
        assert response.status_code == 200, response.get_data(as_text=True)
        assert event.event_id in {e["event_id"] for e in response.get_json()["data"]}
    for fmt in ("json", "csv", "ndjson"):
        response = client.get(f"/v1/flights?format={fmt}&limit=1000")
        assert response.status_code == 200, response.get_data(as_text=True)
