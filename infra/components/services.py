"""Project services: the Google APIs the program needs, enabled before anything uses them.

Every other component depends on `ProjectServices` so a fresh project converges in one `pulumi up`.
APIs stay enabled on destroy: disabling one would break anything else in the project using it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_gcp as gcp

REQUIRED_APIS: Final[tuple[str, ...]] = (
    "artifactregistry.googleapis.com",
    "bigquery.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudtrace.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",  # CI impersonates the deployer through it
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "serviceusage.googleapis.com",
    "sts.googleapis.com",  # Workload Identity Federation token exchange
)


@dataclass(frozen=True)
class ProjectServicesArgs:
    project: str
    apis: tuple[str, ...] = REQUIRED_APIS


class ProjectServices(pulumi.ComponentResource):
    """Enables `args.apis` on the project."""

    def __init__(
        self, name: str, args: ProjectServicesArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("flightpipe:infra:ProjectServices", name, None, opts)
        self.services = [
            gcp.projects.Service(
                f"{name}-{api.split('.')[0]}",
                project=args.project,
                service=api,
                disable_on_destroy=False,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for api in args.apis
        ]
        self.register_outputs({"apis": list(args.apis)})
