"""Policies of the Monitoring component, checked on the resources it declares under Pulumi mocks.

The component is declared under `pulumi.runtime.set_mocks` (pulumi/examples, testing-unit-py); the
mocks record every resource's inputs and play the provider for the two outputs the component reads
back (an SLO's full name, an uptime check's id). Tests assert properties any correct monitoring
setup must have (documented thresholds, SLO goals, burn-rate tiers, labels), not echoes of inputs.
Self-contained: its own mocks, and `infra/` on `sys.path` the way `pulumi` runs the program.

Why one module of ~570 lines: its own mocks and one module-scoped declaration of the component
serve every policy (alerts, SLOs, dashboard, uptime) that checks it; the last rule, that nothing
reads a metric before Cloud Monitoring has it, runs on the whole program (tests/infra/program.py)
because the wait follows the Cloud Run resources declared outside the component.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pulumi
import pulumi_gcp as gcp
import pytest
from google.protobuf.json_format import MessageToDict
from pulumi.runtime.mocks import MockMonitor

INFRA = Path(__file__).resolve().parents[2] / "infra"
if str(INFRA) not in sys.path:
    sys.path.insert(0, str(INFRA))

from components.monitoring import Monitoring, MonitoringArgs  # noqa: E402

POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
SLO = "gcp:monitoring/slo:Slo"
UPTIME = "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig"
DASHBOARD = "gcp:monitoring/dashboard:Dashboard"
# Project level: a service's own policy would need the deployer to hold run.services.setIamPolicy
# (infra/grants.py, PROJECT_GRANTED_ROLES).
INVOKER = "gcp:projects/iAMMember:IAMMember"
AGENT = "gcp:projects/serviceIdentity:ServiceIdentity"
AGENT_MEMBER = "serviceAccount:service-42@gcp-sa-monitoring-notification.iam.gserviceaccount.com"
COMPONENT = "flightpipe:monitoring:Monitoring"
READY = "pulumi-python:dynamic:Resource"  # pulumi.dynamic.Resource's type (components/ready.py)
BURN = re.compile(r'^select_slo_burn_rate\("([^"]+)", "(\d+)s"\)$')
REQUIRED_LABELS = {"env": "dev", "app": "flightpipe", "managed-by": "pulumi"}


class RecordingMocks(pulumi.runtime.Mocks):
    """Records what the program declares; answers like the provider where the program reads back."""

    def __init__(self, received: bool = True) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []
        self.received = received  # what MetricReady's provider answers (components/ready.py)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(args)
        state = dict(args.inputs)
        if args.typ == READY:
            state["received"] = self.received
        if args.typ == SLO:
            service, slo_id = args.inputs["service"], args.inputs["sloId"]
            state["name"] = f"projects/p/services/{service}/serviceLevelObjectives/{slo_id}"
        if args.typ == UPTIME:
            state["uptimeCheckId"] = f"{args.name}-check-id"
        if args.typ == AGENT:  # what generateServiceIdentity answers for monitoring.googleapis.com
            state["member"] = AGENT_MEMBER
        return f"{args.name}_id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


def _args(**overrides: Any) -> MonitoringArgs:
    base: dict[str, Any] = {
        "project": "p",
        "env": "dev",
        "api_service_name": "flightpipe-api",
        "api_host": "https://flightpipe-api-abc-ew.a.run.app/",
        "subscription_name": "projects/p/subscriptions/flight-events-sub",
        "dead_letter_topic_name": "flight-events-dlq",
        "api_location": "europe-west1",
        "dead_letter_subscription_name": "flight-events-dlq-sub",
        "subscriber_service_name": "flightpipe-subscriber",
        "notification_channels": ["projects/p/notificationChannels/123"],
    }
    return MonitoringArgs(**{**base, **overrides})


class RecordingMonitor(MockMonitor):
    """Also records each registration's parent and dependencies, and registered outputs."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.parents: dict[str, str] = {}
        self.dependencies: dict[str, set[str]] = {}
        self.outputs: dict[str, dict[str, Any]] = {}

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (the gRPC method's name)
        self.parents[request.name] = request.parent
        self.dependencies[request.name] = set(request.dependencies)
        return super().RegisterResource(request)

    def RegisterResourceOutputs(self, request: Any) -> Any:  # noqa: N802
        self.outputs[request.urn] = MessageToDict(request.outputs)
        return super().RegisterResourceOutputs(request)


def run_program(
    make_args: Callable[[], MonitoringArgs] = _args,
    check: Callable[[Monitoring], pulumi.Output[Any] | None] | None = None,
    depends_on_apis: bool = False,
    received: bool = True,
) -> tuple[RecordingMocks, RecordingMonitor]:
    """Run a program declaring one `Monitoring("mon", ...)` under recording mocks."""
    mocks = RecordingMocks(received)
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, preview=False, monitor=monitor)

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any] | None:
        opts = None
        if depends_on_apis:
            apis = gcp.projects.Service("apis", project="p", service="monitoring.googleapis.com")
            opts = pulumi.ResourceOptions(depends_on=[apis])
        component = Monitoring("mon", make_args(), opts)
        return check(component) if check else None

    program()
    return mocks, monitor


