"""Runtime: the API as a Cloud Run service and the subscriber as a Cloud Run worker pool.

Why a worker pool for the subscriber: it pulls from Pub/Sub (streaming pull) and serves no
requests. A Cloud Run *service* only guarantees CPU while a request is in flight, so a pull loop
needs `cpu_idle=False` plus `min_instance_count >= 1` and a fake HTTP port to pass health checks,
and request-based autoscaling never sees the backlog anyway. A worker pool is Cloud Run's resource
for exactly this: no ingress, no URL to protect, CPU always allocated, a fixed (manual) instance
count that we size from the backlog alerts, billed per instance like an always-on service.

The API scales on requests: startup CPU boost shortens cold starts, the startup probe on `/readyz`
holds traffic until the warehouse is reachable, the liveness probe on `/healthz` restarts a wedged
worker. Cloud Run sets `PORT` itself (8080). Environment variable names are exactly the ones
`flightpipe.settings` reads (a test checks); the API keys come from Secret Manager, never from
plain configuration. Only the analyst group may invoke the API (and the uptime check's service
agent, granted by the monitoring component).

Metrics: both resources run Google's Managed Service for Prometheus sidecar for Cloud Run
(`GMP_SIDECAR_IMAGE`, container `collector`) next to the application container. With no
`RunMonitoring` config mounted at `/etc/rungmp/config.yaml` it scrapes `0.0.0.0:8080/metrics`
every 30 s, which is exactly where both services serve their Prometheus registry (the API on
Cloud Run's PORT 8080, the subscriber's health server on PORT, default 8080, which a worker pool
does not override), so no config secret is needed. It writes to Cloud Monitoring as
`prometheus_target` series with the runtime account's `roles/monitoring.metricWriter`
(components/identity.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import pulumi
import pulumi_gcp as gcp

from components.grants_on import project_grant_on, secret_name

API_KEYS_ENV: Final = "FLIGHTPIPE_API_KEYS"
READY_PATH: Final = "/readyz"
HEALTH_PATH: Final = "/healthz"
CONTAINER_PORT: Final = 8080
# Google's Managed Service for Prometheus sidecar for Cloud Run (GoogleCloudPlatform/
# run-gmp-sidecar): an OpenTelemetry collector that scrapes the app and writes to Managed Service
# for Prometheus.
# Pinned: a new collector is a deliberate change. 1.9.x is the line whose worker-pool support
# (no service/configuration labels, configuration_name filled from the pool name) the subscriber
# needs; do not go below it.
GMP_SIDECAR_IMAGE: Final = (
    "us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar:1.9.2"
)
COLLECTOR: Final = "collector"
# The sidecar's default RunMonitoring endpoint; the services must serve /metrics here.
SCRAPE_PORT: Final = 8080


@dataclass(frozen=True)
class RuntimeArgs:
    project: str
    region: str
    ingest_mode: str
    api_image: pulumi.Input[str]
    subscriber_image: pulumi.Input[str]
    api_service_account: pulumi.Input[str]
    api_service_account_member: pulumi.Input[str]
    subscriber_service_account: pulumi.Input[str] | None
    api_env: Mapping[str, pulumi.Input[str]]
    subscriber_env: Mapping[str, pulumi.Input[str]]
    analyst_group: str
    ingress: str
    api_min_instances: int
    api_max_instances: int
    api_concurrency: int
    api_cpu: str
    api_memory: str
    subscriber_instances: int
    subscriber_cpu: str
    subscriber_memory: str
    deletion_protection: bool
    labels: dict[str, str]
    # An existing Secret Manager secret holding the API keys; None: the program creates one.
    api_keys_secret: str | None = None
    depends_on: tuple[pulumi.Resource, ...] = ()


def _envs(env: Mapping[str, pulumi.Input[str]]) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in sorted(env.items())]


def _collector(app_container: str) -> dict[str, Any]:
    """The Prometheus sidecar, started after `app_container` (container dependencies).

    Started after the app so its first scrape (10 s after start) finds /metrics; it also scrapes
    once more on shutdown, so an instance's last counts are not lost. 1 vCPU / 512 MiB are
    Cloud Run's per-container defaults, written down so the instance's total size is visible here.
    """
    return {
        "name": COLLECTOR,
        "image": GMP_SIDECAR_IMAGE,
        "depends_ons": [app_container],
        "resources": {"limits": {"cpu": "1", "memory": "512Mi"}},
    }


class Runtime(pulumi.ComponentResource):
    """The API service (+ its invoker grant and key secret) and the subscriber worker pool."""

    def __init__(
        self, name: str, args: RuntimeArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("flightpipe:infra:Runtime", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        secret_id: pulumi.Input[str]
        if args.api_keys_secret:
            secret_id = args.api_keys_secret
            secret_ready: list[pulumi.Resource] = []
        else:
            secret = gcp.secretmanager.Secret(
                f"{name}-api-keys",
                project=args.project,
                secret_id="flightpipe-api-keys",  # noqa: S106 - a name, not a value
                replication={"auto": {}},
                labels=args.labels,
                opts=child,
            )
            # Cloud Run refuses a secret with no version. The first key is random and kept
            # encrypted in the state; later keys are added in Secret Manager (ignored here).
            version = gcp.secretmanager.SecretVersion(
                f"{name}-api-keys-initial",
                secret=secret.id,
                secret_data=pulumi.Output.secret(secrets.token_urlsafe(32)),
                opts=pulumi.ResourceOptions(parent=self, ignore_changes=["secret_data"]),
            )
            secret_id = secret.secret_id
            secret_ready = [version]
        self.api_keys_secret_id = pulumi.Output.from_input(secret_id)
        # Project level, conditioned on the secret (components/grants_on.py says why).
        self.secret_access = project_grant_on(
            f"{name}-api-keys-accessor",
            project=args.project,
            role="roles/secretmanager.secretAccessor",
            member=args.api_service_account_member,
            service="secretmanager.googleapis.com",
            resource_name=secret_name(
                args.project,
                gcp.organizations.get_project_output(project_id=args.project).number,
                secret_id,
            ),
            opts=child,
        )

        api_envs = _envs(args.api_env)
        api_envs.append(
            {
                "name": API_KEYS_ENV,
                "value_source": {"secret_key_ref": {"secret": secret_id, "version": "latest"}},
            }
        )
        self.api = gcp.cloudrunv2.Service(
            f"{name}-api",
            project=args.project,
            location=args.region,
            name="flightpipe-api",
            ingress=args.ingress,
            deletion_protection=args.deletion_protection,
            labels=args.labels,
            template={
                "service_account": args.api_service_account,
                "max_instance_request_concurrency": args.api_concurrency,
                "timeout": "30s",
                "scaling": {
                    "min_instance_count": args.api_min_instances,
                    "max_instance_count": args.api_max_instances,
                },
                "labels": args.labels,
                "containers": [
                    {
                        "name": "api",
                        "image": args.api_image,
                        "ports": {"container_port": CONTAINER_PORT},
                        "resources": {
                            "limits": {"cpu": args.api_cpu, "memory": args.api_memory},
                            "cpu_idle": True,  # request-driven: pay for CPU only while serving
                            "startup_cpu_boost": True,
                        },
                        "envs": api_envs,
                        "startup_probe": {
                            "http_get": {"path": READY_PATH, "port": CONTAINER_PORT},
                            "period_seconds": 2,
                            "timeout_seconds": 2,
                            "failure_threshold": 30,
                        },
                        "liveness_probe": {
                            "http_get": {"path": HEALTH_PATH, "port": CONTAINER_PORT},
                            "period_seconds": 15,
                            "timeout_seconds": 3,
                            "failure_threshold": 3,
                        },
                    },
                    # Request-based billing stays (cpu_idle above): between requests a scrape may
                    # be throttled and skipped, but the series are cumulative counters and
                    # histograms, so the next scrape (or the shutdown scrape) still carries every
                    # count; only resolution suffers, and the API's alerts and SLOs read Cloud
                    # Run's own request metrics, not these.
                    _collector("api"),
                ],
            },
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.secret_access, *secret_ready, *args.depends_on],
            ),
        )
        self.api_invoker = gcp.cloudrunv2.ServiceIamMember(
            f"{name}-api-invoker",
            project=args.project,
            location=args.region,
            name=self.api.name,
            role="roles/run.invoker",
            member=args.analyst_group,
            opts=child,
        )

        self.subscriber: gcp.cloudrunv2.WorkerPool | None = None
        if args.ingest_mode == "subscriber":
            if args.subscriber_service_account is None:
                raise ValueError("subscriber mode needs the subscriber service account")
            self.subscriber = gcp.cloudrunv2.WorkerPool(
                f"{name}-subscriber",
                project=args.project,
                location=args.region,
                name="flightpipe-subscriber",
                launch_stage="BETA",  # worker pools are in preview on the provider's API version
                deletion_protection=args.deletion_protection,
                labels=args.labels,
                scaling={
                    "scaling_mode": "MANUAL",
                    "manual_instance_count": args.subscriber_instances,
                },
                template={
                    "service_account": args.subscriber_service_account,
                    "labels": args.labels,
                    "containers": [
                        {
                            "name": "subscriber",
                            "image": args.subscriber_image,
                            "resources": {
                                "limits": {
                                    "cpu": args.subscriber_cpu,
                                    "memory": args.subscriber_memory,
                                }
                            },
                            "envs": _envs(args.subscriber_env),
                        },
                        # A worker pool always has CPU, so every 30 s scrape runs; the freshness,
                        # ingest and dead-letter alerts depend on these series.
                        _collector("subscriber"),
                    ],
                },
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
            )
        self.api_url: pulumi.Output[str] = self.api.uri
        self.register_outputs({"api_url": self.api.uri})
