"""`flightpipe dlq redrive` on the embedded broker (real SQLite), a real subscriber and DuckDB."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from flightpipe_local import cli

from flightpipe import redrive
from flightpipe.broker import Message, SubscriptionConfig
from flightpipe.broker.embedded import EmbeddedBroker
from flightpipe.redrive import (
    HISTORY_ATTRIBUTE,
    MAX_ATTRIBUTE_VALUE_BYTES,
    REASON_ATTRIBUTE,
    REDRIVE_COUNT_ATTRIBUTE,
    DeadLetterFilter,
)
from flightpipe.settings import Settings, load_settings
from flightpipe.warehouse.duckdb import DuckDBWarehouse
from tests.factories import make_event, payload
from tests.fakes import FlakyWarehouse
from tests.redrive_harness import run_until, topology

ROOT = Path(__file__).resolve().parents[2]
T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings({}, data_dir=str(tmp_path), batch_size=10, max_inflight_messages=40)


@pytest.fixture
def broker(settings: Settings) -> Iterator[EmbeddedBroker]:
    instance = EmbeddedBroker(settings.broker_path)
    # A short dead-letter lease, so the leases of a killed redrive lapse within the test.
    topology(instance, settings, dead_letter_ack_deadline=1)
    yield instance
    instance.close()


def dead_letter_backlog(broker: EmbeddedBroker, settings: Settings) -> int:
    return broker.backlog(settings.dead_letter_subscription)[0]


def seed(
    broker: EmbeddedBroker, warehouse: DuckDBWarehouse, settings: Settings, good: int, bad: int
) -> list[str]:
    """Dead-letter `good` valid events (the warehouse rejects them) and `bad` invalid messages
    through the real subscriber; return the valid events' flight ids."""
    events = [make_event() for _ in range(good)]
    flaky = FlakyWarehouse(warehouse)
    flaky.reject_event_ids = {e.event_id for e in events}
    messages = [(payload(e), {"source": "test"}) for e in events]
    messages += [(b'{"event_id": "broken-%d"}' % i, {}) for i in range(bad)]
    broker.publish(settings.topic, messages)
    # One message a batch: a batch whose every row the warehouse rejects is retried as an outage.
    one_by_one = msgspec.structs.replace(settings, batch_size=1, max_inflight_messages=2)
    run_until(
        broker, flaky, one_by_one, lambda: dead_letter_backlog(broker, settings) == good + bad
    )
    assert warehouse.count_events() == 0
    return [e.flight_id for e in events]


def test_a_fixed_dead_letter_is_redriven_and_stored_once_and_a_second_dead_lettering_keeps_history(
    broker: EmbeddedBroker, duckdb_warehouse: DuckDBWarehouse, settings: Settings
) -> None:
    seed(broker, duckdb_warehouse, settings, good=3, bad=2)

    # Redriven while the cause persists: dead-lettered again, with the first reason in its history.
    broken = FlakyWarehouse(duckdb_warehouse)
    broken.reject_event_ids = {"never"}
    first = redrive.redrive(
        broker, settings.dead_letter_subscription, settings.topic, DeadLetterFilter()
    )
    assert (first.redriven, first.skipped, first.remaining) == (5, 0, 0)
    run_until(broker, broken, settings, lambda: dead_letter_backlog(broker, settings) == 2)
    assert duckdb_warehouse.count_events() == 3
    again = broker.pull(settings.dead_letter_subscription, 10, timeout=1)
    assert len(again) == 2
    for message in again:
        assert message.attributes[REASON_ATTRIBUTE].startswith("schema:")
        assert message.attributes[REDRIVE_COUNT_ATTRIBUTE] == "1"
        (entry,) = json.loads(message.attributes[HISTORY_ATTRIBUTE])
        assert entry["reason"].startswith("schema:")
    broker.nack(settings.dead_letter_subscription, [m.ack_id for m in again])

    # Redriven a second time: the count goes on and the history holds both dead-letterings.
    report = redrive.redrive(
        broker, settings.dead_letter_subscription, settings.topic, DeadLetterFilter()
    )
    assert report.redriven == 2
    run_until(
        broker, duckdb_warehouse, settings, lambda: dead_letter_backlog(broker, settings) == 2
    )
    twice = broker.pull(settings.dead_letter_subscription, 10, timeout=1)
    assert len(twice) == 2
    for message in twice:
        assert message.attributes[REDRIVE_COUNT_ATTRIBUTE] == "2"
        assert len(json.loads(message.attributes[HISTORY_ATTRIBUTE])) == 2
    assert duckdb_warehouse.count_events() == 3


