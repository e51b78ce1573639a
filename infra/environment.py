"""The environment variables the Pulumi program injects into each service.

Names are exactly the ones `flightpipe.settings` reads (`ENV_VARS`); `_checked` refuses any other
name at program time, and a test compares what the Cloud Run resources carry. Values the services
share with the cloud resources (topic, subscription, dataset...) come from the resources' outputs,
so a renamed resource cannot leave a service pointing at the old name. `PORT` is Cloud Run's own
and `FLIGHTPIPE_API_KEYS` is mounted from Secret Manager by the runtime component.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
from config import StackConfig

from flightpipe.settings import ENV_VARS


@dataclass(frozen=True)
class SharedNames:
    """Cloud resource names both the program and the services use."""

    topic: pulumi.Input[str]
    subscription: pulumi.Input[str]
    dead_letter_topic: pulumi.Input[str]
    dataset: pulumi.Input[str]


def _checked(env: Mapping[str, pulumi.Input[str]]) -> dict[str, pulumi.Input[str]]:
    unknown = sorted(set(env) - set(ENV_VARS))
    if unknown:
        raise ValueError(f"not read by flightpipe.settings: {', '.join(unknown)}")
    return dict(env)


def _common(cfg: StackConfig, names: SharedNames) -> dict[str, pulumi.Input[str]]:
    return {
        "FLIGHTPIPE_WAREHOUSE": "bigquery",
        "GOOGLE_CLOUD_PROJECT": cfg.project,
        "FLIGHTPIPE_DATASET": names.dataset,
        "FLIGHTPIPE_BIGQUERY_LOCATION": cfg.dataset_location,
        "FLIGHTPIPE_LOG_LEVEL": cfg.log_level,
        "FLIGHTPIPE_TRACE_EXPORTER": cfg.trace_exporter,
    }


def api_env(cfg: StackConfig, names: SharedNames) -> dict[str, pulumi.Input[str]]:
    """The API reads the warehouse only; one request thread per request Cloud Run may send it."""
    return _checked(
        _common(cfg, names) | {"FLIGHTPIPE_HTTP_THREADS": str(cfg.sizing.api_concurrency)}
    )


def subscriber_env(cfg: StackConfig, names: SharedNames) -> dict[str, pulumi.Input[str]]:
    """The subscriber pulls the subscription, dead-letters to the topic, writes the warehouse."""
    return _checked(
        _common(cfg, names)
        | {
            "FLIGHTPIPE_BROKER": "pubsub",
            "FLIGHTPIPE_TOPIC": names.topic,
            "FLIGHTPIPE_SUBSCRIPTION": names.subscription,
            "FLIGHTPIPE_DEAD_LETTER_TOPIC": names.dead_letter_topic,
            # Kept equal to the subscription's own settings so its lease and DLQ logic agree.
            "FLIGHTPIPE_ACK_DEADLINE_SECONDS": str(cfg.delivery.ack_deadline_seconds),
            "FLIGHTPIPE_MAX_DELIVERY_ATTEMPTS": str(cfg.delivery.max_delivery_attempts),
        }
    )
