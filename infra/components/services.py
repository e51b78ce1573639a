"""Project services: the Google APIs the program needs, enabled before anything uses them.

Every other component depends on `ProjectServices` so a fresh project converges in one `pulumi up`.
APIs stay enabled on destroy: disabling one would break anything else in the project using it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import pulumi_gcp as gcp

from components import Component

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


class ProjectServices(Component[ProjectServicesArgs]):
    """Enables `args.apis` on the project."""

    def build(self, name: str, args: ProjectServicesArgs) -> Mapping[str, Any]:
        self.services = [
            gcp.projects.Service(
                f"{name}-{api.split('.')[0]}",
                project=args.project,
                service=api,
                disable_on_destroy=False,
                opts=self.child,
            )
            for api in args.apis
        ]
        return {"apis": list(args.apis)}
