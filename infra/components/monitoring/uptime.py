"""The HTTPS uptime check on the API's `/health`, the identity it probes as, and its alert.

`/health` is `/healthz` under a name Cloud Run's front end does not reserve (it reserves "some
paths ending with z": https://cloud.google.com/run/docs/known-issues, "Reserved URL paths").
"""

from __future__ import annotations

from typing import Final

import pulumi
import pulumi_gcp as gcp

from components.monitoring import metrics as m
from components.monitoring import thresholds as t
from components.monitoring.alerts import condition, policy
from components.monitoring.scope import Scope

# The service whose agent signs uptime checks' OIDC tokens:
# `service-<number>@gcp-sa-monitoring-notification.iam.gserviceaccount.com` (Cloud Monitoring's
# uptime-check docs; GoogleCloudPlatform/cloud-foundation-fabric#630 creates the same agent with
# google_project_service_identity for monitoring.googleapis.com, which is what ServiceIdentity is).
UPTIME_AGENT_SERVICE: Final = "monitoring.googleapis.com"


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


def uptime(scope: Scope) -> tuple[gcp.monitoring.UptimeCheckConfig, gcp.projects.ServiceIdentity]:
    """Declare the check, its agent's run.invoker on the API and the alert; return check, agent."""
    a = scope.args
    check = gcp.monitoring.UptimeCheckConfig(
        f"{scope.name}-uptime",
        project=a.project,
        display_name=f"flightpipe {a.env}: API /health",
        timeout="10s",
        period="60s",
        http_check=gcp.monitoring.UptimeCheckConfigHttpCheckArgs(
            path="/health",
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
            type=m.UPTIME_URL,
            labels={
                "project_id": a.project,
                "host": pulumi.Output.from_input(a.api_host).apply(_host),
            },
        ),
        user_labels=scope.labels,
        opts=scope.child,
    )
    # The one principal besides the analyst group that may invoke the API, and a narrow one:
    # a Google-managed agent of this project that holds no key anyone can use and only calls
    # the URLs this project's uptime checks point it at; here /health, which
    # reads nothing, and the /v1 data routes still want an API key. Cloud Monitoring would
    # only create its agent on first use, so the program makes it exist (ServiceIdentity)
    # and binds the member that resource returns: the grant cannot precede the account.
    agent = gcp.projects.ServiceIdentity(
        f"{scope.name}-uptime-agent",
        project=a.project,
        service=UPTIME_AGENT_SERVICE,
        opts=scope.child,
    )
    # At project level (infra/grants.py, PROJECT_GRANTED_ROLES: a service's own policy would
    # need the deployer to hold run.services.setIamPolicy); the project's one service is the API.
    gcp.projects.IAMMember(
        f"{scope.name}-uptime-invoker",
        project=a.project,
        role="roles/run.invoker",
        member=agent.member,
        opts=pulumi.ResourceOptions(
            parent=scope.parent, depends_on=[*scope.depends_on, agent, check]
        ),
    )
    passed = check.uptime_check_id.apply(
        lambda cid: m.filter_str(
            m.UPTIME_PASSED, m.UPTIME_URL, extra=[f'metric.label."check_id"="{cid}"']
        )
    )
    failing = t.UPTIME_FAILING_REGIONS
    policy(
        scope,
        "uptime",
        "API /health uptime check failing",
        severity=failing.severity,
        conditions=[
            condition(
                f"checker regions failing > {failing.value:g}",
                passed,
                failing,
                aligner="ALIGN_NEXT_OLDER",
                reducer="REDUCE_COUNT_FALSE",
                period_s=300,
            )
        ],
        why=failing.why,
        first=failing.first,
        reads=[m.UPTIME_PASSED],
    )
    return check, agent
