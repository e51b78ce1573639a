"""Monitoring: the dashboard, alert policies, SLOs and the uptime check of one environment.

Contract: `Monitoring(name, MonitoringArgs(...))` declares, as children named `{name}-...`, one
Cloud Monitoring dashboard, the symptom alert policies (Pub/Sub backlog age, dead-lettering, data
freshness, API 5xx ratio, API p95 latency, uptime), three SLOs (API availability, API latency, data
freshness) with multi-window burn-rate alerts on availability, and an HTTPS uptime check on
`/healthz` that authenticates with an OIDC token of the Cloud Monitoring notification service
agent, made to exist first (`gcp.projects.ServiceIdentity`, so the grant never names an account
that is not there yet), plus that agent's `roles/run.invoker` on the API service (the API is
IAM-protected; without it every probe gets a 403 and the uptime alert pages forever). Prod must
name notification channels: an alert nobody receives is no alert (`MonitoringArgs` refuses).
Every threshold is argued twice: in a comment here and in the policy's markdown documentation,
which Cloud Monitoring attaches to each notification for the on-call. Severity is `page` (act
now) or `ticket` (act this working day), as the `severity` user label (routing) and the policy's
`severity` field (the console).

Names (`subscription_name`, topics, services) are the short resource names that label the metrics
(`subscription_id`, `topic_id`, `service_name`); full `projects/...` paths are shortened. The custom
metrics are the subscriber's and the API's Prometheus collectors (`flightpipe.telemetry`) as Managed
Service for Prometheus stores them: `prometheus.googleapis.com/<name>/<counter|gauge|histogram>`, on
the `prometheus_target` resource whose `namespace` label is the Cloud Run resource's name (what
components/collector.py sets; the pipeline's series come only from the subscriber's namespace).
They are not scoped by environment: one project per environment is assumed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import pulumi
import pulumi_gcp as gcp

_PROM: Final = "prometheus.googleapis.com"
WRITTEN: Final = f"{_PROM}/flightpipe_messages_written_total/counter"
RECEIVED: Final = f"{_PROM}/flightpipe_messages_received_total/counter"
DEAD_LETTERED: Final = f"{_PROM}/flightpipe_messages_dead_lettered_total/counter"
FRESHNESS: Final = f"{_PROM}/flightpipe_data_freshness_seconds/gauge"
HTTP_DURATION: Final = f"{_PROM}/flightpipe_http_request_duration_seconds/histogram"
UNDELIVERED: Final = "pubsub.googleapis.com/subscription/num_undelivered_messages"
OLDEST_UNACKED: Final = "pubsub.googleapis.com/subscription/oldest_unacked_message_age"
TOPIC_SENDS: Final = "pubsub.googleapis.com/topic/send_message_operation_count"
RUN_REQUESTS: Final = "run.googleapis.com/request_count"
RUN_LATENCIES: Final = "run.googleapis.com/request_latencies"
RUN_INSTANCES: Final = "run.googleapis.com/container/instance_count"
UPTIME_PASSED: Final = "monitoring.googleapis.com/uptime_check/check_passed"

# The SLOs. 28 days = four whole weeks, so every window holds the same weekdays and weekend traffic.
SLO_PERIOD_DAYS: Final = 28
AVAILABILITY_GOAL: Final = 0.995  # 3.4 h of full outage (or 0.5 % of requests) per 28 days
LATENCY_GOAL: Final = 0.95
LATENCY_THRESHOLD_MS: Final = 300.0
FRESHNESS_GOAL: Final = 0.99
FRESHNESS_TARGET_S: Final = 300.0
# (factor, long window, short window, debounce, severity): the SRE workbook's multi-window scheme.
BURN_RATES: Final[tuple[tuple[float, int, int, int, str], ...]] = (
    (14.4, 3600, 300, 300, "page"),  # 2.1 % of the 28-day budget in 1 h: budget gone in < 2 days
    (6.0, 21600, 1800, 300, "page"),  # 5.4 % in 6 h: budget gone in < 5 days
    (1.0, 259200, 21600, 3600, "ticket"),  # 10.7 % in 3 days: on course to miss the SLO
)
DEAD_LETTER_PER_MINUTE: Final = 10.0
_5XX: Final = 'metric.label."response_code_class"="5xx"'


@dataclass(frozen=True)
class MonitoringArgs:
    """What the monitoring of one environment watches."""

    project: pulumi.Input[str]
    env: str
    api_service_name: pulumi.Input[str]
    api_host: pulumi.Input[str]  # host of the API's URL; a full `https://...` URL is accepted
    subscription_name: pulumi.Input[str]
    dead_letter_topic_name: pulumi.Input[str]
    # Where the API service lives: the uptime check's service agent is granted run.invoker there.
    api_location: pulumi.Input[str]
    dead_letter_subscription_name: pulumi.Input[str] | None = None
    notification_channels: Sequence[pulumi.Input[str]] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    subscriber_service_name: pulumi.Input[str] | None = None
    # False when Pub/Sub's BigQuery subscription ingests: no subscriber exports the custom metrics.
    has_subscriber: bool = True

    def __post_init__(self) -> None:
        if self.env == "prod" and not self.notification_channels:
            raise ValueError(
                "config notificationChannels: prod needs at least one notification channel "
                "(projects/<project>/notificationChannels/<id>): its alerts would reach nobody"
            )
        if self.has_subscriber and self.subscriber_service_name is None:
            raise ValueError(
                "has_subscriber needs subscriber_service_name (its metrics' namespace)"
            )


# The service whose agent signs uptime checks' OIDC tokens:
# `service-<number>@gcp-sa-monitoring-notification.iam.gserviceaccount.com` (Cloud Monitoring's
# uptime-check docs; GoogleCloudPlatform/cloud-foundation-fabric#630 creates the same agent with
# google_project_service_identity for monitoring.googleapis.com, which is what ServiceIdentity is).
UPTIME_AGENT_SERVICE: Final = "monitoring.googleapis.com"
PROM: Final = "prometheus_target"  # components/collector.py: the resource the exporter writes


def _short(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1]


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


def filter_str(
    metric: str, resource: str, labels: Mapping[str, str] | None = None, extra: Sequence[str] = ()
) -> str:
    """A Monitoring filter: metric and resource type, resource labels, extra clauses."""
    parts = [f'metric.type="{metric}"', f'resource.type="{resource}"']
    parts += [f'resource.label."{k}"="{_short(v)}"' for k, v in (labels or {}).items()]
    return " AND ".join([*parts, *extra])


def _filter(
    metric: str, resource: str, labels: Mapping[str, pulumi.Input[str]], extra: Sequence[str] = ()
) -> pulumi.Output[str]:
    return pulumi.Output.all(**labels).apply(lambda v: filter_str(metric, resource, v, extra))


def _burn_rate(slo_name: pulumi.Output[str], window_s: int) -> pulumi.Output[str]:
    return slo_name.apply(lambda n: f'select_slo_burn_rate("{n}", "{window_s}s")')


_gcp_agg = gcp.monitoring.AlertPolicyConditionConditionThresholdAggregationArgs
_gcp_den_agg = gcp.monitoring.AlertPolicyConditionConditionThresholdDenominatorAggregationArgs


def _threshold(
    name: str,
    flt: pulumi.Input[str],
    value: float,
    duration_s: int,
    *,
    aligner: str | None = None,
    reducer: str | None = None,
    period_s: int = 60,
    denominator: pulumi.Input[str] | None = None,
    missing: str | None = None,
) -> gcp.monitoring.AlertPolicyConditionArgs:
    """`filter` (optionally / `denominator`) above `value` for `duration_s` seconds."""
    agg: dict[str, Any] = {}
    if aligner is not None:
        agg = {
            "alignment_period": f"{period_s}s",
            "per_series_aligner": aligner,
            "cross_series_reducer": reducer,
        }
    ratio = denominator is not None and bool(agg)
    return gcp.monitoring.AlertPolicyConditionArgs(
        display_name=name,
        condition_threshold=gcp.monitoring.AlertPolicyConditionConditionThresholdArgs(
            filter=flt,
            comparison="COMPARISON_GT",
            threshold_value=value,
            duration=f"{duration_s}s",
            aggregations=[_gcp_agg(**agg)] if agg else None,
            denominator_filter=denominator,
            denominator_aggregations=[_gcp_den_agg(**agg)] if ratio else None,
            evaluation_missing_data=missing,
        ),
    )


def _q(flt: str, aligner: str, reducer: str, *group_by: str) -> dict[str, Any]:
    agg = {"alignmentPeriod": "60s", "perSeriesAligner": aligner, "crossSeriesReducer": reducer}
    return {"timeSeriesFilter": {"filter": flt, "aggregation": {**agg, "groupByFields": group_by}}}


def _chart(title: str, y: str, thresholds: Sequence[float], *queries: Any) -> dict[str, Any]:
    data = [{"timeSeriesQuery": q, "plotType": "LINE"} for q in queries]
    thr = [{"value": t} for t in thresholds]
    chart = {"dataSets": data, "thresholds": thr, "yAxis": {"label": y, "scale": "LINEAR"}}
    return {"title": title, "xyChart": chart}


def dashboard_json(
    title: str, labels: Mapping[str, str], names: Mapping[str, str], has_subscriber: bool = True
) -> str:
    """The dashboard as JSON, built from dicts.

    `names`: `api`, `subscription`, `dlq_topic`, optionally `dlq_subscription` and `subscriber`
    (the subscriber's Cloud Run service, for the instance chart).
    """
    prom, run, sub_type = PROM, "cloud_run_revision", "pubsub_subscription"
    api = {"service_name": names["api"]}
    api_ns = {"namespace": names["api"]}
    sub_ns = {"namespace": names.get("subscriber", "")}
    sub = {"subscription_id": names["subscription"]}
    requests = filter_str(RUN_REQUESTS, run, api)
    errors = filter_str(RUN_REQUESTS, run, api, [_5XX])
    latencies = filter_str(RUN_LATENCIES, run, api)
    by_route = filter_str(HTTP_DURATION, prom, api_ns)
    # The API's instances as Cloud Run counts them (a revision's resource); a worker pool is no
    # `cloud_run_revision`, so the subscriber's are counted as the instances whose freshness
    # series is being scraped (one series per instance; see collector.py on instance ids).
    instances = [
        _q(filter_str(RUN_INSTANCES, run, api), "ALIGN_MAX", "REDUCE_SUM", 'metric.label."state"')
    ]
    backlog = [_q(filter_str(UNDELIVERED, sub_type, sub), "ALIGN_MAX", "REDUCE_SUM")]
    if "dlq_subscription" in names:
        dlq_sub = {"subscription_id": names["dlq_subscription"]}
        backlog.append(_q(filter_str(UNDELIVERED, sub_type, dlq_sub), "ALIGN_MAX", "REDUCE_SUM"))
    dlq_topic = filter_str(TOPIC_SENDS, "pubsub_topic", {"topic_id": names["dlq_topic"]})
    dead = [_q(dlq_topic, "ALIGN_RATE", "REDUCE_SUM")]
    pipeline: list[dict[str, Any]] = []
    if has_subscriber:
        reasons = _q(
            filter_str(DEAD_LETTERED, prom, sub_ns),
            "ALIGN_RATE",
            "REDUCE_SUM",
            "metric.label.reason",
        )
        dead.append(reasons)
        written = _q(filter_str(WRITTEN, prom, sub_ns), "ALIGN_RATE", "REDUCE_SUM")
        fresh = _q(filter_str(FRESHNESS, prom, sub_ns), "ALIGN_MAX", "REDUCE_MAX")
        instances.append(_q(filter_str(FRESHNESS, prom, sub_ns), "ALIGN_MAX", "REDUCE_COUNT"))
        pipeline = [
            _chart("Ingest rate (messages written/s)", "msg/s", [], written),
            _chart("Data freshness (s)", "s", [FRESHNESS_TARGET_S, 600], fresh),
        ]
    ratio = {
        "timeSeriesFilterRatio": {
            "numerator": _q(errors, "ALIGN_RATE", "REDUCE_SUM")["timeSeriesFilter"],
            "denominator": _q(requests, "ALIGN_RATE", "REDUCE_SUM")["timeSeriesFilter"],
        }
    }
    oldest = _q(filter_str(OLDEST_UNACKED, sub_type, sub), "ALIGN_MAX", "REDUCE_MAX")
    by_class = _q(requests, "ALIGN_RATE", "REDUCE_SUM", 'metric.label."response_code_class"')
    pct = ("50", "95", "99")
    run_pcts = [_q(latencies, "ALIGN_DELTA", f"REDUCE_PERCENTILE_{p}") for p in pct]
    route_pcts = [
        _q(by_route, "ALIGN_DELTA", f"REDUCE_PERCENTILE_{p}", "metric.label.route") for p in pct
    ]
    widgets = [
        *pipeline,
        _chart("Pub/Sub backlog (subscription, dead-letter)", "messages", [], *backlog),
        _chart("Oldest unacked message age (s)", "s", [300], oldest),
        _chart("Dead-letter rate (topic; by reason)", "msg/s", [], *dead),
        _chart("API requests by status class", "req/s", [], by_class),
        _chart("API 5xx ratio", "ratio", [0.02], ratio),
        _chart("API latency p50/p95/p99 (ms, Cloud Run)", "ms", [500], *run_pcts),
        _chart("API latency p50/p95/p99 by route (s, app)", "s", [], *route_pcts),
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


def _doc(
    title: str, severity: str, why: str, first: str
) -> gcp.monitoring.AlertPolicyDocumentationArgs:
    """The on-call's note: what fired, why this threshold, where to look first (markdown)."""
    content = (
        f"## {title}\n\n**Severity:** {severity}\n\n**Why this threshold:** {why}\n\n"
        f"**First checks:** {first}\n"
    )
    return gcp.monitoring.AlertPolicyDocumentationArgs(
        content=content, mime_type="text/markdown", subject=f"[{severity}] flightpipe: {title}"
    )


class Monitoring(pulumi.ComponentResource):
    """Dashboard, alert policies, SLOs with burn-rate alerts and the uptime check."""

    dashboard_id: pulumi.Output[str]
    slo_names: dict[str, pulumi.Output[str]]
    uptime_check_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("flightpipe:monitoring:Monitoring", name, None, opts)
        self._name = name
        self._args = args
        # Children do not inherit the component's depends_on (e.g. the Monitoring API enabled).
        depends_on = opts.depends_on if opts is not None else None
        self._depends_on: list[Any] = (
            []
            if depends_on is None
            else list(depends_on)
            if isinstance(depends_on, list)
            else [depends_on]
        )
        self._child = pulumi.ResourceOptions(parent=self, depends_on=depends_on)
        self._labels = {**args.labels, "env": args.env, "app": "flightpipe", "managed-by": "pulumi"}
        self._api: dict[str, pulumi.Input[str]] = {"service_name": args.api_service_name}
        self._sub_ns: dict[str, pulumi.Input[str]] = {
            "namespace": args.subscriber_service_name or ""
        }

        self.dashboard_id = self._dashboard().id
        self._pipeline_alerts()
        self._api_alerts()
        self.uptime_check_id = self._uptime().uptime_check_id
        self.slo_names = self._slos()
        self.register_outputs(
            {
                "dashboard_id": self.dashboard_id,
                "slo_names": self.slo_names,
                "uptime_check_id": self.uptime_check_id,
            }
        )

    def _policy(
        self,
        suffix: str,
        title: str,
        *,
        severity: str,
        conditions: list[gcp.monitoring.AlertPolicyConditionArgs],
        why: str,
        first: str,
        combiner: str = "OR",
    ) -> gcp.monitoring.AlertPolicy:
        return gcp.monitoring.AlertPolicy(
            f"{self._name}-alert-{suffix}",
            project=self._args.project,
            display_name=f"flightpipe {self._args.env}: {title}",
            combiner=combiner,
            conditions=conditions,
            documentation=_doc(title, severity, why, first),
            notification_channels=list(self._args.notification_channels),
            severity="CRITICAL" if severity == "page" else "WARNING",
            user_labels={**self._labels, "severity": severity},
            opts=self._child,
        )

    def _dashboard(self) -> gcp.monitoring.Dashboard:
        a = self._args
        names: dict[str, pulumi.Input[str]] = {
            "api": a.api_service_name,
            "subscription": a.subscription_name,
            "dlq_topic": a.dead_letter_topic_name,
        }
        if a.dead_letter_subscription_name is not None:
            names["dlq_subscription"] = a.dead_letter_subscription_name
        if a.subscriber_service_name is not None:
            names["subscriber"] = a.subscriber_service_name
        title, labels = f"flightpipe ({a.env})", dict(self._labels)
        body = pulumi.Output.all(**names).apply(
            lambda n: dashboard_json(title, labels, n, a.has_subscriber)
        )
        return gcp.monitoring.Dashboard(
            f"{self._name}-dashboard", project=a.project, dashboard_json=body, opts=self._child
        )

    def _pipeline_alerts(self) -> None:
        a = self._args
        sub = {"subscription_id": a.subscription_name}
        # 300 s for 5 min: the freshness SLO is 5 minutes, so an older message is already late, and
        # a stuck subscriber (crashed, wedged on the warehouse or a poison message) shows here
        # minutes before freshness or the dead-letter rate move.
        self._policy(
            "oldest-unacked",
            "Pub/Sub oldest unacked message > 300 s for 5 min",
            severity="page",
            conditions=[
                _threshold(
                    "oldest unacked message age > 300 s",
                    _filter(OLDEST_UNACKED, "pubsub_subscription", sub),
                    300,
                    300,
                    aligner="ALIGN_MAX",
                    reducer="REDUCE_MAX",
                )
            ],
            why="The data-freshness SLO is 5 minutes; a message unacked for longer is already "
            "late. A stuck subscriber shows here first, before freshness or the dead-letter rate "
            "move. 5 minutes above it rules out one slow batch.",
            first="Subscriber logs and instance count; warehouse write failures "
            "(`flightpipe_warehouse_write_failures_total`); the backlog chart.",
        )
        # Ticket, not page: dead-lettered messages wait on the dead-letter subscription and can be
        # replayed; a full stop of ingestion pages through freshness. 1 % of received is far above
        # the odd malformed record. 10/min for 10 min (100 messages) on the topic also catches
        # Pub/Sub's own forwarding after max delivery attempts, which the subscriber never counts.
        conditions = [
            _threshold(
                f"dead-letter topic > {DEAD_LETTER_PER_MINUTE:g} msg/min",
                _filter(TOPIC_SENDS, "pubsub_topic", {"topic_id": a.dead_letter_topic_name}),
                DEAD_LETTER_PER_MINUTE,
                600,
                aligner="ALIGN_DELTA",  # messages per 60 s alignment period
                reducer="REDUCE_SUM",
            )
        ]
        if a.has_subscriber:
            ratio = _threshold(
                "dead-lettered / received > 1 %",
                _filter(DEAD_LETTERED, PROM, self._sub_ns),
                0.01,
                600,
                aligner="ALIGN_RATE",
                reducer="REDUCE_SUM",
                period_s=300,
                denominator=_filter(RECEIVED, PROM, self._sub_ns),
            )
            conditions.insert(0, ratio)
        self._policy(
            "dead-letter",
            f"Dead-letter rate > 1 % of received or > {DEAD_LETTER_PER_MINUTE:g}/min for 10 min",
            severity="ticket",
            conditions=conditions,
            why="Dead-lettered messages wait on the dead-letter subscription and can be "
            "replayed, so this is a ticket (a full stop of ingestion pages through freshness). "
            "1 % of received is far above the odd malformed record from a publisher; "
            f"{DEAD_LETTER_PER_MINUTE:g}/min for 10 minutes on the topic also catches Pub/Sub "
            "forwarding after the maximum delivery attempts, which the subscriber never counts.",
            first="`flightpipe dlq list` (the `reason` attribute); a publisher or contract "
            "change; subscriber errors in the logs.",
        )
        if not a.has_subscriber:
            return
        # 600 s for 10 min: twice the 5-minute target, held 10 minutes, so readers get data 20
        # minutes old. Missing data fires too: no scrape means no running subscriber.
        self._policy(
            "freshness",
            "Data freshness > 600 s for 10 min",
            severity="page",
            conditions=[
                _threshold(
                    "data freshness > 600 s",
                    _filter(FRESHNESS, PROM, self._sub_ns),
                    600,
                    600,
                    aligner="ALIGN_MAX",
                    reducer="REDUCE_MAX",
                    missing="EVALUATION_MISSING_DATA_ACTIVE",
                )
            ],
            why="Freshness (now minus the newest committed publish time) should stay under 5 "
            "minutes; 600 s is twice that, held for 10 minutes, so readers get data 20 minutes "
            "old. No data also fires: no scrape means no running subscriber.",
            first="Is anything being published (the topic's publish rate)? With idle "
            "publishers freshness grows by design. Otherwise: backlog age, subscriber logs, "
            "warehouse errors.",
        )

    def _api_alerts(self) -> None:
        # 2 % for 5 min: four times the 0.5 % error budget (gone in a week). The burn-rate pages
        # need 3 % errors for 6 h (6x) or 7.2 % for 1 h (14.4x): a steady 2-3 % would only raise
        # a ticket after 3 days, 3-7 % would page after hours. 5 minutes rules out a lone failure.
        self._policy(
            "api-5xx",
            "API 5xx ratio > 2 % for 5 min",
            severity="page",
            conditions=[
                _threshold(
                    "5xx / all requests > 2 %",
                    _filter(RUN_REQUESTS, "cloud_run_revision", self._api, [_5XX]),
                    0.02,
                    300,
                    aligner="ALIGN_RATE",
                    reducer="REDUCE_SUM",
                    period_s=300,
                    denominator=_filter(RUN_REQUESTS, "cloud_run_revision", self._api),
                )
            ],
            why="2 % is four times the 0.5 % error budget of the availability SLO (budget gone "
            "in a week). The burn-rate pages need 3 % errors for 6 hours (6x) or 7.2 % for an "
            "hour (14.4x): without this, a steady 2-3 % would only raise a ticket after 3 days "
            "and 3-7 % would page only after hours. 5 minutes rules out a lone failure at low "
            "traffic.",
            first="The latest revision (roll back if it is new); API logs at severity ERROR; "
            "warehouse availability (warehouse errors surface as 503).",
        )
        # 500 ms for 10 min: the latency SLO wants 95 % under 300 ms, so a p95 of 500 ms is well
        # past it; slow answers are still answers, so a ticket.
        self._policy(
            "api-latency",
            "API p95 latency > 500 ms for 10 min",
            severity="ticket",
            conditions=[
                _threshold(
                    "p95 request latency > 500 ms",
                    _filter(RUN_LATENCIES, "cloud_run_revision", self._api),
                    500,
                    600,
                    aligner="ALIGN_DELTA",
                    reducer="REDUCE_PERCENTILE_95",
                )
            ],
            why="The latency SLO wants 95 % of requests under 300 ms; a p95 of 500 ms for 10 "
            "minutes is well past it. Slow answers are still answers, so this is a ticket.",
            first="The latency-by-route chart (one route or all?); instance count and cold "
            "starts; warehouse query times; page sizes requested.",
        )

    def _uptime(self) -> gcp.monitoring.UptimeCheckConfig:
        a = self._args
        check = gcp.monitoring.UptimeCheckConfig(
            f"{self._name}-uptime",
            project=a.project,
            display_name=f"flightpipe {a.env}: API /healthz",
            timeout="10s",
            period="60s",
            http_check=gcp.monitoring.UptimeCheckConfigHttpCheckArgs(
                path="/healthz",
                port=443,
                use_ssl=True,
                validate_ssl=True,
                request_method="GET",
                # The API only admits callers with run.invoker. The check sends an ID token of the
                # Cloud Monitoring service agent (audience: the checked URL, which is what Cloud
                # Run expects), granted run.invoker below: no key, no shared secret.
                service_agent_authentication=(
                    gcp.monitoring.UptimeCheckConfigHttpCheckServiceAgentAuthenticationArgs(
                        type="OIDC_TOKEN"
                    )
                ),
                accepted_response_status_codes=[
                    gcp.monitoring.UptimeCheckConfigHttpCheckAcceptedResponseStatusCodeArgs(
                        status_class="STATUS_CLASS_2XX"
                    )
                ],
            ),
            monitored_resource=gcp.monitoring.UptimeCheckConfigMonitoredResourceArgs(
                type="uptime_url",
                labels={
                    "project_id": a.project,
                    "host": pulumi.Output.from_input(a.api_host).apply(_host),
                },
            ),
            user_labels=self._labels,
            opts=self._child,
        )
        # The one principal besides the analyst group that may invoke the API, and a narrow one:
        # a Google-managed agent of this project that holds no key anyone can use and only calls
        # the URLs this project's uptime checks point it at; here /healthz, which
        # reads nothing, and the /v1 data routes still want an API key. Cloud Monitoring would
        # only create its agent on first use, so the program makes it exist (ServiceIdentity)
        # and binds the member that resource returns: the grant cannot precede the account.
        self.uptime_agent = gcp.projects.ServiceIdentity(
            f"{self._name}-uptime-agent",
            project=a.project,
            service=UPTIME_AGENT_SERVICE,
            opts=self._child,
        )
        # At project level (infra/grants.py, PROJECT_GRANTED_ROLES: a service's own policy would
        # need the deployer to hold run.services.setIamPolicy); the project's one service is the
        # API.
        gcp.projects.IAMMember(
            f"{self._name}-uptime-invoker",
            project=a.project,
            role="roles/run.invoker",
            member=self.uptime_agent.member,
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[*self._depends_on, self.uptime_agent, check]
            ),
        )
        # More than one checker region failing for a minute: one region failing is usually its
        # own network, and /healthz depends on nothing but the process.
        passed = check.uptime_check_id.apply(
            lambda cid: filter_str(
                UPTIME_PASSED, "uptime_url", extra=[f'metric.label."check_id"="{cid}"']
            )
        )
        self._policy(
            "uptime",
            "API /healthz uptime check failing",
            severity="page",
            conditions=[
                _threshold(
                    "checker regions failing > 1",
                    passed,
                    1,
                    60,
                    aligner="ALIGN_NEXT_OLDER",
                    reducer="REDUCE_COUNT_FALSE",
                    period_s=300,
                )
            ],
            why="More than one checker region has failed /healthz for a minute. One region "
            "failing is usually its own network; /healthz depends on nothing but the process, "
            "so two regions failing means users cannot reach the API.",
            first="Cloud Run service status and latest revision; ingress settings; the TLS "
            "certificate; API logs.",
        )
        return check

    def _service(self, suffix: str, title: str) -> gcp.monitoring.CustomService:
        # A custom service with explicit request-based SLIs rather than Cloud Run's basic service
        # (`CLOUD_RUN` also exists): "good" is then written here instead of implied by the basic
        # SLI, and neither a location label nor the auto-detected service is involved.
        return gcp.monitoring.CustomService(
            f"{self._name}-service-{suffix}",
            project=self._args.project,
            service_id=f"flightpipe-{suffix}-{self._args.env}",
            display_name=f"flightpipe {self._args.env}: {title}",
            user_labels=self._labels,
            opts=self._child,
        )

    def _slo(
        self,
        slo_id: str,
        service: gcp.monitoring.CustomService,
        title: str,
        goal: float,
        **sli: Any,
    ) -> gcp.monitoring.Slo:
        return gcp.monitoring.Slo(
            f"{self._name}-slo-{slo_id}",
            project=self._args.project,
            service=service.service_id,
            slo_id=slo_id,
            display_name=title,
            goal=goal,
            rolling_period_days=SLO_PERIOD_DAYS,
            user_labels=self._labels,
            opts=self._child,
            **sli,
        )

    def _slos(self) -> dict[str, pulumi.Output[str]]:
        api = self._service("api", "API")
        # 99.5 %: 0.5 % of requests, about 3.4 hours of full outage in 28 days. One region, one
        # warehouse: a higher goal would promise more than the platform under it and leave no
        # budget to deploy. Only 5xx count against it; 4xx are the client's mistakes.
        availability = self._slo(
            "api-availability",
            api,
            "99.5 % of API requests are not 5xx (28 days)",
            AVAILABILITY_GOAL,
            request_based_sli=gcp.monitoring.SloRequestBasedSliArgs(
                good_total_ratio=gcp.monitoring.SloRequestBasedSliGoodTotalRatioArgs(
                    bad_service_filter=_filter(
                        RUN_REQUESTS, "cloud_run_revision", self._api, [_5XX]
                    ),
                    total_service_filter=_filter(RUN_REQUESTS, "cloud_run_revision", self._api),
                )
            ),
        )
        # 95 % under 300 ms as Cloud Run measures it (what the client waits for, cold starts
        # included): a warm paged query takes tens of ms; the 5 % absorbs cold starts and big pages.
        latency = self._slo(
            "api-latency",
            api,
            "95 % of API requests answer in under 300 ms (28 days)",
            LATENCY_GOAL,
            request_based_sli=gcp.monitoring.SloRequestBasedSliArgs(
                distribution_cut=gcp.monitoring.SloRequestBasedSliDistributionCutArgs(
                    distribution_filter=_filter(RUN_LATENCIES, "cloud_run_revision", self._api),
                    range=gcp.monitoring.SloRequestBasedSliDistributionCutRangeArgs(
                        max=LATENCY_THRESHOLD_MS
                    ),
                )
            ),
        )
        names = {"api_availability": availability.name, "api_latency": latency.name}
        if self._args.has_subscriber:
            # Windows-based: freshness is a state, not a request. 99 % of 1-minute windows with a
            # mean freshness under 300 s allows about 6.7 hours of stale data in 28 days.
            freshness = self._slo(
                "data-freshness",
                self._service("pipeline", "ingest pipeline"),
                "99 % of minutes with data fresher than 300 s (28 days)",
                FRESHNESS_GOAL,
                windows_based_sli=gcp.monitoring.SloWindowsBasedSliArgs(
                    window_period="60s",
                    metric_mean_in_range=gcp.monitoring.SloWindowsBasedSliMetricMeanInRangeArgs(
                        time_series=_filter(FRESHNESS, PROM, self._sub_ns),
                        range=gcp.monitoring.SloWindowsBasedSliMetricMeanInRangeRangeArgs(
                            max=FRESHNESS_TARGET_S
                        ),
                    ),
                ),
            )
            names["data_freshness"] = freshness.name
        self._burn_rate_alerts(availability.name)
        return names

    def _burn_rate_alerts(self, slo_name: pulumi.Output[str]) -> None:
        # Multi-window burn rate (Google SRE workbook, "Alerting on SLOs"): the long window proves
        # the burn is significant, the short one (1/12 of it) that it is still happening, so the
        # alert clears soon after a fix. Budget spent when a tier fires: factor * long / 28 days.
        for factor, long_s, short_s, debounce_s, severity in BURN_RATES:
            spent = factor * long_s / (SLO_PERIOD_DAYS * 86400)
            hours = long_s // 3600
            conditions = [
                _threshold(
                    f"burn rate over {window}s > {factor:g}x",
                    _burn_rate(slo_name, window),
                    factor,
                    debounce_s,
                )
                for window in (long_s, short_s)
            ]
            self._policy(
                f"burn-{hours}h",
                f"API availability budget burning {factor:g}x over {hours} h",
                severity=severity,
                conditions=conditions,
                why=f"At {factor:g}x the 0.5 % error budget of the 28-day availability SLO, "
                f"{spent:.1%} of the budget goes in {hours} h and all of it in "
                f"{SLO_PERIOD_DAYS / factor:.1f} days. Both the {hours} h window and its "
                f"{short_s // 60}-minute short window must burn that fast, so the alert clears "
                "soon after the errors stop.",
                first="The API 5xx chart; the latest revision (roll back if it is new); API logs.",
                combiner="AND",
            )