def declare(
    make_args: Callable[[], MonitoringArgs] = _args,
) -> list[pulumi.runtime.MockResourceArgs]:
    """Every resource a `Monitoring("mon", make_args())` declares."""
    return run_program(make_args)[0].resources


@pytest.fixture(scope="module")
def declared() -> list[pulumi.runtime.MockResourceArgs]:
    return declare()


def of_type(resources: list[pulumi.runtime.MockResourceArgs], typ: str) -> list[dict[str, Any]]:
    return [r.inputs for r in resources if r.typ == typ]


def thresholds(policy: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for condition in policy["conditions"]:
        if "conditionThreshold" in condition:
            yield condition["conditionThreshold"]


def seconds(duration: str) -> int:
    assert duration.endswith("s"), duration
    return int(duration[:-1])


def policy_on(policies: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The one policy with a condition on `metric`."""
    found = [p for p in policies if any(metric in t["filter"] for t in thresholds(p))]
    assert len(found) == 1, f"{len(found)} policies watch {metric}"
    return found[0]


def condition_on(policy: dict[str, Any], metric: str) -> dict[str, Any]:
    return next(t for t in thresholds(policy) if metric in t["filter"])


def dashboard_filters(dashboard: dict[str, Any]) -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("filter"), str):
                found.append(node["filter"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard)
    return found


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
REDUCE = {"REDUCE_MIN": min, "REDUCE_MAX": max, "REDUCE_MEAN": lambda v: sum(v) / len(v)}


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
        _args(env="prod", notification_channels=[])
    assert _args(env="prod").notification_channels


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
    resources = declare(lambda: _args(notification_channels=[]))
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


def test_uptime_check_probes_healthz_over_https(declared: list[Any]) -> None:
    (check,) = of_type(declared, UPTIME)
    http = check["httpCheck"]
    assert http["path"] == "/healthz"
    assert http["useSsl"] is True and http["validateSsl"] is True and http["port"] == 443
    assert check["monitoredResource"]["type"] == "uptime_url"
    assert check["monitoredResource"]["labels"]["host"] == "flightpipe-api-abc-ew.a.run.app"


def test_uptime_check_passes_cloud_run_iam_as_the_monitoring_service_agent() -> None:
    mocks, monitor = run_program()
    (check,) = of_type(mocks.resources, UPTIME)
    assert check["httpCheck"]["serviceAgentAuthentication"] == {"type": "OIDC_TOKEN"}
    assert "authInfo" not in check["httpCheck"]  # no password, no shared secret
    (grant,) = [r for r in mocks.resources if r.typ == INVOKER]
    assert grant.inputs == {
        "project": "p",
        "role": "roles/run.invoker",
        "member": AGENT_MEMBER,
    }
    # The agent is made to exist (ServiceIdentity) before the grant names it.
    (agent,) = [r for r in mocks.resources if r.typ == AGENT]
    assert agent.inputs["service"] == "monitoring.googleapis.com"
    (agent_urn,) = [u for u in monitor.resources if u.endswith("::mon-uptime-agent")]
    assert agent_urn in monitor.dependencies[grant.name]


def test_uptime_check_accepts_the_host_as_an_output() -> None:
    host = "flightpipe-api-xyz.a.run.app"
    resources = declare(lambda: _args(api_host=pulumi.Output.from_input(host)))
    (check,) = of_type(resources, UPTIME)
    assert check["monitoredResource"]["labels"]["host"] == host


def test_every_resource_carries_the_env_app_and_managed_by_labels(declared: list[Any]) -> None:
    for resource in declared:
        if resource.typ in {COMPONENT, INVOKER, AGENT, READY}:  # no Google resource: no labels
            continue
        if resource.typ == DASHBOARD:
            labels = json.loads(resource.inputs["dashboardJson"])["labels"]
        else:
            labels = resource.inputs["userLabels"]
        assert REQUIRED_LABELS.items() <= labels.items(), resource.name


def test_child_names_derive_from_the_component_name(declared: list[Any]) -> None:
    names = [r.name for r in declared if r.typ != COMPONENT]
    assert all(n.startswith("mon-") for n in names)
    assert len(names) == len(set(names))


def test_without_a_subscriber_nothing_watches_the_subscriber_metrics() -> None:
    resources = declare(lambda: _args(has_subscriber=False))
    slos = {s["sloId"] for s in of_type(resources, SLO)}
    assert slos == {"api-availability", "api-latency"}
    for policy in of_type(resources, POLICY):
        for t in thresholds(policy):
            assert "flightpipe_" not in t["filter"], policy["displayName"]
    (dashboard,) = of_type(resources, DASHBOARD)
    assert "pubsub.googleapis.com" in dashboard["dashboardJson"]
    assert "flightpipe_messages_written_total" not in dashboard["dashboardJson"]


def test_component_exposes_the_dashboard_id_and_full_slo_names() -> None:
    seen: dict[str, Any] = {}

    def check(component: Monitoring) -> pulumi.Output[Any]:
        outputs = {"dashboard": component.dashboard_id, **component.slo_names}
        return pulumi.Output.all(**outputs).apply(seen.update)

    run_program(check=check)
    assert seen["dashboard"] == "mon-dashboard_id"
    assert set(seen) == {"dashboard", "api_availability", "api_latency", "data_freshness"}
    assert seen["data_freshness"].endswith("/serviceLevelObjectives/data-freshness")


def test_children_are_parented_to_the_component_and_wait_for_its_dependencies() -> None:
    mocks, monitor = run_program(depends_on_apis=True)
    (component_urn,) = [u for u in monitor.outputs if u.endswith("::mon")]
    (apis_urn,) = [u for u in monitor.resources if u.endswith("::apis")]
    children = [r.name for r in mocks.resources if r.typ.startswith("gcp:") and r.name != "apis"]
    assert [r for r in mocks.resources if r.typ == INVOKER]
    assert len(children) > 1
    for name in children:
        assert monitor.parents[name] == component_urn, name
        assert apis_urn in monitor.dependencies[name], f"{name} may start before the API is on"


def test_component_registers_its_dashboard_id_slo_names_and_uptime_check_id() -> None:
    _, monitor = run_program()
    (outputs,) = [o for u, o in monitor.outputs.items() if u.endswith("::mon")]
    assert set(outputs) == {"dashboard_id", "slo_names", "uptime_check_id"}
    assert set(outputs["slo_names"]) == {"api_availability", "api_latency", "data_freshness"}


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
    (bare,) = of_type(run_program(received=False)[0].resources, DASHBOARD)
    assert route_metric in charted["dashboardJson"]
    assert route_metric not in bare["dashboardJson"]
    assert len(json.loads(bare["dashboardJson"])["mosaicLayout"]["tiles"]) == (
        len(json.loads(charted["dashboardJson"])["mosaicLayout"]["tiles"]) - 1
    )
