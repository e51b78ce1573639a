"""Registry and images: an Artifact Registry repository and the two service images.

Both images are built from `services/Dockerfile` (target <name>), the repository root as context,
pushed by the program itself (pulumi-docker-build), tagged with the commit being deployed. What runs
is `image.ref`, `<repository>/<name>@sha256:<digest>`: a digest is immutable, so a revision always
runs exactly the bytes that were built, and re-pushing a tag cannot change production. The cleanup
policy keeps the newest `keep_count` versions of each image and deletes older ones after 30 days,
so the repository does not grow without bound while rollbacks stay possible.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pulumi
import pulumi_docker_build as docker_build
import pulumi_gcp as gcp

from components import Component

SERVICES: Final[tuple[str, ...]] = ("api", "subscriber")
THIRTY_DAYS: Final = "2592000s"


@dataclass(frozen=True)
class RegistryArgs:
    project: str
    region: str
    repository_id: str
    image_tag: str
    keep_count: int
    context: Path  # the repository root: the Dockerfiles copy flightpipe/ and services/ from it
    labels: dict[str, str]
    services: tuple[str, ...] = SERVICES
    builder: str | None = None  # a buildx builder name (CI: the remote BuildKit service)


class Registry(Component[RegistryArgs]):
    """The Docker repository and one pushed image per service (`self.images[name].ref`)."""

    def build(self, name: str, args: RegistryArgs) -> Mapping[str, Any]:
        self.repository = gcp.artifactregistry.Repository(
            f"{name}-repo",
            project=args.project,
            location=args.region,
            repository_id=args.repository_id,
            format="DOCKER",
            description="flightpipe service images",
            cleanup_policy_dry_run=False,
            cleanup_policies=[
                {
                    "id": "keep-recent",
                    "action": "KEEP",
                    "most_recent_versions": {"keep_count": args.keep_count},
                },
                {
                    "id": "delete-old",
                    "action": "DELETE",
                    "condition": {"tag_state": "ANY", "older_than": THIRTY_DAYS},
                },
            ],
            labels=args.labels,
            opts=self.child,
        )
        host = f"{args.region}-docker.pkg.dev"
        self.repository_url = pulumi.Output.concat(
            host, "/", args.project, "/", self.repository.repository_id
        )
        # A short-lived token of whoever runs `pulumi up` (the deployer in CI): no stored keys.
        token = gcp.organizations.get_client_config_output().access_token
        self.images: dict[str, docker_build.Image] = {}
        for service in args.services:
            self.images[service] = docker_build.Image(
                f"{name}-{service}",
                context={"location": str(args.context)},
                # One Dockerfile, one target per service, each with only its own lock;
                # `target` is Docker's `--target` (pulumi-docker-build's Image docstring).
                dockerfile={"location": str(args.context / "services" / "Dockerfile")},
                target=service,
                platforms=[docker_build.Platform.LINUX_AMD64],
                tags=[pulumi.Output.concat(self.repository_url, f"/{service}:{args.image_tag}")],
                push=True,
                builder={"name": args.builder} if args.builder else None,
                registries=[
                    {
                        "address": host,
                        "username": "oauth2accesstoken",
                        "password": pulumi.Output.secret(token),
                    }
                ],
                labels={**args.labels, "org.opencontainers.image.revision": args.image_tag},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.repository]),
            )
        return {f"{s}_image": image.ref for s, image in self.images.items()} | {
            "repository": self.repository_url
        }
