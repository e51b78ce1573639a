"""The warehouse down or hanging for longer than ack deadline x max delivery attempts.

DuckDB (the real adapter behind a switch) and BigQuery (the real adapter and client against a
fake endpoint that answers 503 or never answers in time). The subscriber runs its real threads
on the real embedded broker. Nothing may be redelivered: the lease keeper holds every message
pulled, queued or being written for as long as the outage lasts.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
from flightpipe_subscriber import Subscriber
from flightpipe_subscriber.health import start_health_server

from flightpipe.broker.embedded import EmbeddedBroker
from flightpipe.settings import Settings
from flightpipe.warehouse import Warehouse
from tests.faults.harness import (
    OUTAGE_SECONDS,
    Figures,
    backlog,
    check_dead_letters,
    dead_letters,
    publish_events,
    valid_events,
)
from tests.faults.outage import SwitchedDuckDB, bigquery_warehouse, fake_bigquery
from tests.processes import free_port, http_get, wait_until

pytestmark = pytest.mark.integration
HANG_SECONDS = 1.5  # longer than the 1 s write timeout of the fault settings


def _run_outage(  # noqa: PLR0917 - one helper for the four outage tests
    figures: Figures,
    broker: EmbeddedBroker,
    settings: Settings,
    warehouse: Warehouse,
    outage: threading.Event,
    caplog: pytest.LogCaptureFixture,
    cause: str,
) -> Subscriber:
    """Publish, fail the warehouse for OUTAGE_SECONDS while publishing more, recover, stop."""
    before, during = valid_events(1500, "before"), valid_events(1500, "during")
    figures.published_valid = len(before) + len(during)
    subscriber = Subscriber(broker, warehouse, settings)
    port = free_port()
    health = start_health_server(port, subscriber, host="127.0.0.1")
    url = f"http://127.0.0.1:{port}"
    thread = threading.Thread(target=subscriber.run, name="subscriber-under-test")
    caplog.set_level(logging.WARNING, logger="flightpipe_subscriber")
    try:
        thread.start()
        publish_events(broker, before[:500])
        outage.set()  # the batch being written, the queued ones and the puller's are now held
        publish_events(broker, before[500:])
        started = time.monotonic()
        publish_events(broker, during)
        wait_until(lambda: http_get(f"{url}/readyz")[0] == 503, 10, "/readyz to report it")
        _, body = http_get(f"{url}/readyz")
        assert cause in body["warehouse_error"], body  # the real cause, named
        assert http_get(f"{url}/healthz")[0] == 200, "an outage is not a reason to restart"
        while time.monotonic() - started < OUTAGE_SECONDS:
            assert http_get(f"{url}/healthz")[0] == 200
            time.sleep(0.5)
        figures.fault_seconds = time.monotonic() - started
        outage.clear()
        ended = time.monotonic()
        wait_until(lambda: backlog(broker) == 0, 60, "the backlog to drain", interval=0.05)
        figures.recovery_seconds = time.monotonic() - ended
        wait_until(lambda: http_get(f"{url}/readyz")[0] == 200, 10, "/readyz to recover")
    finally:
        subscriber.stop()
        thread.join(timeout=20)
        health.shutdown()
    assert not thread.is_alive()
    assert subscriber.failure is None
    figures.max_delivery_attempt = subscriber.max_delivery_attempt or 1
    causes = [r.getMessage() for r in caplog.records if "warehouse write failed" in r.getMessage()]
    assert causes and all(cause in c for c in causes), causes[:3]
    check_dead_letters(figures, dead_letters(broker), set())
    assert figures.max_delivery_attempt == 1, "a lease lapsed: messages were redelivered"
    return subscriber


@pytest.mark.parametrize("mode", ["down", "hang"])
def test_duckdb_outage_longer_than_the_leases_loses_and_duplicates_nothing(
    broker: EmbeddedBroker, settings: Settings, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    figures = Figures(f"DuckDB {mode} for deadline x attempts + 2 s")
    warehouse = SwitchedDuckDB(settings.duckdb_path, mode, HANG_SECONDS)
    try:
        cause = "timed out" if mode == "hang" else "warehouse down"
        subscriber = _run_outage(
            figures, broker, settings, warehouse, warehouse.outage, caplog, cause
        )
        stored = warehouse.count_events()
    finally:
        warehouse.close()
    figures.stored = stored
    figures.duplicates_written = warehouse.rows_written - warehouse.rows_new
    figures.notes.append(f"{warehouse.failed_writes} failed write attempts")
    assert stored == figures.published_valid
    assert figures.duplicates_written == 0
    assert subscriber.leases.extensions > 0
    figures.record()


@pytest.mark.parametrize("mode", ["down", "hang"])
def test_bigquery_outage_longer_than_the_leases_loses_and_duplicates_nothing(
    broker: EmbeddedBroker, settings: Settings, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    figures = Figures(f"BigQuery insertAll {mode} (fake endpoint) for deadline x attempts + 2 s")
    with fake_bigquery(mode, HANG_SECONDS) as (fake, url):
        warehouse = bigquery_warehouse(url, settings.write_timeout_seconds)
        try:
            cause = "Read timed out" if mode == "hang" else "503"
            _run_outage(figures, broker, settings, warehouse, fake.outage, caplog, cause)
        finally:
            warehouse.close()
    figures.stored = len(fake.accepted)
    figures.duplicates_written = sum(fake.accepted.values()) - len(fake.accepted)
    figures.notes.append(f"{fake.failed_requests} failed insertAll requests")
    assert figures.stored == figures.published_valid
    assert figures.duplicates_written == 0
    figures.record()
