"""The stack's configuration: the only module that reads `pulumi.Config`.

`load()` turns the stack's settings (`Pulumi.<stack>.yaml`, documented in `Pulumi.yaml`) into one
frozen `StackConfig`; components receive plain values from it and never read configuration
themselves. The stack name is the environment (`dev`, `prod`). Invalid values fail here, before any
resource is declared, with a message naming the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Final, Literal, cast

import pulumi

IngestMode = Literal["subscriber", "bigquery-subscription"]
INGEST_MODES: Final[tuple[str, ...]] = ("subscriber", "bigquery-subscription")
INGRESS_VALUES: Final[tuple[str, ...]] = (
    "INGRESS_TRAFFIC_ALL",
    "INGRESS_TRAFFIC_INTERNAL_ONLY",
    "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER",
)
APP: Final = "flightpipe"
# The documents' example values (docs/deploying.md, Pulumi.yaml): a stack that still holds one
# would grant run.invoker to a group nobody reads or notify a channel that does not exist, and
# Google refuses both at deploy time (IAM: an unknown member fails the policy update; Monitoring:
# an unknown channel fails every alert policy). RFC 2606 reserves these domains for examples.
EXAMPLE_DOMAINS: Final[tuple[str, ...]] = ("example.com", "example.net", "example.org")
EXAMPLE_CHANNEL_IDS: Final[tuple[str, ...]] = ("1234567890123456789",)


@dataclass(frozen=True)
class Sizing:
    """The Cloud Run resources: the API service's scaling and size, the worker pool's."""

    api_min_instances: int
    api_max_instances: int
    api_concurrency: int
    api_cpu: str
    api_memory: str
    subscriber_instances: int
    subscriber_cpu: str
    subscriber_memory: str


@dataclass(frozen=True)
class Delivery:
    """The source subscription's delivery contract, which the subscriber is told as well."""

    ack_deadline_seconds: int
    max_delivery_attempts: int
    message_retention: str


@dataclass(frozen=True)
class StackConfig:
    """Everything the program is told, validated."""

    env: str
    project: str
    region: str
    ingest_mode: IngestMode
    dataset_location: str
    analyst_group: str
    image_tag: str
    # The BuildKit builder the images are built on (CI registers a remote one as BUILDX_BUILDER);
    # None uses the local Docker daemon.
    buildx_builder: str | None
    deletion_protection: bool
    api_ingress: str
    sizing: Sizing
    delivery: Delivery
    artifact_keep_count: int
    log_level: str
    trace_exporter: str
    api_keys_secret: str | None
    notification_channels: tuple[str, ...] = field(default_factory=tuple)
    # The bootstrap's deployer (infra/bootstrap output `deployer_service_account`), which CI
    # deploys as; `make preflight` checks it names the bootstrap's. The program grants it nothing:
    # its read of the plain e2e key is the bootstrap's binding (infra/grants.py).
    deployer_service_account: str | None = None

    @property
    def labels(self) -> dict[str, str]:
        """The labels every resource that takes labels carries."""
        return {"env": self.env, "app": APP, "managed-by": "pulumi"}

    @property
    def registry_host(self) -> str:
        return f"{self.region}-docker.pkg.dev"


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"config {key}={value!r}: expected one of {', '.join(allowed)}")
    return value


