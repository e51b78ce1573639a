"""The Google an owner meets while following docs/deploying.md: a fake project per environment.

`owners_google(...)` is a `FakeGoogle` (tests/delivery/fake_google.py) that holds what the guide's
commands made, read from the stand-ins' cloud (the bootstrap's bucket, key and provider, the APIs
the owner enabled), and what the owner's organisation has before the guide (`Organisation`:
groups, notification channels); the owner may do what `roles/owner` allows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scripts.preflight import BOOTSTRAP_APIS
from tests.delivery.fake_google import MONITORING, FakeGoogle, simulated_iam

if TYPE_CHECKING:
    from tests.delivery.guide import Operator

OWNER_ACCOUNT = "owner@acme-flights.dev"  # the owner's Google account, who runs the guide


@dataclass(frozen=True)
class Organisation:
    """What the owner's Google organisation holds before the guide: the groups Cloud Identity
    knows (emails) and the notification channels made in Monitoring (step 0 of the guide)."""

    groups: frozenset[str]
    channels: frozenset[str]

    @classmethod
    def of(cls, operators: Iterable[Operator]) -> Organisation:
        """The organisation the operators' values come from: their groups and channels exist."""
        operators = list(operators)
        return cls(
            frozenset(o.analyst_group.removeprefix("group:") for o in operators),
            frozenset(o.notification_channel for o in operators if o.notification_channel),
        )


@dataclass
class OwnersGoogle(FakeGoogle):
    """The owner's projects as the guide's commands leave them.

    Before each call it reads the stand-ins' cloud (`cloud`, $STANDIN_STATE): an updated bootstrap
    stack's outputs name the state bucket, the KMS key and the WIF provider it made (and, in the
    provider's name, the project's number); the bootstrap enables `BOOTSTRAP_APIS`
    (tests/delivery/test_preflight.py checks that list against the program); `gcloud services
    enable` adds its services; `gcloud auth application-default login` records the refresh token
    it was issued.
    """

    cloud: Path | None = None

    def sync(self) -> None:
        try:
            cloud = json.loads(self.cloud.read_text()) if self.cloud else {}
        except (OSError, ValueError):
            return  # nothing made yet
        self.refresh_tokens.update(cloud.get("refresh_tokens", {}))
        for backend in cloud.get("backends", {}).values():
            for name, stack in backend.get("stacks", {}).items():
                if name.startswith("flightpipe-bootstrap/") and stack.get("updated"):
                    self._bootstrapped(stack["outputs"])
        for project, services in cloud.get("services", {}).items():
            self.enabled_apis.setdefault(project, set()).update(services)

    def _bootstrapped(self, outputs: dict[str, Any]) -> None:
        key = str(outputs["secrets_provider"]).removeprefix("gcpkms://")
        project = key.split("/")[1]
        provider = str(outputs["wif_provider"])  # projects/<number>/locations/global/...
        self.project_numbers[project] = provider.split("/")[1]
        self.buckets[str(outputs["state_url"]).removeprefix("gs://")] = project
        self.crypto_keys.add(key)
        self.wif_providers.add(provider)
        self.enabled_apis.setdefault(project, set()).update(BOOTSTRAP_APIS)


def owners_google(cloud: Path, projects: Iterable[str], organisation: Organisation) -> OwnersGoogle:
    """The fake Google of an owner (`OWNER_ACCOUNT`, `roles/owner` on `projects`)."""
    owner = f"user:{OWNER_ACCOUNT}"
    bindings = []
    for project in projects:
        bindings.append((project, "project", "roles/owner", owner))
        # A new bucket's policy gives the project's owners legacyBucketOwner (convenience value
        # projectOwner: https://cloud.google.com/storage/docs/access-control/iam#convenience-values).
        bucket = f"bucket:{project}-pulumi-state"
        bindings.append((project, bucket, "roles/storage.legacyBucketOwner", owner))
    google = OwnersGoogle(authorize=simulated_iam((), extra=bindings), cloud=cloud)
    google.groups |= organisation.groups
    for channel in organisation.channels:
        google.notification_channels.add(channel)
        # A channel is made in Cloud Monitoring: its project has the Monitoring API on.
        google.enabled_apis.setdefault(channel.split("/")[1], set()).add(MONITORING)
    return google
