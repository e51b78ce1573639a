"""`flightpipe dlq redrive` on Google's Pub/Sub emulator, with the real subscriber and DuckDB."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from flightpipe import redrive
from flightpipe.broker import SubscriptionConfig
from flightpipe.broker.pubsub import PubSubBroker
from flightpipe.redrive import HISTORY_ATTRIBUTE, REDRIVE_COUNT_ATTRIBUTE, DeadLetterFilter
from flightpipe.settings import load_settings
from flightpipe.warehouse.duckdb import DuckDBWarehouse
from tests.factories import make_event, payload
from tests.fakes import FlakyWarehouse
from tests.pubsub_emulator import pubsub_broker, pubsub_emulator
from tests.redrive_harness import run_until, topology

__all__ = ["pubsub_broker", "pubsub_emulator"]  # fixtures used by name

pytestmark = [pytest.mark.integration, pytest.mark.pubsub_emulator]


def test_dead_letters_chosen_by_reason_are_redriven_stored_once_and_the_others_kept(
    pubsub_broker: PubSubBroker, duckdb_warehouse: DuckDBWarehouse, tmp_path: Path
) -> None:
    settings = load_settings({}, data_dir=str(tmp_path), batch_size=1, max_inflight_messages=2)
    topology(pubsub_broker, settings)
    pubsub_broker.create_subscription("watch", SubscriptionConfig(topic=settings.dead_letter_topic))
    events = [make_event() for _ in range(3)]
    flaky = FlakyWarehouse(duckdb_warehouse)
    flaky.reject_event_ids = {e.event_id for e in events}
    pubsub_broker.publish(
        settings.topic,
        [(payload(e), {"source": "test"}) for e in events] + [(b'{"event_id": "x"}', {})],
    )
    watched: list[str] = []

    def dead_lettered(count: int) -> bool:
        got = pubsub_broker.pull("watch", 10, timeout=0.5)
        if got:
            pubsub_broker.ack("watch", [m.ack_id for m in got])
        watched.extend(m.attributes[redrive.REASON_ATTRIBUTE] for m in got)
        return len(watched) >= count

    run_until(pubsub_broker, flaky, settings, lambda: dead_lettered(4))
    assert sum(r.startswith("warehouse:") for r in watched) == 3

    dry = redrive.redrive(
        pubsub_broker,
        settings.dead_letter_subscription,
        settings.topic,
        DeadLetterFilter(),
        dry_run=True,
    )
    assert (len(dry.matched), dry.remaining, dry.redriven) == (4, 4, 0)
    report = redrive.redrive(
        pubsub_broker,
        settings.dead_letter_subscription,
        settings.topic,
        DeadLetterFilter(reasons=("warehouse",)),
    )
    assert (report.redriven, report.skipped) == (3, 1)
    # The warehouse is fixed: the redriven events are stored, each once.
    batched = msgspec.structs.replace(settings, batch_size=10, max_inflight_messages=40)
    run_until(
        pubsub_broker, duckdb_warehouse, batched, lambda: duckdb_warehouse.count_events() >= 3
    )
    assert duckdb_warehouse.count_events() == 3
    assert all(duckdb_warehouse.get_flight(e.flight_id) is not None for e in events)

    # The invalid one is still there, and a redrive of it comes back with its history.
    again = redrive.redrive(
        pubsub_broker, settings.dead_letter_subscription, settings.topic, DeadLetterFilter()
    )
    assert again.redriven == 1
    watched.clear()
    run_until(pubsub_broker, duckdb_warehouse, batched, lambda: dead_lettered(1))
    (letter,) = pubsub_broker.pull(settings.dead_letter_subscription, 10, timeout=5)
    assert letter.attributes[REDRIVE_COUNT_ATTRIBUTE] == "1"
    (entry,) = json.loads(letter.attributes[HISTORY_ATTRIBUTE])
    assert entry["reason"].startswith("schema:")
    assert duckdb_warehouse.count_events() == 3
