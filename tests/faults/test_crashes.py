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
    StartSubscriber,
    check_promises,
    drain,
    publish,
    valid_events,
)

pytestmark = pytest.mark.integration
FAULTY = [sys.executable, "-m", "tests.faults.subscriber_with_faults"]
INVALID = [b"{not json", b'{"event_id": "x"}', b"null", b"[]", b"\xff"]


def _traffic(
    figures: Figures, n: int, prefix: str, invalid_at: int
) -> tuple[list[FlightEvent], list[bytes]]:
    """n valid events, and what to publish: their bodies with INVALID at `invalid_at`."""
    valid = valid_events(n, prefix)
    bodies = [payload(e) for e in valid]
    figures.published_valid, figures.published_invalid = len(valid), len(INVALID)
    return valid, bodies[:invalid_at] + INVALID + bodies[invalid_at:]


def _take_over(
    figures: Figures,
    broker: EmbeddedBroker,
    settings: Settings,
    valid: list[FlightEvent],
    fault_ended: float,
    *,
    start_subscriber: StartSubscriber,
) -> None:
    """A fresh subscriber drains what is left; then check every promise."""
    successor = start_subscriber()
    drain(broker, timeout=60, what="the successor to drain the backlog")
    figures.recovery_seconds = time.monotonic() - fault_ended
    figures.max_delivery_attempt = max(
        figures.max_delivery_attempt, int(successor.metric("flightpipe_delivery_attempt_max")) or 1
    )
    figures.duplicates_written = int(successor.metric("flightpipe_messages_duplicate_total"))
    assert successor.stop() == 0, successor.log()
    check_promises(figures, broker, settings, valid, INVALID)
    figures.record()


@pytest.mark.parametrize("thread", ["puller", "acker", "writer", "leaser"])
def test_a_dead_thread_makes_the_process_unhealthy_and_exit_and_nothing_is_lost(
    broker: EmbeddedBroker, settings: Settings, start_subscriber: StartSubscriber, thread: str
) -> None:
    figures = Figures(f"the {thread} thread raises (a bug)")
    valid, bodies = _traffic(figures, 2000, f"crash-{thread}", 1000)
    faulty = start_subscriber(FAULTY, {"FAULT": f"crash:{thread}"}, wait_healthy=False)
    publish(broker, bodies)
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
    _take_over(figures, broker, settings, valid, ended, start_subscriber=start_subscriber)
    figures.notes.append(f"exit {faulty.proc.returncode}: {critical[0]['message'][:80]}")


@pytest.mark.usefixtures("broker")  # the topology the subscriber reads
def test_a_dead_thread_is_seen_by_the_health_probe_before_the_exit(
    start_subscriber: StartSubscriber,
) -> None:
    # The leaser dies at its first tick (a third of the 2 s ack deadline); the process then
    # winds down (about 0.3 s) before it exits, and /healthz must answer 503 meanwhile.
    faulty = start_subscriber(FAULTY, {"FAULT": "crash:leaser"}, wait_healthy=False)
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
    broker: EmbeddedBroker, settings: Settings, start_subscriber: StartSubscriber, phase: str
) -> None:
    figures = Figures(f"SIGKILL while {phase.replace('_', ' ')}")
    valid, bodies = _traffic(figures, 1500, f"kill-{phase}", 200)
    victim = start_subscriber(FAULTY, {"FAULT": f"block:{phase}"})
    publish(broker, bodies)
    victim.wait_for_line(f"FAULT-PHASE {phase}")
    victim.kill()
    killed = time.monotonic()
    # The killed process's leases lapse after one ack deadline; the successor then redelivers.
    _take_over(figures, broker, settings, valid, killed, start_subscriber=start_subscriber)
    if phase in {"committed", "acking"}:
        # Committed but never acked: redelivered, recognised as stored, not written again.
        assert figures.duplicates_written > 0


def test_repeated_sigkills_during_ingest_lose_nothing(
    broker: EmbeddedBroker, settings: Settings, start_subscriber: StartSubscriber
) -> None:
    # Four kills: even if every one of them held the same message, the successor's delivery is
    # its fifth, the last before max_delivery_attempts (5) would dead-letter it. More crashes in
    # a row than that is a crash loop, which Pub/Sub's dead-letter policy is meant to stop.
    figures = Figures("SIGKILL x 4 at staggered points of ingest")
    valid, bodies = _traffic(figures, 6000, "kills", 3000)
    publish(broker, bodies)
    for i in range(4):
        victim = start_subscriber()
        time.sleep(0.2 + 0.15 * (i % 4))
        victim.kill()
    ended = time.monotonic()
    _take_over(figures, broker, settings, valid, ended, start_subscriber=start_subscriber)
    assert figures.max_delivery_attempt <= settings.max_delivery_attempts