def test_redrive_keeps_payload_and_own_attributes_and_strips_the_dead_letter_ones(
    broker: EmbeddedBroker, duckdb_warehouse: DuckDBWarehouse, settings: Settings
) -> None:
    (flight_id,) = seed(broker, duckdb_warehouse, settings, good=1, bad=0)
    broker.create_subscription("copy", SubscriptionConfig(topic=settings.topic))
    redrive.redrive(broker, settings.dead_letter_subscription, settings.topic, DeadLetterFilter())
    (copy,) = broker.pull("copy", 10, timeout=1)
    assert json.loads(copy.data)["flight_id"] == flight_id
    assert set(copy.attributes) == {"source", REDRIVE_COUNT_ATTRIBUTE, HISTORY_ATTRIBUTE}
    assert copy.attributes["source"] == "test"
    assert copy.attributes[REDRIVE_COUNT_ATTRIBUTE] == "1"


def dead_letter(attributes: dict[str, str], message_id: str = "7") -> Message:
    return Message(message_id, b"{}", attributes, T0, f"ack-{message_id}")


def test_a_dead_letter_from_the_max_attempts_policy_is_named_so_and_its_attributes_dropped() -> (
    None
):
    # Pub/Sub's policy sets no reason; the embedded broker does the same (flightpipe/broker).
    message = dead_letter(
        {
            "source": "x",
            "CloudPubSubDeadLetterSourceDeliveryCount": "5",
            "CloudPubSubDeadLetterSourceSubscription": "flights-subscriber",
        }
    )
    assert redrive.reason_of(message) == "max_delivery_attempts"
    attributes = redrive.redriven_attributes(message)
    assert set(attributes) == {"source", REDRIVE_COUNT_ATTRIBUTE, HISTORY_ATTRIBUTE}
    assert json.loads(attributes[HISTORY_ATTRIBUTE])[0]["reason"] == "max_delivery_attempts"


def test_the_history_stays_within_one_attribute_value_and_keeps_the_latest_reasons() -> None:
    attributes = {REDRIVE_COUNT_ATTRIBUTE: "0"}
    for n in range(1, 40):
        attributes[REASON_ATTRIBUTE] = f"schema: failure number {n} " + "é" * 150
        attributes = redrive.redriven_attributes(dead_letter(attributes, str(n)))
    assert attributes[REDRIVE_COUNT_ATTRIBUTE] == "39"
    encoded = attributes[HISTORY_ATTRIBUTE]
    assert len(encoded.encode()) <= MAX_ATTRIBUTE_VALUE_BYTES
    assert json.loads(encoded)[-1]["reason"].startswith("schema: failure number 39 ")


