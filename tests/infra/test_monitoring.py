"""Policies of the Monitoring component, checked on the resources it declares under Pulumi mocks.

Tests assert properties any correct monitoring setup must have (documented thresholds, SLO goals,
burn-rate tiers, what each alert watches), not echoes of inputs; the harness is
tests/infra/monitoring.py. The last rule, that nothing reads a metric before Cloud Monitoring has
it, runs on the whole program (tests/infra/program.py) because the wait follows the Cloud Run
resources declared outside the component. The component's plumbing (uptime check, labels,
parents, outputs) is tests/infra/test_monitoring_component.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest

from tests.infra.monitoring import (
    DASHBOARD,
    POLICY,
    READY,
    SLO,
    condition_on,
    dashboard_filters,
    declare,
    monitoring_args,
    of_type,
    policy_on,
    run_component,
    seconds,
    thresholds,
)

BURN = re.compile(r'^select_slo_burn_rate\("([^"]+)", "(\d+)s"\)$')


def test_every_alert_policy_documents_its_threshold_in_markdown(declared: list[Any]) -> None:
    policies = of_type(declared, POLICY)
    assert len(policies) >= 9
    for policy in policies:
        doc = policy.get("documentation") or {}
        assert doc.get("mimeType") == "text/markdown", policy["displayName"]
        assert "**Why this threshold:**" in doc.get("content", ""), policy["displayName"]
        assert len(doc["content"]) > 200, f"{policy['displayName']}: an argument, not a title"


def test_every_alert_policy_has_a_threshold_held_for_at_least_a_minute(
    declared: list[Any],
) -> None:
    for policy in of_type(declared, POLICY):
        held = [
            t
            for t in thresholds(policy)
            if t.get("thresholdValue") is not None and seconds(t["duration"]) >= 60
        ]
        assert held, f"{policy['displayName']}: no threshold lasting >= 60 s"


def test_every_alert_policy_is_labelled_page_or_ticket(declared: list[Any]) -> None:
    for policy in of_type(declared, POLICY):
        label = policy["userLabels"]["severity"]
        assert label in {"page", "ticket"}, policy["displayName"]
        assert policy["severity"] == ("CRITICAL" if label == "page" else "WARNING")


def test_pipeline_alerts_fire_on_stuck_subscriber_dead_letters_and_stale_data(
    declared: list[Any],
) -> None:
    policies = of_type(declared, POLICY)
    oldest = policy_on(policies, "subscription/oldest_unacked_message_age")
    stuck = condition_on(oldest, "oldest_unacked_message_age")
    assert (stuck["thresholdValue"], seconds(stuck["duration"])) == (300, 300)
    assert 'resource.label."subscription_id"="flight-events-sub"' in stuck["filter"]
    assert oldest["userLabels"]["severity"] == "page"

    dead = policy_on(policies, "flightpipe_messages_dead_lettered_total")
    assert dead["combiner"] == "OR"
    ratio = condition_on(dead, "flightpipe_messages_dead_lettered_total")
    assert "flightpipe_messages_received_total" in ratio["denominatorFilter"]
    assert (ratio["thresholdValue"], seconds(ratio["duration"])) == (0.01, 600)
    topic = condition_on(dead, "topic/send_message_operation_count")
    assert 'resource.label."topic_id"="flight-events-dlq"' in topic["filter"]
    assert seconds(topic["duration"]) == 600 and topic["thresholdValue"] > 0

    fresh = condition_on(policy_on(policies, "flightpipe_data_freshness_seconds"), "freshness")
    assert (fresh["thresholdValue"], seconds(fresh["duration"])) == (600, 600)
    assert fresh["evaluationMissingData"] == "EVALUATION_MISSING_DATA_ACTIVE"


# Cloud Monitoring's cross-series reducers over one aligned point per series
# (https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.alertPolicies#reducer).
REDUCE: dict[str, Callable[[list[float]], float]] = {
    "REDUCE_MIN": min,
    "REDUCE_MAX": max,
    "REDUCE_MEAN": lambda v: sum(v) / len(v),
}


def test_one_idle_subscriber_instance_does_not_make_the_pipeline_stale(
    declared: list[Any],
) -> None:
    """Prod runs two instances, each reporting its own newest commit: while one commits every
    few seconds and the other gets no message, the warehouse is fresh and the page stays quiet;
    when both stop, it fires."""
    policies = of_type(declared, POLICY)
    fresh = condition_on(policy_on(policies, "flightpipe_data_freshness_seconds"), "freshness")
    reducer = REDUCE[fresh["aggregations"][0]["crossSeriesReducer"]]
    busy, idle = 4.0, 1800.0
    assert reducer([busy, idle]) <= fresh["thresholdValue"]
    assert reducer([idle, idle + 60]) > fresh["thresholdValue"]


def test_api_alerts_fire_on_5xx_ratio_latency_and_failed_uptime_checks(
    declared: list[Any],
) -> None:
    policies = of_type(declared, POLICY)
    errors = [
        t
        for p in policies
        for t in thresholds(p)
        if "run.googleapis.com/request_count" in t["filter"] and "denominatorFilter" in t
    ]
    assert len(errors) == 1
    assert '"5xx"' in errors[0]["filter"] and '"5xx"' not in errors[0]["denominatorFilter"]
    assert (errors[0]["thresholdValue"], seconds(errors[0]["duration"])) == (0.02, 300)

    latency = condition_on(policy_on(policies, "run.googleapis.com/request_latencies"), "latenc")
    assert latency["aggregations"][0]["crossSeriesReducer"] == "REDUCE_PERCENTILE_95"
    assert (latency["thresholdValue"], seconds(latency["duration"])) == (500, 600)

    uptime = condition_on(policy_on(policies, "uptime_check/check_passed"), "check_passed")
    assert 'metric.label."check_id"="mon-uptime-check-id"' in uptime["filter"]
    assert uptime["aggregations"][0]["crossSeriesReducer"] == "REDUCE_COUNT_FALSE"


def test_notification_channels_reach_every_policy(declared: list[Any]) -> None:
    for policy in of_type(declared, POLICY):
        assert policy["notificationChannels"] == ["projects/p/notificationChannels/123"]


def test_prod_refuses_to_deploy_alerts_without_a_notification_channel() -> None:
    with pytest.raises(ValueError, match="notificationChannels"):
        monitoring_args(env="prod", notification_channels=[])
    assert monitoring_args(env="prod").notification_channels


def test_custom_metrics_filter_on_the_resource_and_namespace_the_collector_sets(
    declared: list[Any],
) -> None:
    # components/collector.py: every scraped series is a prometheus_target whose namespace is the
    # Cloud Run resource's name; the pipeline's series come only from the subscriber.
    (dashboard,) = of_type(declared, DASHBOARD)
    filters = dashboard_filters(json.loads(dashboard["dashboardJson"]))
    filters += [t["filter"] for p in of_type(declared, POLICY) for t in thresholds(p)]
    filters += [
        t["denominatorFilter"]
        for p in of_type(declared, POLICY)
        for t in thresholds(p)
        if t.get("denominatorFilter")
    ]
    for slo in of_type(declared, SLO):
        if "windowsBasedSli" in slo:
            filters.append(slo["windowsBasedSli"]["metricMeanInRange"]["timeSeries"])
    custom = [f for f in filters if "prometheus.googleapis.com/" in f]
    assert len(custom) >= 8
    pipeline = ("messages_", "data_freshness")
    for flt in custom:
        assert 'resource.type="prometheus_target"' in flt, flt
        want = "flightpipe-subscriber" if any(m in flt for m in pipeline) else "flightpipe-api"
        assert f'resource.label."namespace"="{want}"' in flt, flt
    # The subscriber (a worker pool) is no cloud_run_revision: nothing charts it as one.
    for flt in filters:
        if 'resource.type="cloud_run_revision"' in flt:
            assert "flightpipe-subscriber" not in flt, flt


def test_policies_still_validate_without_notification_channels() -> None:
    resources = declare(lambda: monitoring_args(notification_channels=[]))
    policies = of_type(resources, POLICY)
    assert len(policies) == len(of_type(declare(), POLICY))
    for policy in policies:
        assert not policy.get("notificationChannels")
        assert policy["conditions"] and policy["documentation"]["content"]
        assert policy["combiner"] in {"OR", "AND"}


def test_dashboard_json_is_valid_and_charts_every_required_metric(declared: list[Any]) -> None:
    (dashboard,) = of_type(declared, DASHBOARD)
    body = json.loads(dashboard["dashboardJson"])
    filters = dashboard_filters(body)
    for metric in (
        "prometheus.googleapis.com/flightpipe_messages_written_total/counter",
        "pubsub.googleapis.com/subscription/num_undelivered_messages",
        "pubsub.googleapis.com/subscription/oldest_unacked_message_age",
        "prometheus.googleapis.com/flightpipe_messages_dead_lettered_total/counter",
        "pubsub.googleapis.com/topic/send_message_operation_count",
        "prometheus.googleapis.com/flightpipe_data_freshness_seconds/gauge",
        "run.googleapis.com/request_count",
        "run.googleapis.com/request_latencies",
        "prometheus.googleapis.com/flightpipe_http_request_duration_seconds/histogram",
        "run.googleapis.com/container/instance_count",
    ):
        assert any(f'metric.type="{metric}"' in f for f in filters), f"not charted: {metric}"
    queries = [
        ds["timeSeriesQuery"]
        for tile in body["mosaicLayout"]["tiles"]
        for ds in tile["widget"]["xyChart"]["dataSets"]
    ]
    plain = [q["timeSeriesFilter"] for q in queries if "timeSeriesFilter" in q]
    for metric in ("run.googleapis.com/request_latencies", "flightpipe_http_request_duration"):
        charted = {f["aggregation"]["crossSeriesReducer"] for f in plain if metric in f["filter"]}
        assert {f"REDUCE_PERCENTILE_{p}" for p in ("50", "95", "99")} <= charted, metric
    by_route = [f for f in plain if "flightpipe_http_request_duration" in f["filter"]]
    assert all("metric.label.route" in f["aggregation"]["groupByFields"] for f in by_route)
    (ratio,) = [q["timeSeriesFilterRatio"] for q in queries if "timeSeriesFilterRatio" in q]
    assert '"5xx"' in ratio["numerator"]["filter"]
    assert '"5xx"' not in ratio["denominator"]["filter"]


def test_dashboard_tiles_fit_the_grid_without_overlapping(declared: list[Any]) -> None:
    (dashboard,) = of_type(declared, DASHBOARD)
    layout = json.loads(dashboard["dashboardJson"])["mosaicLayout"]
    cells: set[tuple[int, int]] = set()
    for tile in layout["tiles"]:
        assert tile["xPos"] + tile["width"] <= layout["columns"]
        area = {
            (x, y)
            for x in range(tile["xPos"], tile["xPos"] + tile["width"])
            for y in range(tile["yPos"], tile["yPos"] + tile["height"])
        }
        assert not cells & area, tile["widget"]["title"]
        cells |= area


def test_three_slos_with_goals_below_one_over_rolling_periods(declared: list[Any]) -> None:
    slos = {s["sloId"]: s for s in of_type(declared, SLO)}
    assert set(slos) == {"api-availability", "api-latency", "data-freshness"}
    for slo in slos.values():
        assert 0 < slo["goal"] < 1 and slo["goal"] <= 0.999  # the API's upper bound
        assert slo["rollingPeriodDays"] >= 7 and "calendarPeriod" not in slo
    ratio = slos["api-availability"]["requestBasedSli"]["goodTotalRatio"]
    assert '"5xx"' in ratio["badServiceFilter"] and '"5xx"' not in ratio["totalServiceFilter"]
    cut = slos["api-latency"]["requestBasedSli"]["distributionCut"]
    assert "run.googleapis.com/request_latencies" in cut["distributionFilter"]
    assert cut["range"]["max"] == 300
    windows = slos["data-freshness"]["windowsBasedSli"]
    assert seconds(windows["windowPeriod"]) == 60
    assert "flightpipe_data_freshness_seconds" in windows["metricMeanInRange"]["timeSeries"]
    assert windows["metricMeanInRange"]["range"]["max"] == 300


def test_burn_rate_alerts_page_at_14_4x_1h_and_6x_6h_and_ticket_at_1x_3d(
    declared: list[Any],
) -> None:
    tiers: dict[tuple[float, int], str] = {}
    for policy in of_type(declared, POLICY):
        burns = [(t, BURN.match(t["filter"])) for t in thresholds(policy)]
        if not any(m for _, m in burns):
            continue
        assert all(m for _, m in burns), "a burn-rate policy mixes in other conditions"
        assert policy["combiner"] == "AND", "multi-window: both windows must burn"
        factors = {t["thresholdValue"] for t, _ in burns}
        windows = sorted(int(m.group(2)) for _, m in burns if m)
        assert len(factors) == 1 and len(windows) == 2 and windows[0] < windows[1]
        for _, m in burns:
            assert m and m.group(1).endswith("/serviceLevelObjectives/api-availability")
        tiers[(factors.pop(), windows[1])] = policy["userLabels"]["severity"]
    assert tiers == {(14.4, 3600): "page", (6.0, 6 * 3600): "page", (1.0, 3 * 86400): "ticket"}


def test_without_a_subscriber_nothing_watches_the_subscriber_metrics() -> None:
    resources = declare(lambda: monitoring_args(has_subscriber=False))
    slos = {s["sloId"] for s in of_type(resources, SLO)}
    assert slos == {"api-availability", "api-latency"}
    for policy in of_type(resources, POLICY):
        for t in thresholds(policy):
            assert "flightpipe_" not in t["filter"], policy["displayName"]
    (dashboard,) = of_type(resources, DASHBOARD)
    assert "pubsub.googleapis.com" in dashboard["dashboardJson"]
    assert "flightpipe_messages_written_total" not in dashboard["dashboardJson"]


def test_custom_metric_types_are_the_collectors_own_names_and_kinds(declared: list[Any]) -> None:
    from flightpipe import telemetry

    collectors = {
        (telemetry.exposed_name(c), telemetry.metric_type(c))
        for c in vars(telemetry).values()
        if isinstance(c, telemetry.Collector)
    }
    (dashboard,) = of_type(declared, DASHBOARD)
    text = dashboard["dashboardJson"] + json.dumps(
        of_type(declared, POLICY) + of_type(declared, SLO)
    )
    used = set(re.findall(r"prometheus\.googleapis\.com/(\w+)/(\w+)", text))
    assert len(used) >= 5
    assert sorted(used - collectors) == []


# --- The program: nothing reads a metric Cloud Monitoring has not received -------------------
# Cloud Monitoring refuses an alert policy on a metric type it has never received (404 "Cannot
# find metric(s) that match type", hashicorp/terraform-provider-google#11102;
# world-federation-of-advertisers/cross-media-measurement#4350), and Managed Prometheus creates a
# type at its first write. So an alert policy, SLO or dashboard may read only Google's own metrics
# (metrics.BUILT_IN_PREFIXES: https://cloud.google.com/monitoring/api/metrics_gcp) or a type a
# MetricReady resource it waits for has seen arrive, after the Cloud Run resource exporting it;
# and that service must expose the metric from its first scrape (tests/first_scrape.py), or the
# wait would last until its first event.
_METRIC_TYPE = re.compile(r'metric\.type\s*=\s*\\*"([\w./-]+?)\\*"')
_EXPORTING_RESOURCE = {
    "api": ("gcp:cloudrunv2/service:Service", "flightpipe-api"),
    "subscriber": ("gcp:cloudrunv2/workerPool:WorkerPool", "flightpipe-subscriber"),
}
_FIRST_SCRAPE: dict[str, set[str]] = {}


def _served_from_first_scrape(exporter: str) -> set[str]:
    from tests.first_scrape import families, first_scrape

    if exporter not in _FIRST_SCRAPE:
        _FIRST_SCRAPE[exporter] = families(first_scrape(exporter))
    return _FIRST_SCRAPE[exporter]


def test_nothing_reads_a_metric_before_cloud_monitoring_has_received_it(graph: Any) -> None:
    from components.monitoring import metrics as m

    from flightpipe import telemetry

    family = {
        m.managed_prometheus(c): telemetry.family_name(c)
        for c in vars(telemetry).values()
        if isinstance(c, telemetry.Collector)
    }
    readers = graph.of_type(POLICY, SLO, DASHBOARD)
    assert len(readers) >= 10
    waited = 0
    for reader in readers:
        read = set(_METRIC_TYPE.findall(json.dumps(reader.inputs)))
        before = graph.depends_on(reader)
        ready = {r.inputs["metricType"]: r for r in before if r.type == READY}
        for metric in sorted(read):
            if metric.startswith(m.BUILT_IN_PREFIXES):
                continue
            assert metric in ready, f"{reader.name} reads {metric} without waiting for it"
            exporter = m.EXPORTED_BY[metric]
            typ, name = _EXPORTING_RESOURCE[exporter]
            services = [r for r in graph.depends_on(ready[metric]) if r.type == typ]
            assert [r.inputs["name"] for r in services] == [name], f"{metric}: {name} first"
            assert family[metric] in _served_from_first_scrape(exporter), (
                f"{metric}: {exporter} does not serve it before its first event"
            )
            waited += 1
    custom = graph.config["flightpipe:ingestMode"] == "subscriber"
    assert waited >= (5 if custom else 1)


def test_a_metric_ready_waits_once_per_type_for_the_project_it_reads(graph: Any) -> None:
    ready = graph.of_type(READY)
    types = [r.inputs["metricType"] for r in ready]
    assert len(types) == len(set(types))
    for r in ready:
        assert r.inputs["project"] == graph.config["gcp:project"]
        assert r.inputs["timeoutSeconds"] >= 600  # Google: "up to 10 minutes to become available"


def test_the_dashboard_waits_for_the_apis_own_metric_without_failing_the_deploy() -> None:
    """A scaled-to-zero API exports its metrics only while it serves: its wait is optional, and
    until Cloud Monitoring has the metric the dashboard leaves the by-route chart out."""
    route_metric = "flightpipe_http_request_duration_seconds"
    waits = {r.inputs["metricType"]: r.inputs for r in declare() if r.typ == READY}
    optional = {t for t, inputs in waits.items() if not inputs["required"]}
    assert optional == {f"prometheus.googleapis.com/{route_metric}/histogram"}
    (charted,) = of_type(declare(), DASHBOARD)
    (bare,) = of_type(run_component(received=False)[0].resources, DASHBOARD)
    assert route_metric in charted["dashboardJson"]
    assert route_metric not in bare["dashboardJson"]
    assert len(json.loads(bare["dashboardJson"])["mosaicLayout"]["tiles"]) == (
        len(json.loads(charted["dashboardJson"])["mosaicLayout"]["tiles"]) - 1
    )
