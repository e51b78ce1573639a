"""What the monitoring reads: metric types, monitored-resource types and filters on them.

The custom metrics are the subscriber's and the API's Prometheus collectors (`flightpipe.telemetry`)
as Managed Service for Prometheus stores them: `prometheus.googleapis.com/<name>/<kind>`, with the
name and kind taken from the collector's own definition (`telemetry.exposed_name`,
`telemetry.metric_type`), so a renamed collector renames every chart, alert and SLO with it. They
live on the `prometheus_target` resource whose `namespace` label is the Cloud Run resource's name
(components/collector.py sets it; the pipeline's series come only from the subscriber's namespace).
They are not scoped by environment: one project per environment is assumed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

import pulumi

from components.collector import RESOURCE_TYPE
from flightpipe import telemetry


def managed_prometheus(collector: telemetry.Collector) -> str:
    """The Cloud Monitoring metric type of one of flightpipe's Prometheus collectors."""
    name, kind = telemetry.exposed_name(collector), telemetry.metric_type(collector)
    return f"prometheus.googleapis.com/{name}/{kind}"


WRITTEN: Final = managed_prometheus(telemetry.MESSAGES_WRITTEN)
RECEIVED: Final = managed_prometheus(telemetry.MESSAGES_RECEIVED)
DEAD_LETTERED: Final = managed_prometheus(telemetry.MESSAGES_DEAD_LETTERED)
FRESHNESS: Final = managed_prometheus(telemetry.DATA_FRESHNESS)
HTTP_DURATION: Final = managed_prometheus(telemetry.HTTP_DURATION)
WRITE_FAILURES: Final = telemetry.exposed_name(telemetry.WRITE_FAILURES)
# Google's own metrics (Cloud Monitoring's metrics list for pubsub, run and monitoring).
UNDELIVERED: Final = "pubsub.googleapis.com/subscription/num_undelivered_messages"
OLDEST_UNACKED: Final = "pubsub.googleapis.com/subscription/oldest_unacked_message_age"
TOPIC_SENDS: Final = "pubsub.googleapis.com/topic/send_message_operation_count"
RUN_REQUESTS: Final = "run.googleapis.com/request_count"
RUN_LATENCIES: Final = "run.googleapis.com/request_latencies"
RUN_INSTANCES: Final = "run.googleapis.com/container/instance_count"
UPTIME_PASSED: Final = "monitoring.googleapis.com/uptime_check/check_passed"

PROM: Final = RESOURCE_TYPE  # the resource the collector's exporter writes
RUN: Final = "cloud_run_revision"
SUBSCRIPTION: Final = "pubsub_subscription"
TOPIC: Final = "pubsub_topic"
UPTIME_URL: Final = "uptime_url"
IS_5XX: Final = 'metric.label."response_code_class"="5xx"'


def short(name: str) -> str:
    """The short name of a resource given as a short name or a full `projects/...` path."""
    return name.rstrip("/").rsplit("/", 1)[-1]


def filter_str(
    metric: str, resource: str, labels: Mapping[str, str] | None = None, extra: Sequence[str] = ()
) -> str:
    """A Monitoring filter: metric and resource type, resource labels, extra clauses."""
    parts = [f'metric.type="{metric}"', f'resource.type="{resource}"']
    parts += [f'resource.label."{k}"="{short(v)}"' for k, v in (labels or {}).items()]
    return " AND ".join([*parts, *extra])


def output_filter(
    metric: str, resource: str, labels: Mapping[str, pulumi.Input[str]], extra: Sequence[str] = ()
) -> pulumi.Output[str]:
    """`filter_str` over label values that are Pulumi inputs (resolved at deploy time)."""
    return pulumi.Output.all(**labels).apply(lambda v: filter_str(metric, resource, v, extra))


# The exporters of the custom metrics: the API serves `API_REGISTRY`, the subscriber the rest
# (flightpipe.telemetry's module docstring).
API: Final = "api"
SUBSCRIBER: Final = "subscriber"
_API_FAMILIES: Final = frozenset(f.name for f in telemetry.API_REGISTRY.collect())
EXPORTED_BY: Final[dict[str, str]] = {
    managed_prometheus(c): API if telemetry.family_name(c) in _API_FAMILIES else SUBSCRIBER
    for c in vars(telemetry).values()
    if isinstance(c, telemetry.Collector)
}
# Google's own metrics exist in every project: nothing to wait for (Cloud Monitoring's metrics
# list: https://cloud.google.com/monitoring/api/metrics_gcp).
BUILT_IN_PREFIXES: Final = (
    "run.googleapis.com/",
    "pubsub.googleapis.com/",
    "monitoring.googleapis.com/uptime_check/",
)
