"""Wait until Cloud Monitoring has received a metric type before anything that reads it is created.

Cloud Monitoring refuses an alert policy on a metric type it has never received: 404 "Cannot find
metric(s) that match type = ... If a metric was created recently, it could take up to 10 minutes
to become available" (hashicorp/terraform-provider-google#11102, for a log-based metric;
world-federation-of-advertisers/cross-media-measurement#4350, for a workload.googleapis.com
metric "which Cloud Monitoring only registers the first time" it is emitted). A Managed
Prometheus metric type (`prometheus.googleapis.com/...`) is created by its first write, so a fresh
project has none of the services' metrics until their collectors have exported once. Reports
differ on whether a plain filter condition on such a type is refused (superserve-ai/sandbox#370
says it is accepted, PromQL refused); waiting is right either way.

`MetricReady` is a dynamic resource whose create polls `projects.metricDescriptors.get` (REST
`GET /v3/projects/<p>/metricDescriptors/<type>`, the type's slashes kept: googleapis/googleapis
google/monitoring/v3/metric_service.proto@1346f5c, `{name=projects/*/metricDescriptors/**}`) with
Application Default Credentials until the descriptor exists, printing progress, and fails with
what to check after a bounded wait. Its inputs name the exporting Cloud Run resource (an output
of it), so it starts only once that resource is deployed. The deployer's `roles/monitoring.editor`
holds `monitoring.metricDescriptors.get` (infra/grants.py). Once created it never waits again.

A wait may be optional (`required=False`) where nothing but the wait depends on the service's
traffic: a scaled-to-zero API with request-billed CPU exports its own metrics only while it
serves, so a first deploy need not block on them. On time-out it ends with `received` false
instead of failing, and every later `pulumi up` asks again until it is true; what reads the
metric leaves it out meanwhile (the dashboard's by-route chart).

dill pickles the provider by reference to this module (pulumi/pulumi#7453), so Pulumi's Python
dynamic-provider host imports `components.monitoring.ready` as the program does, from `infra/`;
the provider's own imports are inside its methods so unpickling it costs nothing else.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

ENDPOINT_ENV = "FLIGHTPIPE_MONITORING_ENDPOINT"
DEFAULT_TIMEOUT_S = 900
DEFAULT_POLL_S = 15


class MetricNotReady(Exception):
    """The metric type did not reach Cloud Monitoring in time, or it cannot be asked."""


class MetricNotReceived(MetricNotReady):
    """The wait ran out: Cloud Monitoring answered, but has no such metric yet."""


class MetricReadyProvider(ResourceProvider):
    """Creates nothing: waits until the metric descriptor exists (see the module docstring)."""

    endpoint_env: ClassVar[str] = ENDPOINT_ENV
    default_endpoint: ClassVar[str] = "https://monitoring.googleapis.com"
    # Reading descriptors needs only the read scope (metric_service.proto's oauth_scopes).
    scopes: ClassVar[tuple[str, ...]] = ("https://www.googleapis.com/auth/monitoring.read",)
    replace_on: ClassVar[tuple[str, ...]] = ("project", "metricType")

    def create(self, props: dict[str, Any]) -> CreateResult:
        """Poll until the descriptor exists; raise `MetricNotReady` with what to check."""
        outs = self.outcome(props)
        return CreateResult(f"{props['project']}/{props['metricType']}", outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Wait again for another metric type or project, or while an optional one is missing."""
        changed = [k for k in self.replace_on if olds.get(k) != news.get(k)]
        retry = olds.get("received") is False
        return DiffResult(
            changes=bool(changed) or retry, replaces=changed, delete_before_replace=False
        )

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(self.outcome(news))

    def outcome(self, props: dict[str, Any]) -> dict[str, Any]:
        """The props with `received`: a required wait that runs out raises instead."""
        try:
            self.wait(props)
        except MetricNotReceived as exc:
            if props.get("required", True):
                raise
            import sys

            sys.stderr.write(f"{exc} Going on without it; the next `pulumi up` asks again.\n")
            return {**props, "received": False}
        return {**props, "received": True}

    def wait(self, props: dict[str, Any]) -> None:
        import os
        import sys
        import time
        import urllib.parse

        import google.auth
        import google.auth.exceptions
        import google.auth.transport.requests
        import requests

        project, metric = str(props["project"]), str(props["metricType"])
        exporter = str(props.get("exporter", "the exporting service"))
        timeout_s, poll_s = float(props["timeoutSeconds"]), float(props["pollSeconds"])
        base = os.environ.get(self.endpoint_env) or self.default_endpoint
        url = (
            f"{base.rstrip('/')}/v3/projects/{urllib.parse.quote(project, safe='')}/"
            f"metricDescriptors/{urllib.parse.quote(metric, safe='/')}"
        )
        check = (
            f"Check that {exporter} is running and that its `collector` container exports "
            "(its Cloud Run logs; roles/monitoring.metricWriter of its service account), then "
            "re-run `pulumi up`."
        )
        try:
            credentials, _ = google.auth.default(scopes=list(self.scopes))
        except google.auth.exceptions.DefaultCredentialsError as exc:
            raise MetricNotReady(f"no Google credentials to ask Cloud Monitoring: {exc}") from None
        session = google.auth.transport.requests.AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
        started = time.monotonic()
        last_said = -60.0
        status = "not asked"
        while True:
            try:
                response = session.get(url, timeout=30)
                status = str(response.status_code)
            except (requests.RequestException, google.auth.exceptions.TransportError) as exc:
                response, status = None, type(exc).__name__
            except google.auth.exceptions.RefreshError as exc:
                raise MetricNotReady(f"cannot get a Google access token: {exc}") from None
            if response is not None and response.status_code == 200:
                sys.stderr.write(f"metric {metric} is in Cloud Monitoring\n")
                sys.stderr.flush()
                return
            if response is not None and response.status_code in (401, 403):
                raise MetricNotReady(
                    f"Cloud Monitoring refused to read metric {metric} of project {project} "
                    f"({response.status_code}): the deployer needs "
                    "monitoring.metricDescriptors.get there (roles/monitoring.editor holds it)."
                )
            transient = response is None or response.status_code in (404, 429, 500, 502, 503)
            if not transient:
                body = response.text[:300] if response is not None else ""
                raise MetricNotReady(
                    f"Cloud Monitoring answered {status} for metric {metric}: {body}"
                )
            waited = time.monotonic() - started
            if waited + poll_s > timeout_s:
                raise MetricNotReceived(
                    f"Cloud Monitoring has not received metric {metric} in project {project} "
                    f"after {waited / 60:.0f} min (last answer: {status}); the alert policies, "
                    f"SLOs and dashboard that read it wait for it. {check}"
                )
            if waited - last_said >= 60:
                sys.stderr.write(
                    f"waiting for Cloud Monitoring to receive {metric} from {exporter} "
                    f"({waited / 60:.0f} of {timeout_s / 60:.0f} min, last answer: {status})\n"
                )
                sys.stderr.flush()
                last_said = waited
            time.sleep(poll_s)


class MetricReady(Resource):
    """Exists once Cloud Monitoring has received `metric_type` (see the module docstring)."""

    metric_type: pulumi.Output[str]
    received: pulumi.Output[bool]

    def __init__(
        self,
        name: str,
        *,
        project: pulumi.Input[str],
        metric_type: str,
        exporter: pulumi.Input[str],
        required: bool = True,
        timeout_s: int = DEFAULT_TIMEOUT_S,
        poll_s: int = DEFAULT_POLL_S,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props: dict[str, Any] = {
            "project": project,
            "metricType": metric_type,
            "exporter": exporter,
            "required": required,
            "timeoutSeconds": timeout_s,
            "pollSeconds": poll_s,
            "received": None,  # an output: set by the provider
        }
        super().__init__(MetricReadyProvider(), name, props, opts)