def _between(key: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise ValueError(f"config {key}={value}: expected {low}..{high}")
    return value


class ConfigError(pulumi.RunError, ValueError):
    """A bad stack setting: one line naming the key, no stack trace (pulumi.RunError ends the
    run with its message alone: pulumi sdk/python/lib/pulumi/errors.py)."""


def load() -> StackConfig:
    """Read and validate the current stack's configuration."""
    try:
        return _load()
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _load() -> StackConfig:
    env = pulumi.get_stack()
    gcp = pulumi.Config("gcp")
    cfg = pulumi.Config()
    api_min = _between("apiMinInstances", cfg.get_int("apiMinInstances") or 0, 0, 100)
    api_max = _between("apiMaxInstances", cfg.get_int("apiMaxInstances") or 5, 1, 1000)
    if api_max < api_min:
        raise ValueError("config apiMaxInstances must be >= apiMinInstances")
    # The image tag is the commit being deployed: config first, then GitLab's variable, so a
    # pipeline deploys exactly the commit it built. The digest, not this tag, is what runs.
    image_tag = cfg.get("imageTag") or os.environ.get("CI_COMMIT_SHA") or "local"
    return StackConfig(
        env=env,
        project=gcp.require("project"),
        region=gcp.get("region") or "us-central1",
        ingest_mode=cast(
            IngestMode, _choice("ingestMode", cfg.get("ingestMode") or "subscriber", INGEST_MODES)
        ),
        dataset_location=cfg.get("datasetLocation") or "US",
        analyst_group=_analyst_group(cfg.require("analystGroup")),
        image_tag=image_tag,
        buildx_builder=os.environ.get("BUILDX_BUILDER") or None,
        deletion_protection=_bool(cfg.get_bool("deletionProtection"), default=env == "prod"),
        api_ingress=_choice(
            "apiIngress", cfg.get("apiIngress") or "INGRESS_TRAFFIC_ALL", INGRESS_VALUES
        ),
        sizing=Sizing(
            api_min_instances=api_min,
            api_max_instances=api_max,
            api_concurrency=_between(
                "apiConcurrency", cfg.get_int("apiConcurrency") or 40, 1, 1000
            ),
            api_cpu=cfg.get("apiCpu") or "1",
            api_memory=cfg.get("apiMemory") or "512Mi",
            subscriber_instances=_between(
                "subscriberInstances", cfg.get_int("subscriberInstances") or 1, 1, 100
            ),
            subscriber_cpu=cfg.get("subscriberCpu") or "1",
            subscriber_memory=cfg.get("subscriberMemory") or "1Gi",
        ),
        # The ranges are the ones Pub/Sub accepts and flightpipe.settings validates.
        delivery=Delivery(
            ack_deadline_seconds=_between(
                "ackDeadlineSeconds", cfg.get_int("ackDeadlineSeconds") or 60, 10, 600
            ),
            max_delivery_attempts=_between(
                "maxDeliveryAttempts", cfg.get_int("maxDeliveryAttempts") or 5, 5, 100
            ),
            message_retention=cfg.get("messageRetention") or "604800s",
        ),
        artifact_keep_count=_between(
            "artifactKeepCount", cfg.get_int("artifactKeepCount") or 10, 1, 1000
        ),
        log_level=_choice(
            "logLevel", cfg.get("logLevel") or "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")
        ),
        trace_exporter=_choice(
            "traceExporter", cfg.get("traceExporter") or "gcp", ("none", "console", "gcp")
        ),
        api_keys_secret=cfg.get("apiKeysSecret") or None,
        notification_channels=_channels(cfg.get_object("notificationChannels") or ()),
        deployer_service_account=_service_account(cfg.get("deployerServiceAccount")),
    )


def _analyst_group(value: str) -> str:
    """An IAM member (`group:`, `user:`, `serviceAccount:`, `domain:`), not a documented example."""
    kind, _, address = value.partition(":")
    if kind not in ("group", "user", "serviceAccount", "domain") or not address:
        raise ValueError(
            f"config analystGroup={value!r}: expected an IAM member such as group:<email>"
        )
    if address.rsplit("@", 1)[-1].lower() in EXAMPLE_DOMAINS:
        raise ValueError(
            f"config analystGroup={value!r} is the documentation's example: set your analysts' "
            "group (pulumi config set analystGroup group:<email>, docs/deploying.md step 3)"
        )
    return value


def _channels(value: object) -> tuple[str, ...]:
    """Cloud Monitoring channel names `projects/<p>/notificationChannels/<id>`, no example ids."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError("config notificationChannels: expected a list of channel names")
    for channel in value:
        parts = channel.split("/")
        if len(parts) != 4 or parts[0] != "projects" or parts[2] != "notificationChannels":
            raise ValueError(
                f"config notificationChannels: {channel!r} is not "
                "projects/<project>/notificationChannels/<id>"
            )
        if parts[3] in EXAMPLE_CHANNEL_IDS:
            raise ValueError(
                f"config notificationChannels: {channel!r} is the documentation's example id: "
                "use one of `gcloud beta monitoring channels list` (docs/deploying.md step 3)"
            )
    return tuple(value)


def _service_account(value: str | None) -> str | None:
    if value and not value.endswith(".iam.gserviceaccount.com"):
        raise ValueError(
            f"config deployerServiceAccount={value!r}: expected a service account email"
        )
    return value or None


def _bool(value: bool | None, *, default: bool) -> bool:
    return default if value is None else value
