"""The subscriber loop, against an in-memory broker and a real DuckDB warehouse."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from flightpipe_subscriber import Subscriber
from flightpipe_subscriber.batches import REASON_ATTRIBUTE
from prometheus_client import REGISTRY

from flightpipe import telemetry
from flightpipe.broker import SubscriptionConfig
from flightpipe.settings import load_settings
from flightpipe.warehouse import WarehouseError
from flightpipe.warehouse.duckdb import DuckDBWarehouse
from tests.factories import make_event, payload
from tests.fakes import FakeBroker, FlakyWarehouse

SETTINGS = load_settings({}, batch_size=50, max_inflight_messages=200)


@pytest.fixture
def broker() -> FakeBroker:
    b = FakeBroker()
    b.create_topic("flights")
    b.create_topic("flights-dead-letter")
    b.create_subscription("flights-subscriber", SubscriptionConfig(topic="flights"))
    b.create_subscription("dlq-inspect", SubscriptionConfig(topic="flights-dead-letter"))
    return b


def drain(subscriber: Subscriber, broker: FakeBroker, within: float = 30.0) -> None:
    """Run the subscriber (its real threads) until every message is settled, then stop it."""
    thread = threading.Thread(target=subscriber.run)
    thread.start()
    deadline = time.monotonic() + within
    try:
        while not broker.settled("flights-subscriber") and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        subscriber.stop()
        thread.join(timeout=within)
    assert not thread.is_alive()
    assert subscriber.failure is None
    assert broker.settled("flights-subscriber"), "the subscriber did not settle every message"


def failing_writes(
    broker: FakeBroker, warehouse: DuckDBWarehouse, failures: int, messages: int
) -> tuple[FlakyWarehouse, Subscriber]:
    """`messages` valid events published, and a subscriber whose first `failures` writes fail."""
    flaky = FlakyWarehouse(warehouse)
    flaky.fail_next = failures
    broker.publish("flights", [(payload(make_event()), {}) for _ in range(messages)])
    return flaky, Subscriber(broker, flaky, SETTINGS)


def test_valid_messages_are_written_then_acked(
    broker: FakeBroker, duckdb_warehouse: DuckDBWarehouse
) -> None:
    events = [make_event() for _ in range(120)]
    broker.publish("flights", [(payload(e), {}) for e in events])
    drain(Subscriber(broker, duckdb_warehouse, SETTINGS), broker)
    assert duckdb_warehouse.count_events() == 120
    assert len(broker.acked) == 120
    assert not broker.leased["flights-subscriber"]


def test_invalid_messages_go_to_the_dead_letter_topic_with_reason_and_are_acked(
    broker: FakeBroker, duckdb_warehouse: DuckDBWarehouse
) -> None:
    good = make_event()
    broker.publish(
        "flights",
        [(b"{broken", {"k": "v"}), (payload(good), {}), (b'{"event_id": "x"}', {})],
    )
    drain(Subscriber(broker, duckdb_warehouse, SETTINGS), broker)
    dead = broker.published["flights-dead-letter"]
    assert [d for d, _ in dead] == [b"{broken", b'{"event_id": "x"}']
    assert dead[0][1]["k"] == "v"  # original attributes kept
    assert dead[0][1][REASON_ATTRIBUTE].startswith("malformed json")
    assert "missing required field" in dead[1][1][REASON_ATTRIBUTE]
    assert dead[0][1]["original_message_id"] == "1"
    assert duckdb_warehouse.get_flight(good.flight_id) is not None
    assert len(broker.acked) == 3


def test_a_failed_write_acks_nothing_and_is_retried_until_it_commits(
    broker: FakeBroker, duckdb_warehouse: DuckDBWarehouse
) -> None:
    flaky, subscriber = failing_writes(broker, duckdb_warehouse, failures=3, messages=10)
    acked_during: list[int] = []
    original = flaky.write

    def spy(batch):  # type: ignore[no-untyped-def]
        acked_during.append(len(broker.acked))
        return original(batch)

    flaky.write = spy  # type: ignore[method-assign]
    drain(subscriber, broker)
    assert flaky.calls == 4
    assert acked_during == [0, 0, 0, 0]  # nothing acked before the commit
    assert len(broker.acked) == 10
    assert duckdb_warehouse.count_events() == 10


def test_a_permanently_rejected_row_is_isolated_and_dead_lettered(
    broker: FakeBroker, duckdb_warehouse: DuckDBWarehouse
) -> None:
    flaky = FlakyWarehouse(duckdb_warehouse)
    events = [make_event() for _ in range(9)]
    flaky.reject_event_ids = {events[4].event_id}
    broker.publish("flights", [(payload(e), {}) for e in events])
    drain(Subscriber(broker, flaky, SETTINGS), broker)
    assert duckdb_warehouse.count_events() == 8
    dead = broker.published["flights-dead-letter"]
    assert len(dead) == 1 and dead[0][0] == payload(events[4])
    assert dead[0][1][REASON_ATTRIBUTE].startswith("warehouse:")
    assert len(broker.acked) == 9


def test_redelivered_and_republished_events_show_once(
    broker: FakeBroker, duckdb_warehouse: DuckDBWarehouse
) -> None:
    event = make_event()
    broker.publish("flights", [(payload(event), {})] * 3)
    subscriber = Subscriber(broker, duckdb_warehouse, SETTINGS)
    drain(subscriber, broker)
    broker.publish("flights", [(payload(event), {})])
    drain(
        Subscriber(broker, duckdb_warehouse, SETTINGS), broker
    )  # a later instance, as after a restart
    assert duckdb_warehouse.count_events() == 1
    assert duckdb_warehouse.get_flight(event.flight_id) is not None


def test_run_drains_the_subscription_and_stops_on_request(
    broker: FakeBroker, duckdb_warehouse: DuckDBWarehouse
) -> None:
    broker.publish("flights", [(payload(make_event()), {}) for _ in range(500)])
    subscriber = Subscriber(broker, duckdb_warehouse, SETTINGS)
    thread = threading.Thread(target=subscriber.run)
    thread.start()
    deadline = time.monotonic() + 30
    while duckdb_warehouse.count_events() < 500 and time.monotonic() < deadline:
        time.sleep(0.05)
    subscriber.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert duckdb_warehouse.count_events() == 500
    assert len(broker.acked) == 500


def test_stop_during_a_warehouse_outage_gives_the_batch_back(
    broker: FakeBroker, duckdb_warehouse: DuckDBWarehouse
) -> None:
    flaky, subscriber = failing_writes(broker, duckdb_warehouse, failures=10_000, messages=5)
    thread = threading.Thread(target=subscriber.run)
    thread.start()
    deadline = time.monotonic() + 10
    while flaky.calls < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    subscriber.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert broker.acked == []
    # Every leased message was given back (a batch the puller leased while the stop raced it is
    # given back too, so a message may be nacked twice: harmless, it is simply redelivered).
    assert set(broker.nacked) == {f"flights-subscriber:{i}" for i in range(1, 6)}
    pending = [m.message_id for m in broker.pending["flights-subscriber"]]
    assert sorted(pending) == ["1", "2", "3", "4", "5"]  # nothing lost, nothing leased
    assert not broker.leased["flights-subscriber"]


def test_dead_letter_publish_failure_is_retried_before_the_ack(
    broker: FakeBroker, duckdb_warehouse: DuckDBWarehouse
) -> None:
    broker.publish("flights", [(b"nope", {})])
    broker.fail_publish = 2  # the dead-letter topic refuses twice, then accepts
    drain(Subscriber(broker, duckdb_warehouse, SETTINGS), broker)
    assert len(broker.published["flights-dead-letter"]) == 1
    assert broker.acked == ["flights-subscriber:1"]


def test_batch_write_errors_other_than_outages_are_not_retried_forever(
    broker: FakeBroker, duckdb_warehouse: DuckDBWarehouse
) -> None:
    # A permanent rejection is confirmed once (the row alone), then dead-lettered.
    flaky = FlakyWarehouse(duckdb_warehouse, error=WarehouseError)
    flaky.fail_next = 2
    broker.publish("flights", [(payload(make_event()), {})])
    drain(Subscriber(broker, flaky, SETTINGS), broker)
    assert flaky.calls == 2
    assert len(broker.published["flights-dead-letter"]) == 1


def test_a_one_off_permanent_error_is_confirmed_before_anything_is_dead_lettered(
    broker: FakeBroker, duckdb_warehouse: DuckDBWarehouse
) -> None:
    flaky = FlakyWarehouse(duckdb_warehouse, error=WarehouseError)
    flaky.fail_next = 1
    broker.publish("flights", [(payload(make_event()), {})])
    drain(Subscriber(broker, flaky, SETTINGS), broker)
    assert flaky.calls == 2
    assert broker.published["flights-dead-letter"] == []
    assert duckdb_warehouse.count_events() == 1


def test_rows_a_warehouse_rejects_individually_are_dead_lettered_and_the_rest_acked(
    broker: FakeBroker, duckdb_warehouse: DuckDBWarehouse
) -> None:
    flaky = FlakyWarehouse(duckdb_warehouse)
    events = [make_event() for _ in range(6)]
    flaky.partial_reject_ids = {events[1].event_id, events[3].event_id}
    broker.publish("flights", [(payload(e), {}) for e in events])
    drain(Subscriber(broker, flaky, SETTINGS), broker)
    assert flaky.calls == 1  # no halving: the warehouse already named the culprits
    assert duckdb_warehouse.count_events() == 4
    dead = broker.published["flights-dead-letter"]
    assert sorted(d for d, _ in dead) == sorted([payload(events[1]), payload(events[3])])
    assert all(a[REASON_ATTRIBUTE] == "warehouse: invalid: no such field" for _, a in dead)
    assert len(broker.acked) == 6


# Fixed instants far in the past: a gauge fed the wall clock instead reads years off.
PUBLISHED = dt.datetime(2020, 3, 1, 12, 0, tzinfo=dt.UTC)
LATER = dt.timedelta(minutes=7)


def _sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    assert value is not None, name
    return value


def test_freshness_is_measured_from_the_newest_committed_publish_time(
    broker: FakeBroker, duckdb_warehouse: DuckDBWarehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(telemetry, "_last_commit_publish_time", 0.0)  # earlier tests' watermark
    broker.now = lambda: PUBLISHED + LATER
    broker.publish("flights", [(payload(make_event()), {})])
    broker.now = lambda: PUBLISHED  # published later, yet older: the newest is not the last
    broker.publish("flights", [(payload(make_event()), {})])
    drain(Subscriber(broker, duckdb_warehouse, SETTINGS), broker)
    newest = (PUBLISHED + LATER).timestamp()
    assert _sample("flightpipe_last_committed_publish_time_seconds") == newest
    before = time.time()
    freshness = _sample("flightpipe_data_freshness_seconds")
    after = time.time()
    assert before - newest <= freshness <= after - newest


def test_backlog_age_is_the_oldest_unacked_publish_time_and_count_the_unacked_messages(
    broker: FakeBroker, duckdb_warehouse: DuckDBWarehouse
) -> None:
    # The warehouse is down, so nothing is acked and every observation sees the same backlog.
    flaky = FlakyWarehouse(duckdb_warehouse)
    flaky.fail_next = 10**9
    broker.now = lambda: PUBLISHED
    broker.publish("flights", [(payload(make_event()), {}) for _ in range(3)])
    broker.now = lambda: PUBLISHED + LATER
    broker.publish("flights", [(payload(make_event()), {})])
    telemetry.SUBSCRIPTION_BACKLOG.set(-1)
    telemetry.SUBSCRIPTION_OLDEST_UNACKED_AGE.set(-1)
    subscriber = Subscriber(broker, flaky, SETTINGS)
    thread = threading.Thread(target=subscriber.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while _sample("flightpipe_subscription_backlog_messages") < 0:
            assert time.monotonic() < deadline, "the subscriber never observed the backlog"
            time.sleep(0.01)
    finally:
        subscriber.stop()
        thread.join(timeout=10)
    assert _sample("flightpipe_subscription_backlog_messages") == 4
    assert _sample("flightpipe_subscription_oldest_unacked_age_seconds") == LATER.total_seconds()


def test_each_dead_lettered_message_is_counted_once_under_its_reason(
    broker: FakeBroker, duckdb_warehouse: DuckDBWarehouse
) -> None:
    name = "flightpipe_messages_dead_lettered_total"
    reasons = ("malformed json", "schema", "undecodable", "warehouse")
    before = {r: _sample(name, reason=r) for r in reasons}
    broker.publish(
        "flights",
        [
            (b"{broken", {}),
            (b"\xff\xfe", {}),
            (b'{"event_id": "x"}', {}),
            (b"null", {}),
            (b"[]", {}),
            (payload(make_event()), {}),
        ],
    )
    drain(Subscriber(broker, duckdb_warehouse, SETTINGS), broker)
    counted = {r: _sample(name, reason=r) - before[r] for r in reasons}
    assert counted == {"malformed json": 2, "schema": 3, "undecodable": 0, "warehouse": 0}
    assert len(broker.published["flights-dead-letter"]) == 5
