"""Monitoring: the dashboard, alert policies, SLOs and the uptime check of one environment.

Contract: `Monitoring(name, MonitoringArgs(...))` declares, as children named `{name}-...`, one
Cloud Monitoring dashboard, the symptom alert policies (Pub/Sub backlog age, dead-lettering, data
freshness, API 5xx ratio, API p95 latency, uptime), three SLOs (API availability, API latency, data
freshness) with multi-window burn-rate alerts on availability, and an HTTPS uptime check on
`/health` that authenticates with an OIDC token of the Cloud Monitoring notification service
agent, made to exist first (`gcp.projects.ServiceIdentity`, so the grant never names an account
that is not there yet), plus that agent's `roles/run.invoker` on the API service (the API is
IAM-protected; without it every probe gets a 403 and the uptime alert pages forever). Prod must
name notification channels: an alert nobody receives is no alert (`MonitoringArgs` refuses).

One module per concern: `metrics` (what is read and the filters on it), `thresholds` (every
threshold, goal and burn-rate tier with its reason, once), `dashboard`, `alerts`, `slos`, `uptime`.
Names (`subscription_name`, topics, services) are the short resource names that label the metrics
(`subscription_id`, `topic_id`, `service_name`); full `projects/...` paths are shortened.
"""

from __future__ import annotations

from typing import Any

import pulumi

from components.monitoring.alerts import api_alerts, pipeline_alerts
from components.monitoring.dashboard import dashboard
from components.monitoring.scope import MonitoringArgs, Scope
from components.monitoring.slos import slos
from components.monitoring.uptime import uptime

__all__ = ["Monitoring", "MonitoringArgs"]


class Monitoring(pulumi.ComponentResource):
    """Dashboard, alert policies, SLOs with burn-rate alerts and the uptime check."""

    dashboard_id: pulumi.Output[str]
    slo_names: dict[str, pulumi.Output[str]]
    uptime_check_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("flightpipe:monitoring:Monitoring", name, None, opts)
        depends_on = opts.depends_on if opts is not None else None
        scope = Scope(
            name,
            args,
            parent=self,
            depends_on=(
                []
                if depends_on is None
                else list(depends_on)
                if isinstance(depends_on, list)
                else [depends_on]
            ),
        )
        self.dashboard_id = dashboard(scope).id
        pipeline_alerts(scope)
        api_alerts(scope)
        check, self.uptime_agent = uptime(scope)
        self.uptime_check_id = check.uptime_check_id
        self.slo_names = slos(scope)
        outputs: dict[str, Any] = {
            "dashboard_id": self.dashboard_id,
            "slo_names": self.slo_names,
            "uptime_check_id": self.uptime_check_id,
        }
        self.register_outputs(outputs)
