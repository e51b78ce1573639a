"""A full disk under the running subscriber process, longer than ack deadline x attempts.

The subscriber's file-size limit is set to 0 from outside (`prlimit`, RLIMIT_FSIZE): no file it
writes can grow, so DuckDB's WAL and the broker's SQLite WAL fail exactly as on a full disk
(EFBIG instead of ENOSPC; Python ignores SIGXFSZ, so the write returns the error). Nothing else
on the machine is affected, and lifting the limit is "the disk has room again".
"""

from __future__ import annotations

import json
import resource
import time

import pytest

from flightpipe.broker.embedded import EmbeddedBroker
from flightpipe.settings import Settings
from tests.factories import payload
from tests.faults import harness
from tests.processes import wait_until

pytestmark = pytest.mark.integration
# DuckDB names the OS error; SQLite reports its own I/O code for the same EFBIG.
FULL_DISK = ("File too large", "No space left", "disk is full", "SQLITE_IOERR_WRITE", "SQLITE_FULL")


def test_a_full_disk_stalls_nothing_for_good_and_the_log_names_it(
    broker: EmbeddedBroker, settings: Settings, start_subscriber: harness.StartSubscriber
) -> None:
    figures = harness.Figures("disk full (RLIMIT_FSIZE=0) for deadline x attempts + 2 s")
    before, during = (
        harness.valid_events(1000, "disk-before"),
        harness.valid_events(2000, "disk-during"),
    )
    invalid = [b"{not json", b"[]"]
    figures.published_valid = len(before) + len(during)
    figures.published_invalid = len(invalid)
    subscriber = start_subscriber()
    assert subscriber.proc is not None
    harness.publish(broker, [payload(e) for e in before] + invalid)
    harness.drain(broker, timeout=30)
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.prlimit(subscriber.proc.pid, resource.RLIMIT_FSIZE, (0, hard))
    started = time.monotonic()
    try:
        harness.publish(broker, [payload(e) for e in during])  # this process may still write
        wait_until(lambda: subscriber.health("/readyz")[0] == 503, 15, "/readyz to report it")
        _, body = subscriber.health("/readyz")
        cause = body.get("warehouse_error") or body.get("broker_error") or ""
        assert any(text in cause for text in FULL_DISK), body
        while time.monotonic() - started < harness.OUTAGE_SECONDS:
            assert subscriber.health("/healthz")[0] == 200, "a full disk is no reason to restart"
            time.sleep(0.5)
    finally:
        resource.prlimit(subscriber.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))
    ended = time.monotonic()
    figures.fault_seconds = ended - started
    harness.drain(broker, timeout=60, what="the backlog after the disk has room again")
    figures.recovery_seconds = time.monotonic() - ended
    wait_until(lambda: subscriber.health("/readyz")[0] == 200, 15, "/readyz to recover")
    figures.max_delivery_attempt = int(subscriber.metric("flightpipe_delivery_attempt_max")) or 1
    figures.duplicates_written = int(subscriber.metric("flightpipe_messages_duplicate_total"))
    assert subscriber.stop() == 0, subscriber.log()

    # One clear line names the real cause, not the failed ROLLBACK.
    failures = [
        line
        for line in subscriber.lines
        if "warehouse write failed" in line or "pull failed" in line
    ]
    assert failures, subscriber.log()
    assert any(text in failures[0] for text in FULL_DISK), failures[0]
    assert not any("cannot rollback" in line for line in subscriber.lines)
    for line in subscriber.lines:
        if "warehouse write failed" in line:  # DuckDB's own line names the OS error
            assert "File too large" in line, line
    harness.check_promises(figures, broker, settings, before + during, invalid)
    figures.notes.append(json.loads(failures[0])["message"][:120])
    figures.record()
