"""A thread of the subscriber dying, and SIGKILL in every phase of a batch.

Both run the real entrypoint (`subscriber_with_faults.py` plants one fault, then calls
`flightpipe_subscriber.__main__.main`) on the real embedded broker and DuckDB files. After the
fault a fresh subscriber process takes over, as the platform's restart would.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest

from flightpipe.broker.embedded import EmbeddedBroker
from flightpipe.contract import FlightEvent
from flightpipe.settings import Settings
from tests.factories import payload
from tests.faults.harness import (
    Figures,
    SubscriberProcess,
    check_dead_letters,
    check_stored_exactly_once,
    dead_letters,
    drain,
    publish,
    stored_event_ids,
    valid_events,
)

pytestmark = pytest.mark.integration
FAULTY = [sys.executable, "-m", "tests.faults.subscriber_with_faults"]
INVALID = [b"{not json", b'{"event_id": "x"}', b"null", b"[]", b"\xff"]


def _take_over(
    figures: Figures,
    broker: EmbeddedBroker,
    settings: Settings,
    valid: list[FlightEvent],
    fault_ended: float,
) -> None:
    """A fresh subscriber drains what is left; then check every promise."""
    successor = SubscriberProcess(settings).start()
    drain(broker, timeout=60, what="the successor to drain the backlog")
    figures.recovery_seconds = time.monotonic() - fault_ended
    figures.max_delivery_attempt = max(
        figures.max_delivery_attempt, int(successor.metric("flightpipe_delivery_attempt_max")) or 1
    )
    figures.duplicates_written = int(successor.metric("flightpipe_messages_duplicate_total"))
    assert successor.stop() == 0, successor.log()
    check_stored_exactly_once(figures, stored_event_ids(settings.duckdb_path), valid)
    letters = dead_letters(broker)
    check_dead_letters(figures, letters, set(INVALID))
    figures.record()


@pytest.mark.parametrize("thread", ["puller", "acker", "writer", "leaser"])
def test_a_dead_thread_makes_the_process_unhealthy_and_exit_and_nothing_is_lost(
    broker: EmbeddedBroker, settings: Settings, thread: str
) -> None:
    figures = Figures(f"the {thread} thread raises (a bug)")
    valid = valid_events(2000, f"crash-{thread}")
    bodies = [payload(e) for e in valid]
    figures.published_valid, figures.published_invalid = len(valid), len(INVALID)
    faulty = SubscriberProcess(settings, argv=FAULTY, env={"FAULT": f"crash:{thread}"})
    faulty.start(wait_healthy=False)
    publish(broker, bodies[:1000] + INVALID + bodies[1000:])
    assert faulty.proc is not None
    faulty.proc.wait(timeout=30)  # it exits by itself: nothing left running half-dead
    ended = time.monotonic()
    assert faulty.proc.returncode == 1, faulty.log()
    critical = [r for r in faulty.json_lines() if r.get("severity") == "CRITICAL"]
    assert len(critical) == 1, faulty.log()
    assert f"thread {thread} died" in critical[0]["message"]
    assert (
        f"injected: a bug in the {thread if thread != 'leaser' else 'lease keeper'}"
        in (critical[0]["message"])
    )
    _take_over(figures, broker, settings, valid, ended)
    figures.notes.append(f"exit {faulty.proc.returncode}: {critical[0]['message'][:80]}")


def test_a_dead_thread_is_seen_by_the_health_probe_before_the_exit(
    broker: EmbeddedBroker, settings: Settings
) -> None:
    # The leaser dies at its first tick (a third of the 2 s ack deadline); the process then
    # winds down (about 0.3 s) before it exits, and /healthz must answer 503 meanwhile.
    faulty = SubscriberProcess(settings, argv=FAULTY, env={"FAULT": "crash:leaser"})
    faulty.start(wait_healthy=False)
    answers: list[tuple[int, Any]] = []
    assert faulty.proc is not None
    while faulty.proc.poll() is None:
        answers.append(faulty.health())
        time.sleep(0.01)
    assert faulty.proc.returncode == 1, faulty.log()
    statuses = [status for status, _ in answers if status]  # 0: not listening (yet or any more)
    assert 503 in statuses, f"/healthz never answered 503 before the exit: {statuses}"
    first_503 = statuses.index(503)
    assert 200 in statuses[:first_503], f"never healthy before the failure: {statuses}"
    assert set(statuses[first_503:]) == {503}, f"healthy again after the failure: {statuses}"
    for status, body in answers:
        if status == 503:
            assert body["status"] == "unavailable", body
            assert body["failure"].startswith("leaser: RuntimeError: injected"), body


PHASES = ["pulled", "writing", "committed", "acking", "dead_letter_published"]


@pytest.mark.parametrize("phase", PHASES)
def test_sigkill_in_every_phase_of_a_batch_loses_nothing_and_stores_nothing_twice(
    broker: EmbeddedBroker, settings: Settings, phase: str
) -> None:
    figures = Figures(f"SIGKILL while {phase.replace('_', ' ')}")
    valid = valid_events(1500, f"kill-{phase}")
    bodies = [payload(e) for e in valid]
    figures.published_valid, figures.published_invalid = len(valid), len(INVALID)
    victim = SubscriberProcess(settings, argv=FAULTY, env={"FAULT": f"block:{phase}"}).start()
    publish(broker, bodies[:200] + INVALID + bodies[200:])
    victim.wait_for_line(f"FAULT-PHASE {phase}")
    victim.kill()
    killed = time.monotonic()
    # The killed process's leases lapse after one ack deadline; the successor then redelivers.
    _take_over(figures, broker, settings, valid, killed)
    if phase in {"committed", "acking"}:
        # Committed but never acked: redelivered, recognised as stored, not written again.
        assert figures.duplicates_written > 0


def test_repeated_sigkills_during_ingest_lose_nothing(
    broker: EmbeddedBroker, settings: Settings
) -> None:
    # Four kills: even if every one of them held the same message, the successor's delivery is
    # its fifth, the last before max_delivery_attempts (5) would dead-letter it. More crashes in
    # a row than that is a crash loop, which Pub/Sub's dead-letter policy is meant to stop.
    figures = Figures("SIGKILL x 4 at staggered points of ingest")
    valid = valid_events(6000, "kills")
    bodies = [payload(e) for e in valid]
    figures.published_valid, figures.published_invalid = len(valid), len(INVALID)
    publish(broker, bodies[:3000] + INVALID + bodies[3000:])
    for i in range(4):
        victim = SubscriberProcess(settings).start()
        time.sleep(0.2 + 0.15 * (i % 4))
        victim.kill()
    ended = time.monotonic()
    _take_over(figures, broker, settings, valid, ended)
    assert figures.max_delivery_attempt <= settings.max_delivery_attempts
