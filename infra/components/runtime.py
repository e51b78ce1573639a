"""Runtime: the API as a Cloud Run service and the subscriber as a Cloud Run worker pool.

Why a worker pool for the subscriber: it pulls from Pub/Sub (streaming pull) and serves no
requests. A Cloud Run *service* only guarantees CPU while a request is in flight, so a pull loop
needs `cpu_idle=False` plus `min_instance_count >= 1` and a fake HTTP port to pass health checks,
and request-based autoscaling never sees the backlog anyway. A worker pool is Cloud Run's resource
for exactly this: no ingress, no URL to protect, CPU always allocated, a fixed (manual) instance
count that we size from the backlog alerts, billed per instance like an always-on service.

The API scales on requests: startup CPU boost shortens cold starts, the startup probe on `/readyz`
holds traffic until the warehouse is reachable, the liveness probe on `/healthz` restarts a wedged
worker. A revision that starts while its account's BigQuery grants are still propagating (a first
deploy: IAM takes minutes) passes the probe as "starting" instead of failing the deploy
(flightpipe_api.health, IAM_PROPAGATION_GRACE_SECONDS). Cloud Run sets `PORT` itself (8080).
Environment variable names are exactly the ones `flightpipe.settings` reads (a test checks); the API
keys come from Secret Manager, never from plain configuration. Only the analyst group may invoke the
API (and the uptime check's service agent, granted by the monitoring component), both at project
level (infra/grants.py says why).

Metrics: both resources run the Google-Built OpenTelemetry Collector as a sidecar (container
`collector`, components/collector.py says why not the Managed Prometheus sidecar and what labels
the series get). It scrapes `127.0.0.1:8080/metrics`, which is where both services serve their
Prometheus registry (the API on Cloud Run's PORT 8080, the subscriber's health server on PORT,
default 8080, which a worker pool does not set), and writes `prometheus_target` series with the
runtime account's `roles/monitoring.metricWriter` (components/identity.py).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import pulumi
import pulumi_gcp as gcp
from config import Sizing

from components import Component, collector
from components.grants_on import project_grant_on, project_role, secret_name

API_KEYS_ENV: Final = "FLIGHTPIPE_API_KEYS"
# The secret the API mounts (key hashes) and the one the post-deploy test reads (the plain key).
API_KEYS_SECRET_ID: Final = "flightpipe-api-keys"  # noqa: S105 - a name, not a value
E2E_KEY_SECRET_ID: Final = "flightpipe-e2e-api-key"  # noqa: S105 - a name, not a value
READY_PATH: Final = "/readyz"
HEALTH_PATH: Final = "/healthz"
CONTAINER_PORT: Final = 8080
API_NAME: Final = "flightpipe-api"
# Request-driven: CPU only while serving. Every container of the instance says so (the
# collector's own default would be `false`: components/collector.py, `container`).
API_CPU_IDLE: Final = True
SUBSCRIBER_NAME: Final = "flightpipe-subscriber"


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
    sizing: Sizing
    deletion_protection: bool
    labels: dict[str, str]
    # An existing Secret Manager secret holding the API keys; None: the program creates one.
    api_keys_secret: str | None = None
    depends_on: tuple[pulumi.Resource, ...] = ()


def _envs(env: Mapping[str, pulumi.Input[str]]) -> list[dict[str, Any]]:
    return [{"name": k, "value": v} for k, v in sorted(env.items())]


class Runtime(Component[RuntimeArgs]):
    """The API service (+ its invoker grant and key secret) and the subscriber worker pool."""

    def build(self, name: str, args: RuntimeArgs) -> Mapping[str, Any]:
        size = args.sizing
        # Secrets' IAM condition names use the project number (components/grants_on.py). It is
        # read after the APIs are enabled: a fresh project has not enabled Resource Manager's API
        # yet, and an invoke ignores the component's depends_on unless given its own (pulumi
        # InvokeOutputOptions.depends_on, pulumi 3.272).
        self._project_number = gcp.organizations.get_project_output(
            project_id=args.project,
            opts=pulumi.InvokeOutputOptions(depends_on=list(args.depends_on)),
        ).number
        secret_id: pulumi.Input[str]
        secret_ready: list[pulumi.Resource] = []
        self.e2e_api_key_secret_id: pulumi.Output[str] | None = None
        if args.api_keys_secret:
            secret_id = args.api_keys_secret
        else:
            secret_id, secret_ready = self._api_keys(name, args)
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
                self._project_number,
                secret_id,
            ),
            opts=self.child,
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
            name=API_NAME,
            ingress=args.ingress,
            deletion_protection=args.deletion_protection,
            labels=args.labels,
            template={
                "service_account": args.api_service_account,
                "max_instance_request_concurrency": size.api_concurrency,
                "timeout": "30s",
                "scaling": {
                    "min_instance_count": size.api_min_instances,
                    "max_instance_count": size.api_max_instances,
                },
                "labels": args.labels,
                "containers": [
                    {
                        "name": "api",
                        "image": args.api_image,
                        "ports": {"container_port": CONTAINER_PORT},
                        "resources": {
                            "limits": {"cpu": size.api_cpu, "memory": size.api_memory},
                            "cpu_idle": API_CPU_IDLE,
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
                    # histograms, so the next scrape still carries every count (an instance's
                    # last counts since its final scrape are lost: this collector has no
                    # shutdown scrape); only resolution suffers, and the API's alerts and SLOs
                    # read Cloud Run's own request metrics, not these.
                    collector.container("api", self._scrape(args, API_NAME), cpu_idle=API_CPU_IDLE),
                ],
            },
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[self.secret_access, *secret_ready, *args.depends_on],
            ),
        )
        # Project level, not the service's own policy: Cloud Run services cannot be named in an
        # IAM condition, and ServiceIamMember would need the deployer to hold
        # run.services.setIamPolicy (infra/grants.py, PROJECT_GRANTED_ROLES). The project holds
        # one Cloud Run service, this one.
        self.api_invoker = project_role(
            f"{name}-api-invoker", args.project, "roles/run.invoker", args.analyst_group, self.child
        )

        self.subscriber: gcp.cloudrunv2.WorkerPool | None = None
        if args.ingest_mode == "subscriber":
            if args.subscriber_service_account is None:
                raise ValueError("subscriber mode needs the subscriber service account")
            self.subscriber = gcp.cloudrunv2.WorkerPool(
                f"{name}-subscriber",
                project=args.project,
                location=args.region,
                name=SUBSCRIBER_NAME,
                launch_stage="BETA",  # worker pools are in preview on the provider's API version
                deletion_protection=args.deletion_protection,
                labels=args.labels,
                scaling={
                    "scaling_mode": "MANUAL",
                    "manual_instance_count": size.subscriber_instances,
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
                                    "cpu": size.subscriber_cpu,
                                    "memory": size.subscriber_memory,
                                }
                            },
                            "envs": _envs(args.subscriber_env),
                        },
                        # A worker pool always has CPU, so every 30 s scrape runs; the freshness,
                        # ingest and dead-letter alerts depend on these series.
                        collector.container("subscriber", self._scrape(args, SUBSCRIBER_NAME)),
                    ],
                },
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
            )
        self.api_url: pulumi.Output[str] = self.api.uri
        return {"api_url": self.api.uri}

    def _secret(
        self, name: str, secret_id: str, data: str, args: RuntimeArgs
    ) -> tuple[gcp.secretmanager.Secret, gcp.secretmanager.SecretVersion]:
        """A secret and its first version, which later runs leave alone (ignore_changes).

        Cloud Run refuses to start a revision whose secret has no version."""
        secret = gcp.secretmanager.Secret(
            name,
            project=args.project,
            secret_id=secret_id,
            replication={"auto": {}},
            labels=args.labels,
            opts=self.child,
        )
        version = gcp.secretmanager.SecretVersion(
            f"{name}-initial",
            secret=secret.id,
            secret_data=pulumi.Output.secret(data),
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["secret_data"]),
        )
        return secret, version

    @staticmethod
    def _scrape(args: RuntimeArgs, name: str) -> dict[str, Any]:
        return collector.config(
            project=args.project, location=args.region, namespace=name, port=CONTAINER_PORT
        )

    def _api_keys(
        self, name: str, args: RuntimeArgs
    ) -> tuple[pulumi.Output[str], list[pulumi.Resource]]:
        """The API's key-hash secret and, apart from it, the plain key the post-deploy test sends.

        The API accepts only `sha256:<hex>` entries in FLIGHTPIPE_API_KEYS (flightpipe_api.auth
        refuses a plain key at start-up), so the secret it mounts holds the hash; the plain key
        lives in its own secret that no service mounts and that only the deployer may read (the
        bootstrap's binding, infra/grants.py DEPLOYER_READ_SECRET_IDS). Both versions come from
        one random key drawn in the same run and are written once (ignore_changes): later keys
        are added in Secret Manager, not here.
        """
        key = secrets.token_urlsafe(32)
        digest = hashlib.sha256(key.encode()).hexdigest()
        hashes, version = self._secret(
            f"{name}-api-keys", API_KEYS_SECRET_ID, f"sha256:{digest}", args
        )
        plain, _ = self._secret(f"{name}-e2e-api-key", E2E_KEY_SECRET_ID, key, args)
        self.e2e_api_key_secret_id = plain.secret_id
        return hashes.secret_id, [version]
