"""The bootstrap stack's configuration: the only bootstrap module that reads pulumi.Config."""

from __future__ import annotations

from dataclasses import dataclass

import bootstrap_names
import pulumi
from trust import TrustPolicy


@dataclass(frozen=True)
class BootstrapConfig:
    """Everything the bootstrap is told, validated."""

    env: str
    project: str
    gitlab_issuer_uri: str
    trust: TrustPolicy
    state_location: str
    kms_location: str
    # The warehouse dataset's location; the main stack's `flightpipe:datasetLocation` (which the
    # services read as FLIGHTPIPE_BIGQUERY_LOCATION) must name the same one.
    dataset_location: str
    # The warehouse dataset's id: the services' default (flightpipe.settings `dataset`), which
    # the main program names its tables' dataset by; tests/infra/test_iam_simulation.py checks
    # they are the same. (The bootstrap does not import flightpipe: it is type-checked alone.)
    dataset_id: str

    @property
    def state_bucket(self) -> str:
        return bootstrap_names.state_bucket(self.project)


def load() -> BootstrapConfig:
    """Read and validate the current bootstrap stack's configuration.

    A bad value stops the program with its one-line message: pulumi.RunError ends the run
    without the stack trace an unhandled exception prints (pulumi sdk/python/lib/pulumi/errors.py).
    """
    gcp = pulumi.Config("gcp")
    cfg = pulumi.Config()
    try:
        trust = TrustPolicy.from_config(cfg.get)
    except ValueError as e:
        raise pulumi.RunError(f"flightpipe-bootstrap config: {e}") from None
    return BootstrapConfig(
        env=pulumi.get_stack(),
        project=gcp.require("project"),
        gitlab_issuer_uri=cfg.get("gitlabIssuerUri") or "https://gitlab.com",
        trust=trust,
        state_location=cfg.get("stateLocation") or "US",
        kms_location=cfg.get("kmsLocation") or "us-central1",
        dataset_location=cfg.get("datasetLocation") or "US",
        dataset_id=cfg.get("datasetId") or "flights",
    )
