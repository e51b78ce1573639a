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

ROOT = Path(__file__).resolve().parents[2]
RULES = sorted((ROOT / "observability/prometheus").glob("*.yml"))
# A series name, not a recording rule's `level:metric:operation` (those are defined in the rules).
SERIES = re.compile(r"(?<![:\w])flightpipe_[a-z0-9_]+(?![:\w])")


def exposed_series() -> set[str]:
    """Every sample name flightpipe's collectors expose (`_total`, `_bucket`, `_sum`...)."""
    names = set()
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
