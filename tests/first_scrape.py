"""What a fresh service process exposes on /metrics: before any event, and after some traffic.

Each scrape runs in a new interpreter, so the registry holds only what the service itself
creates (pytest's own process has counted every earlier test's events). The subscriber's
`/metrics` is its health server's WSGI app on the default registry; the API's is `create_app()`'s
`/metrics`, which serves `API_REGISTRY` (as on Cloud Run: no subscriber in the process).

`python -m tests.first_scrape subscriber VALID POISON` prints `[before, after]` as JSON: the
exposition text before any message, then after the real `Subscriber` consumed VALID valid and
POISON malformed messages from an in-memory broker. `... api REQUESTS` does the same around
REQUESTS successful API calls.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from flightpipe_subscriber import Subscriber

    from tests.fakes import FakeBroker

ROOT = Path(__file__).resolve().parents[1]
Sample = tuple[str, frozenset[tuple[str, str]], float]


def run_until_settled(subscriber: Subscriber, broker: FakeBroker, within: float) -> None:
    """Run the subscriber's real threads until the broker holds no unsettled message (or
    `within` seconds passed), then stop it."""
    thread = threading.Thread(target=subscriber.run)
    thread.start()
    deadline = time.monotonic() + within
    while not broker.settled("flights-subscriber") and time.monotonic() < deadline:
        time.sleep(0.01)
    subscriber.stop()
    thread.join(timeout=within)


def _subscriber(valid: int, poison: int) -> list[str]:
    from flightpipe_subscriber import Subscriber, health
    from werkzeug.test import Client

    from flightpipe.broker import SubscriptionConfig
    from flightpipe.settings import load_settings
    from flightpipe.warehouse.duckdb import DuckDBWarehouse
    from tests.factories import make_event, payload
    from tests.fakes import FakeBroker

    metrics = Client(health._metrics_app)
    scrapes = [metrics.get("/metrics").get_data(as_text=True)]
    broker = FakeBroker()
    broker.create_topic("flights")
    broker.create_topic("flights-dead-letter")
    broker.create_subscription("flights-subscriber", SubscriptionConfig(topic="flights"))
    messages: list[tuple[bytes, dict[str, str]]] = [
        (payload(make_event()), {}) for _ in range(valid)
    ]
    messages += [(b"{not json", {}) for _ in range(poison)]
    broker.publish("flights", messages)
    with tempfile.TemporaryDirectory() as tmp:
        warehouse = DuckDBWarehouse(Path(tmp) / "w.duckdb")
        subscriber = Subscriber(broker, warehouse, load_settings({}, batch_size=50))
        run_until_settled(subscriber, broker, within=60)
        warehouse.close()
    scrapes.append(metrics.get("/metrics").get_data(as_text=True))
    return scrapes


def _api(requests: int) -> list[str]:
    import datetime as dt

    from flightpipe_api import create_app

    from flightpipe.settings import load_settings
    from flightpipe.warehouse import Envelope
    from flightpipe.warehouse.duckdb import DuckDBWarehouse
    from tests.factories import make_event

    with tempfile.TemporaryDirectory() as tmp:
        warehouse = DuckDBWarehouse(Path(tmp) / "w.duckdb")
        warehouse.write([Envelope(make_event(), "m", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))])
        client = create_app(load_settings({}), warehouse=warehouse).test_client()
        scrapes = [client.get("/metrics").get_data(as_text=True)]
        for i in range(requests):
            assert client.get(f"/v1/flights?limit={1 + i % 5}").status_code == 200
        scrapes.append(client.get("/metrics").get_data(as_text=True))
        warehouse.close()
    return scrapes


def scrapes(service: str, *counts: int) -> tuple[str, str]:
    """(before, after) exposition texts of a fresh `service` process (see the module doc)."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.first_scrape", service, *map(str, counts)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    before, after = json.loads(result.stdout)
    return before, after


def first_scrape(service: str) -> str:
    """The exposition text a fresh `service` (`subscriber` or `api`) serves before any event."""
    return scrapes(service, *((0, 0) if service == "subscriber" else (0,)))[0]


def samples(text: str) -> list[Sample]:
    """Every sample of an exposition: (name, labels, value)."""
    return [
        (s.name, frozenset(s.labels.items()), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def families(text: str) -> set[str]:
    """The metric family names that have at least one sample (counters without `_total`)."""
    return {f.name for f in text_string_to_metric_families(text) if f.samples}


if __name__ == "__main__":
    kind, *args = sys.argv[1:]
    numbers = [int(a) for a in args]
    out = _subscriber(*numbers) if kind == "subscriber" else _api(*numbers)
    sys.stdout.write(json.dumps(out))