def test_filters_choose_by_reason_time_and_id_and_never_loop_over_the_others(
    broker: EmbeddedBroker, settings: Settings
) -> None:
    letters = [
        (b"a", {REASON_ATTRIBUTE: "schema: missing required field", "original_message_id": "o1"}),
        (b"b", {REASON_ATTRIBUTE: "warehouse: invalid"}),
        (b"c", {REASON_ATTRIBUTE: "malformed json: x"}),
    ] * 4
    broker.publish(settings.dead_letter_topic, letters)
    pulls = 0
    real_pull = broker.pull

    def counted(subscription: str, max_messages: int, timeout: float = 1.0) -> list[Message]:
        nonlocal pulls
        pulls += 1
        return real_pull(subscription, max_messages, timeout)

    broker.pull = counted  # type: ignore[method-assign]
    by_reason = run(
        broker, settings, DeadLetterFilter(reasons=("schema", "malformed")), batch_size=2
    )
    assert (by_reason.redriven, by_reason.skipped) == (8, 4)
    assert pulls <= 8  # 12 messages two by two, then an empty pull: none was seen twice
    assert dead_letter_backlog(broker, settings) == 4
    assert run(broker, settings, DeadLetterFilter(ids=frozenset({"o1"}))).redriven == 0  # redriven
    past = run(
        broker, settings, DeadLetterFilter(until=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    )
    assert past.redriven == 0 and past.skipped == 4
    assert run(broker, settings, DeadLetterFilter(since=T0)).redriven == 4


def run(
    broker: EmbeddedBroker, settings: Settings, selection: DeadLetterFilter, **options: object
) -> redrive.Report:
    return redrive.redrive(
        broker,
        settings.dead_letter_subscription,
        settings.topic,
        selection,
        **options,  # type: ignore[arg-type]
    )


def test_dry_run_changes_nothing_and_limit_stops_after_n(
    broker: EmbeddedBroker, settings: Settings
) -> None:
    broker.create_subscription("copy", SubscriptionConfig(topic=settings.topic))
    broker.publish(settings.dead_letter_topic, [(b"x%d" % i, {}) for i in range(5)])
    dry = run(broker, settings, DeadLetterFilter(), dry_run=True)
    assert (dry.redriven, len(dry.matched), dry.remaining) == (0, 5, 5)
    assert dead_letter_backlog(broker, settings) == 5
    assert broker.pull("copy", 10, timeout=0) == []
    limited = run(broker, settings, DeadLetterFilter(), limit=2, batch_size=10)
    assert limited.redriven == 2
    assert len(broker.pull("copy", 10, timeout=0)) == 2
    assert dead_letter_backlog(broker, settings) == 3
    # Every message left was given back: the next run takes them at once.
    assert run(broker, settings, DeadLetterFilter()).redriven == 3


KILLED_REDRIVE = """
import os, signal, sys
from flightpipe import redrive
from flightpipe.broker.embedded import EmbeddedBroker

point, path, dead_letters, topic = sys.argv[1:]
pulls = 0

class Killed(EmbeddedBroker):
    def pull(self, subscription, max_messages, timeout=1.0):
        global pulls
        pulls += 1
        if point == "while-holding" and pulls == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().pull(subscription, max_messages, timeout)

    def publish(self, topic, messages):
        if point == "before-publish":
            os.kill(os.getpid(), signal.SIGKILL)
        return super().publish(topic, messages)

    def ack(self, subscription, ack_ids):
        if point == "after-publish":
            os.kill(os.getpid(), signal.SIGKILL)
        super().ack(subscription, ack_ids)
        if point == "after-ack":
            os.kill(os.getpid(), signal.SIGKILL)

selection = redrive.DeadLetterFilter(reasons=("warehouse",))
redrive.redrive(Killed(path), dead_letters, topic, selection, batch_size=2, lease_seconds=1)
"""


# Each point between the steps of one redrive: an ack before its publish would lose the
# messages at "before-publish" or "after-ack".
@pytest.mark.parametrize("point", ["before-publish", "after-publish", "after-ack", "while-holding"])
def test_a_redrive_killed_at_any_point_loses_nothing_and_stores_each_event_once(
    broker: EmbeddedBroker, duckdb_warehouse: DuckDBWarehouse, settings: Settings, point: str
) -> None:
    flights = seed(broker, duckdb_warehouse, settings, good=4, bad=3)
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(KILLED_REDRIVE),
            point,
            str(settings.broker_path),
            settings.dead_letter_subscription,
            settings.topic,
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert killed.returncode == -9, killed.stderr.decode()
    time.sleep(1.5)  # the killed process's leases lapse
    assert dead_letter_backlog(broker, settings) >= 3  # the invalid ones were never lost
    run(broker, settings, DeadLetterFilter(reasons=("warehouse",)))
    run_until(broker, duckdb_warehouse, settings, lambda: duckdb_warehouse.count_events() >= 4)
    run_until(
        broker, duckdb_warehouse, settings, lambda: broker.backlog(settings.subscription)[0] == 0
    )
    assert duckdb_warehouse.count_events() == 4
    assert all(duckdb_warehouse.get_flight(f) is not None for f in flights)
    assert dead_letter_backlog(broker, settings) == 3


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "yesterday"], "--since: expected an ISO 8601 time"),
        (["--limit", "0"], "--limit: expected a positive integer, got '0'"),
        (["--since", "2024-05-02", "--until", "2024-05-01"], "--since must be before --until"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--wait", "0"], "--wait: expected a positive number, got '0'"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["dlq", "redrive", "--data-dir", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_the_command_prints_the_matches_and_a_summary(
    broker: EmbeddedBroker, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    broker.publish(
        settings.dead_letter_topic,
        [(b"a", {REASON_ATTRIBUTE: "schema: x"}), (b"b", {REASON_ATTRIBUTE: "warehouse: y"})],
    )
    argv = ["dlq", "redrive", "--data-dir", str(settings.data_path), "--reason", "schema"]
    argv += ["--wait", "0.2"]  # the embedded broker has no empty answers to ride out
    assert cli.main([*argv, "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["reason"] for line in out.splitlines()] == ["schema: x"]
    assert "would redrive 1" in err and "skipped 1 not matching" in err
    assert cli.main(argv) == 0
    assert "redriven 1 to topic 'flights'" in capsys.readouterr().err
    assert dead_letter_backlog(broker, settings) == 1
