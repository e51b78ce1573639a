"""The environment's dashboard: pipeline, Pub/Sub, API and instance charts, built from dicts."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pulumi
import pulumi_gcp as gcp

from components.monitoring import metrics as m
from components.monitoring import thresholds as t
from components.monitoring.metrics import filter_str
from components.monitoring.scope import Scope


def _q(flt: str, aligner: str, reducer: str, *group_by: str) -> dict[str, Any]:
    agg = {"alignmentPeriod": "60s", "perSeriesAligner": aligner, "crossSeriesReducer": reducer}
    return {"timeSeriesFilter": {"filter": flt, "aggregation": {**agg, "groupByFields": group_by}}}


def _chart(title: str, y: str, thresholds: Sequence[float], *queries: Any) -> dict[str, Any]:
    data = [{"timeSeriesQuery": q, "plotType": "LINE"} for q in queries]
    thr = [{"value": v} for v in thresholds]
    chart = {"dataSets": data, "thresholds": thr, "yAxis": {"label": y, "scale": "LINEAR"}}
    return {"title": title, "xyChart": chart}


def dashboard_json(
    title: str,
    labels: Mapping[str, str],
    names: Mapping[str, str],
    has_subscriber: bool = True,
    by_route: bool = True,
) -> str:
    """The dashboard as JSON.

    `names`: `api`, `subscription`, `dlq_topic`, optionally `dlq_subscription` and `subscriber`
    (the subscriber's Cloud Run service, for the instance chart). `by_route`: chart the API's
    own per-route latency (only once Cloud Monitoring has that metric: `dashboard`).
    """
    prom, run, sub_type = m.PROM, m.RUN, m.SUBSCRIPTION
    api = {"service_name": names["api"]}
    api_ns = {"namespace": names["api"]}
    sub_ns = {"namespace": names.get("subscriber", "")}
    sub = {"subscription_id": names["subscription"]}
    requests = filter_str(m.RUN_REQUESTS, run, api)
    errors = filter_str(m.RUN_REQUESTS, run, api, [m.IS_5XX])
    latencies = filter_str(m.RUN_LATENCIES, run, api)
    route_filter = filter_str(m.HTTP_DURATION, prom, api_ns)
    # The API's instances as Cloud Run counts them (a revision's resource); a worker pool is no
    # `cloud_run_revision`, so the subscriber's are counted as the instances whose freshness
    # series is being scraped (one series per instance; see collector.py on instance ids).
    instances = [
        _q(filter_str(m.RUN_INSTANCES, run, api), "ALIGN_MAX", "REDUCE_SUM", 'metric.label."state"')
    ]
    backlog = [_q(filter_str(m.UNDELIVERED, sub_type, sub), "ALIGN_MAX", "REDUCE_SUM")]
    if "dlq_subscription" in names:
        dlq_sub = {"subscription_id": names["dlq_subscription"]}
        backlog.append(_q(filter_str(m.UNDELIVERED, sub_type, dlq_sub), "ALIGN_MAX", "REDUCE_SUM"))
    dlq_topic = filter_str(m.TOPIC_SENDS, m.TOPIC, {"topic_id": names["dlq_topic"]})
    dead = [_q(dlq_topic, "ALIGN_RATE", "REDUCE_SUM")]
    pipeline: list[dict[str, Any]] = []
    if has_subscriber:
        reasons = _q(
            filter_str(m.DEAD_LETTERED, prom, sub_ns),
            "ALIGN_RATE",
            "REDUCE_SUM",
            "metric.label.reason",
        )
        dead.append(reasons)
        written = _q(filter_str(m.WRITTEN, prom, sub_ns), "ALIGN_RATE", "REDUCE_SUM")
        # The freshest instance: the alert's reducer (alerts.py).
        fresh = _q(filter_str(m.FRESHNESS, prom, sub_ns), "ALIGN_MAX", "REDUCE_MIN")
        instances.append(_q(filter_str(m.FRESHNESS, prom, sub_ns), "ALIGN_MAX", "REDUCE_COUNT"))
        pipeline = [
            _chart("Ingest rate (messages written/s)", "msg/s", [], written),
            _chart("Data freshness (s)", "s", [t.FRESHNESS_TARGET_S, t.FRESHNESS.value], fresh),
        ]
    ratio = {
        "timeSeriesFilterRatio": {
            "numerator": _q(errors, "ALIGN_RATE", "REDUCE_SUM")["timeSeriesFilter"],
            "denominator": _q(requests, "ALIGN_RATE", "REDUCE_SUM")["timeSeriesFilter"],
        }
    }
    oldest = _q(filter_str(m.OLDEST_UNACKED, sub_type, sub), "ALIGN_MAX", "REDUCE_MAX")
    by_class = _q(requests, "ALIGN_RATE", "REDUCE_SUM", 'metric.label."response_code_class"')
    pct = ("50", "95", "99")
    run_pcts = [_q(latencies, "ALIGN_DELTA", f"REDUCE_PERCENTILE_{p}") for p in pct]
    route_pcts = [
        _q(route_filter, "ALIGN_DELTA", f"REDUCE_PERCENTILE_{p}", "metric.label.route") for p in pct
    ]
    widgets = [
        *pipeline,
        _chart("Pub/Sub backlog (subscription, dead-letter)", "messages", [], *backlog),
        _chart("Oldest unacked message age (s)", "s", [t.OLDEST_UNACKED.value], oldest),
        _chart("Dead-letter rate (topic; by reason)", "msg/s", [], *dead),
        _chart("API requests by status class", "req/s", [], by_class),
        _chart("API 5xx ratio", "ratio", [t.API_5XX_RATIO.value], ratio),
        _chart("API latency p50/p95/p99 (ms, Cloud Run)", "ms", [t.API_P95_MS.value], *run_pcts),
        *(
            [_chart("API latency p50/p95/p99 by route (s, app)", "s", [], *route_pcts)]
            if by_route
            else []
        ),
        _chart(
            "Instances (API by state; subscriber instances scraped)", "instances", [], *instances
        ),
    ]
    tiles = [
        {"xPos": (i % 2) * 24, "yPos": (i // 2) * 16, "width": 24, "height": 16, "widget": w}
        for i, w in enumerate(widgets)
    ]
    layout = {"columns": 48, "tiles": tiles}
    return json.dumps({"displayName": title, "labels": dict(labels), "mosaicLayout": layout})


def dashboard(scope: Scope) -> gcp.monitoring.Dashboard:
    """Declare the dashboard `{component}-dashboard`."""
    a = scope.args
    names: dict[str, pulumi.Input[str]] = {
        "api": a.api_service_name,
        "subscription": a.subscription_name,
        "dlq_topic": a.dead_letter_topic_name,
    }
    if a.dead_letter_subscription_name is not None:
        names["dlq_subscription"] = a.dead_letter_subscription_name
    if a.subscriber_service_name is not None:
        names["subscriber"] = a.subscriber_service_name
    title, labels = f"flightpipe ({a.env})", scope.labels
    # The API exports its own metrics only while it serves (scale to zero, request-billed CPU):
    # its wait never fails the deploy, and the by-route chart joins once the metric exists.
    routes = scope.metric_ready(m.HTTP_DURATION, required=False)
    body = pulumi.Output.all(names=pulumi.Output.all(**names), received=routes.received).apply(
        lambda v: dashboard_json(title, labels, v["names"], a.has_subscriber, bool(v["received"]))
    )
    return gcp.monitoring.Dashboard(
        f"{scope.name}-dashboard",
        project=a.project,
        dashboard_json=body,
        opts=scope.after(*charted(a.has_subscriber)),
    )


def charted(has_subscriber: bool) -> tuple[str, ...]:
    """The metric types `dashboard_json` reads."""
    google = (m.RUN_REQUESTS, m.RUN_LATENCIES, m.RUN_INSTANCES, m.UNDELIVERED, m.OLDEST_UNACKED)
    pipeline = (m.DEAD_LETTERED, m.WRITTEN, m.FRESHNESS) if has_subscriber else ()
    return (*google, m.TOPIC_SENDS, m.HTTP_DURATION, *pipeline)
