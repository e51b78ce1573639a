"""Failure isolation in the subscriber: lease keeping, per-message errors, dead threads, health."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import msgspec
import pytest
from flightpipe_subscriber import Subscriber, validate_messages
from flightpipe_subscriber.health import _app
from flightpipe_subscriber.leases import Leases
from flightpipe_subscriber.worker import SubscriberFailed

from flightpipe.broker import BrokerError, Message, SubscriptionConfig
from flightpipe.settings import load_settings
from flightpipe.warehouse import Envelope, WarehouseError
from flightpipe.warehouse.duckdb import DuckDBWarehouse
from tests.factories import make_event, payload
from tests.fakes import FakeBroker, FlakyWarehouse
from tests.unit.test_subscriber import broker, drain

SETTINGS = load_settings({}, batch_size=50, max_inflight_messages=200, ack_deadline_seconds=1)
__all__ = ["broker"]  # a fixture used by name


def test_held_leases_are_extended_until_released(broker: FakeBroker) -> None:
    leases = Leases(broker, "flights-subscriber", 30)
    first = leases.hold(["a", "b"])
    leases.hold(["c"])
    leases.extend_all()
    assert sorted(broker.extended) == ["a", "b", "c"]
    leases.release(first)
    broker.extended.clear()
    leases.extend_all()
    assert broker.extended == ["c"]
    assert leases.interval == 10


def test_a_failed_extension_is_logged_and_retried_next_tick(
    broker: FakeBroker, caplog: pytest.LogCaptureFixture
) -> None:
    class Down(FakeBroker):
        def modify_ack_deadline(self, subscription: str, ack_ids: object, seconds: int) -> None:
            raise BrokerError("unavailable")

    leases = Leases(Down(), "s", 30)
    leases.hold(["a"])
    leases.extend_all()  # does not raise
    assert "lease extension failed" in caplog.text
    assert leases.held() == ["a"]


def _message(data: bytes, n: int = 1) -> Message:
    import datetime as dt

    return Message(str(n), data, {}, dt.datetime.now(dt.UTC), f"ack-{n}")


def test_any_exception_while_decoding_one_message_concerns_that_message_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flightpipe_subscriber import batches

    real = batches.decode_event

    def flaky_decode(data: bytes) -> object:
        if data == b"boom":
            raise MemoryError("injected")
        return real(data)

    monkeypatch.setattr(batches, "decode_event", flaky_decode)
    batch = validate_messages([_message(b"boom", 1), _message(payload(make_event()), 2)])
    assert [m.message_id for m, _ in batch.valid] == ["2"]
    assert batch.invalid[0][1] == "undecodable: MemoryError: injected"


def test_a_batch_the_warehouse_rejects_entirely_is_retried_not_dead_lettered(
    broker: FakeBroker, duckdb_warehouse: DuckDBWarehouse, caplog: pytest.LogCaptureFixture
) -> None:
    # A schema change or a broken table rejects every row "for good": that is the warehouse,
    # not the data. Halving finds no good row, so nothing is dead-lettered; it is retried.
    flaky = FlakyWarehouse(duckdb_warehouse, error=WarehouseError)
    flaky.fail_next = 7  # the whole halving of 4 rows (4, 2, 1, 1, 2, 1, 1): every row rejected
    broker.publish("flights", [(payload(make_event()), {}) for _ in range(4)])
    subscriber = Subscriber(broker, flaky, SETTINGS)
    drain(subscriber, broker)
    assert broker.published["flights-dead-letter"] == []
    assert duckdb_warehouse.count_events() == 4
    assert "retrying it as an outage" in caplog.text


def test_rows_rejected_before_the_warehouse_recovered_mid_halving_are_not_dead_lettered(
    broker: FakeBroker, duckdb_warehouse: DuckDBWarehouse
) -> None:
    flaky = FlakyWarehouse(duckdb_warehouse, error=WarehouseError)
    flaky.fail_next = 3  # 4 rows, then the first half and its first row fail; then it works
    broker.publish("flights", [(payload(make_event()), {}) for _ in range(4)])
    subscriber = Subscriber(broker, flaky, SETTINGS)
    drain(subscriber, broker)
    assert broker.published["flights-dead-letter"] == []
    assert duckdb_warehouse.count_events() == 4


class _ExplodingBroker(FakeBroker):
    def __init__(self) -> None:
        super().__init__()
        self.pulls = 0

    def pull(self, subscription: str, max_messages: int, timeout: float = 1.0) -> list[Message]:
        self.pulls += 1
        if self.pulls == 2:
            raise RuntimeError("injected bug")
        return super().pull(subscription, max_messages, timeout)


def test_a_dead_puller_fails_the_run_gives_the_held_messages_back_and_logs_once(
    duckdb_warehouse: DuckDBWarehouse, caplog: pytest.LogCaptureFixture
) -> None:
    broker = _ExplodingBroker()
    broker.create_topic("flights")
    broker.create_topic("flights-dead-letter")
    broker.create_subscription("flights-subscriber", SubscriptionConfig(topic="flights"))
    broker.publish("flights", [(payload(make_event()), {}) for _ in range(10)])
    subscriber = Subscriber(broker, duckdb_warehouse, SETTINGS)
    caplog.set_level(logging.CRITICAL)
    with pytest.raises(SubscriberFailed, match="puller: RuntimeError: injected bug"):
        subscriber.run()
    assert not subscriber.healthy() and not subscriber.ready()
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1 and "thread puller died" in critical[0].getMessage()
    assert broker.published["flights-dead-letter"] == []


def test_health_answers_503_naming_the_dead_thread_and_readyz_names_the_warehouse_error() -> None:
    class Status:
        failure: str | None = None
        warehouse_error: str | None = "WarehouseUnavailable: disk full"
        broker_error: str | None = None

        def healthy(self) -> bool:
            return self.failure is None

        def ready(self) -> bool:
            return self.healthy() and self.warehouse_error is None

    status = Status()
    app = _app(status)

    def call(path: str) -> tuple[str, dict[str, str]]:
        seen: list[str] = []
        body = b"".join(app({"PATH_INFO": path}, lambda s, h: seen.append(s)))
        return seen[0], msgspec.json.decode(body)

    assert call("/healthz")[0].startswith("200")
    code, body = call("/readyz")
    assert code.startswith("503") and body["warehouse_error"] == "WarehouseUnavailable: disk full"
    status.failure = "acker: RuntimeError: bug"
    code, body = call("/healthz")
    assert code.startswith("503") and body["failure"] == "acker: RuntimeError: bug"


def test_the_leaser_keeps_a_batch_leased_while_a_write_hangs(
    broker: FakeBroker, duckdb_warehouse: DuckDBWarehouse
) -> None:
    release = threading.Event()

    class Hanging(FlakyWarehouse):
        def write(self, batch: Sequence[Envelope]) -> int:
            release.wait(10)
            return super().write(batch)

    broker.publish("flights", [(payload(make_event()), {}) for _ in range(5)])
    subscriber = Subscriber(broker, Hanging(duckdb_warehouse), SETTINGS)
    thread = threading.Thread(target=subscriber.run)
    thread.start()
    try:
        for _ in range(100):
            if len(set(broker.extended)) >= 5:
                break
            threading.Event().wait(0.05)
        assert {f"flights-subscriber:{i}" for i in range(1, 6)} <= set(broker.extended)
    finally:
        release.set()
        subscriber.stop()
        thread.join(10)
    assert duckdb_warehouse.count_events() == 5
