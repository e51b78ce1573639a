"""Every metric name written outside `flightpipe.telemetry` names one of its collectors.

Code derives names from the collectors (`telemetry.exposed_name`); the Prometheus rules are YAML
(PromQL text) and cannot, so this test holds them to the collectors instead: renaming a collector
without its rules fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import REGISTRY

from flightpipe import telemetry
from tests.first_scrape import first_scrape, run_until_settled, samples

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "observability/prometheus").glob("*.yml"))
# A series name, not a recording rule's `level:metric:operation` (those are defined in the rules).
SERIES = re.compile(r"(?<![:\w])flightpipe_[a-z0-9_]+(?![:\w])")
DEAD = telemetry.exposed_name(telemetry.MESSAGES_DEAD_LETTERED)


def exposed_series() -> set[str]:
    """Every sample name flightpipe's collectors expose (`_total`, `_bucket`, `_sum`...)."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(s.name for s in family.samples)
        # A histogram or a labelled counter shows its samples only once observed: add them all.
        if family.type == "histogram":
            names.update(f"{family.name}{s}" for s in ("_bucket", "_sum", "_count", "_created"))
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return {n for n in names if n.startswith("flightpipe_")}


def test_exposed_name_is_the_name_prometheus_serves() -> None:
    assert telemetry.exposed_name(telemetry.MESSAGES_WRITTEN) == "flightpipe_messages_written_total"
    assert telemetry.exposed_name(telemetry.DATA_FRESHNESS) == "flightpipe_data_freshness_seconds"
    bucket = telemetry.exposed_name(telemetry.HTTP_DURATION, "_bucket")
    assert bucket == "flightpipe_http_request_duration_seconds_bucket"
    assert telemetry.metric_type(telemetry.HTTP_DURATION) == "histogram"
    assert bucket in exposed_series()


def test_every_series_the_prometheus_rules_read_is_a_collectors() -> None:
    assert RULES
    exposed = exposed_series()
    used = {name for path in RULES for name in SERIES.findall(path.read_text(encoding="utf-8"))}
    assert used, "the rules read flightpipe series"
    assert sorted(used - exposed) == []


def test_every_series_the_rules_read_is_served_at_zero_before_any_event() -> None:
    # Fresh processes: a series that first appears at its first value hides that increase from
    # rate(), and a ratio over a missing series is no value at all (Prometheus' instrumentation
    # guide, "Avoid missing metrics").
    served = samples(first_scrape("subscriber")) + samples(first_scrape("api"))
    names = {name for name, _, _ in served}
    used = {name for path in RULES for name in SERIES.findall(path.read_text(encoding="utf-8"))}
    assert sorted(used - names) == []
    nonzero = [(n, dict(labels), v) for n, labels, v in served if n in used and v != 0]
    assert nonzero == []
    dead = {dict(labels)["reason"] for n, labels, _ in served if n == DEAD}
    assert dead == set(telemetry.DEAD_LETTER_REASONS)


def test_every_api_route_has_its_5xx_and_latency_series_before_the_first_request(
    tmp_path: Path,
) -> None:
    from flightpipe_api import create_app

    from flightpipe.settings import load_settings
    from flightpipe.warehouse.duckdb import DuckDBWarehouse

    app = create_app(load_settings({}), warehouse=DuckDBWarehouse(tmp_path / "w.duckdb"))
    routes = {r.rule for r in app.url_map.iter_rules()}
    served = samples(first_scrape("api"))
    requests = {
        (dict(labels)["route"], dict(labels)["status"])
        for n, labels, _ in served
        if n == telemetry.exposed_name(telemetry.HTTP_REQUESTS)
    }
    for route in routes | {"gate", "unmatched"}:
        assert {(route, "200"), (route, "500"), (route, "503")} <= requests, route
    timed = {
        dict(labels)["route"]
        for n, labels, _ in served
        if n == telemetry.exposed_name(telemetry.HTTP_DURATION, "_count")
    }
    assert routes <= timed


def test_every_reason_the_subscriber_dead_letters_is_a_declared_label_value(
    tmp_path: Path,
) -> None:
    # The counter's label is the reason's text before ':'; each value the code can produce must
    # be one DEAD_LETTER_REASONS creates at 0.
    from flightpipe_subscriber import Subscriber
    from flightpipe_subscriber.batches import REASON_ATTRIBUTE

    from flightpipe.broker import SubscriptionConfig
    from flightpipe.settings import load_settings
    from flightpipe.warehouse.duckdb import DuckDBWarehouse
    from tests.factories import make_event, payload
    from tests.fakes import FakeBroker, FlakyWarehouse

    broker = FakeBroker()
    broker.create_topic("flights")
    broker.create_topic("flights-dead-letter")
    broker.create_subscription("flights-subscriber", SubscriptionConfig(topic="flights"))
    rejected, stored = make_event(), make_event()
    warehouse = FlakyWarehouse(DuckDBWarehouse(tmp_path / "w.duckdb"))
    warehouse.partial_reject_ids = {rejected.event_id}
    broker.publish(
        "flights",
        [
            (b"{broken", {}),
            (b'{"event_id": "x"}', {}),
            (b'{"event_id": 1, "flight_id": []}', {}),
            (payload(rejected), {}),
            (payload(stored), {}),
        ],
    )
    subscriber = Subscriber(broker, warehouse, load_settings({}, batch_size=10))
    run_until_settled(subscriber, broker, within=30)
    reasons = {
        attrs[REASON_ATTRIBUTE].split(":", 1)[0]
        for _, attrs in broker.published["flights-dead-letter"]
    }
    assert reasons == {"malformed json", "schema", "warehouse"}
    assert reasons <= set(telemetry.DEAD_LETTER_REASONS)
