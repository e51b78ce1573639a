"""The Google APIs the fake project answers once a call is authorised, and what they hold.

`Resources` is a fake project's state (its enabled APIs, Cloud Run services, secrets, buckets,
keys, WIF providers, groups, notification channels) and `Resources.resource_route` maps one call
to a `Route`: the API it belongs to, the project billed for it, the IAM checks Google makes, and
the answer once they pass. Authentication and authorisation are tests/delivery/fake_google.py's.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from tests.delivery.google_errors import (
    CLOUD_IDENTITY,
    IAM,
    IAM_CREDENTIALS,
    KMS,
    MONITORING,
    RESOURCE_MANAGER,
    RUN,
    SECRET_MANAGER,
    SERVICE_USAGE,
    STORAGE,
    not_found,
)

Answer = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


@dataclass(frozen=True)
class Route:
    """What one answered call needs: the API, its consumer project, the IAM checks."""

    service: str
    consumer: str
    checks: tuple[tuple[str, str, str], ...]  # (permission, scope, resource name for messages)
    policy_project: str | None = None  # whose policies hold the resource; None: the consumer


def deployed_apis() -> frozenset[str]:
    """What a project holds after the bootstrap and one `pulumi up`: both programs' API lists."""
    from scripts.preflight import BOOTSTRAP_APIS, PROGRAM_APIS

    return frozenset(BOOTSTRAP_APIS) | frozenset(PROGRAM_APIS)


def account_project(email: str) -> str | None:
    """A user-managed service account's project: `<id>@<project>.iam.gserviceaccount.com`."""
    found = re.fullmatch(r"[^@]+@([^.]+)\.iam\.gserviceaccount\.com", email)
    return found.group(1) if found else None


def _known(name: str, known: Collection[str], found: dict[str, Any], missing: str) -> Answer:
    """The answer to a get: `found` when `name` exists, else Google's 404 for `missing`."""
    return lambda _: (200, found) if name in known else not_found(missing)


@dataclass
class Resources:
    """A fake project's state: its APIs and resources.

    `enabled_apis`: project -> its enabled services; a project not listed has `deployed_apis()`.
    """

    secrets: dict[str, str] = field(default_factory=dict)  # "projects/P/secrets/S" -> payload
    revisions: dict[str, list[str]] = field(default_factory=dict)  # service path -> [old, new]
    enabled_apis: dict[str, set[str]] = field(default_factory=dict)
    project_numbers: dict[str, str] = field(default_factory=dict)  # project id -> number
    buckets: dict[str, str] = field(default_factory=dict)  # bucket -> project
    # projects/P/locations/L/keyRings/R/cryptoKeys/K
    crypto_keys: set[str] = field(default_factory=set)
    wif_providers: set[str] = field(default_factory=set)  # projects/<number>/locations/global/...
    groups: set[str] = field(default_factory=set)  # group emails Cloud Identity knows
    # projects/P/notificationChannels/N
    notification_channels: set[str] = field(default_factory=set)
    _gets: dict[str, int] = field(default_factory=dict)
    _serving: dict[str, str] = field(default_factory=dict)

    def serving(self, service: str) -> str:
        """Before a deploy: the old revision; from the second read on, the new one."""
        if service in self._serving:
            return self._serving[service]
        count = self._gets[service] = self._gets.get(service, 0) + 1
        old, new = self.revisions[service]
        return old if count == 1 else new

    def apis(self, project: str) -> set[str]:
        return self.enabled_apis.get(project) or set(deployed_apis())

    def resource_route(
        self, method: str, path: str, caller: str, headers: Any, query: dict[str, str]
    ) -> tuple[Route, Answer] | None:
        """The call's API, consumer and IAM checks, and how to answer it once allowed.

        The consumer of a resource-based API is the project holding the resource; of a
        client-based one (IAM Credentials, Cloud Identity), the caller's quota project
        (`x-goog-user-project`) or its own project (https://cloud.google.com/docs/quotas/quota-project).
        """
        client_project = headers.get("x-goog-user-project") or account_project(caller) or ""
        # Cloud Run Admin v2 (https://cloud.google.com/run/docs/reference/iam/permissions):
        # services.get needs run.services.get; services.patch run.services.update, and
        # iam.serviceAccounts.actAs on the identity the service runs as
        # (https://cloud.google.com/run/docs/securing/service-identity); operations.get
        # run.operations.get.
        service = re.fullmatch(r"/v2/(projects/([^/]+)/locations/[^/]+/services/([^/]+))", path)
        if service:
            name, project, short = service.groups()
            scope = f"run-service:{short}"
            if method == "GET":
                get = (("run.services.get", scope, name),)
                return Route(RUN, project, get), lambda _: self._get_service(name)
            if method == "PATCH":
                runs_as = f"flightpipe-api@{project}.iam.gserviceaccount.com"
                patch = (
                    ("run.services.update", scope, name),
                    ("iam.serviceAccounts.actAs", f"service-account:{runs_as}", runs_as),
                )
                return Route(RUN, project, patch), lambda body: self._patch_service(name, body)
        operation = re.fullmatch(r"/v2/(projects/([^/]+)/locations/[^/]+/operations/[^/]+)", path)
        if operation and method == "GET":
            checks = (("run.operations.get", "project", operation.group(1)),)
            done = {"name": operation.group(1), "done": True}
            return Route(RUN, operation.group(2), checks), lambda _: (200, done)
        # Secret Manager: versions.access needs secretmanager.versions.access on the secret
        # (https://cloud.google.com/secret-manager/docs/access-control).
        secret = re.fullmatch(
            r"/v1/(projects/([^/]+)/secrets/([^/]+))/versions/latest:access", path
        )
        if secret and method == "GET":
            name, project, short = secret.groups()
            checks = (("secretmanager.versions.access", f"secret:{short}", name),)
            return Route(SECRET_MANAGER, project, checks), lambda _: self._access(name, path)
        # IAM Credentials generateIdToken needs iam.serviceAccounts.getOpenIdToken on the account
        # (https://cloud.google.com/iam/docs/create-short-lived-credentials-direct).
        account = re.fullmatch(r"/v1/projects/-/serviceAccounts/([^:]+):generateIdToken", path)
        if account and method == "POST":
            email = account.group(1)
            checks = (("iam.serviceAccounts.getOpenIdToken", f"service-account:{email}", email),)
            owner = account_project(email)
            return Route(IAM_CREDENTIALS, client_project, checks, owner), lambda body: (
                200,
                {"token": f"idt:{email}:{body.get('audience')}"},
            )
        return self._preflight_route(method, path, client_project, query)

    def _preflight_route(  # noqa: PLR0911 - one branch per Google endpoint
        self, method: str, path: str, client_project: str, query: dict[str, str]
    ) -> tuple[Route, Answer] | None:
        """The read-only gets of scripts/preflight.py (each method's permission: its REST
        reference page's "IAM permissions" section, linked at each branch)."""
        if method != "GET":
            return None
        # https://cloud.google.com/resource-manager/reference/rest/v3/projects/get
        project = re.fullmatch(r"/v3/projects/([^/]+)", path)
        if project:
            pid = project.group(1)
            checks = (("resourcemanager.projects.get", "project", f"projects/{pid}"),)
            number = self.project_numbers.get(pid)
            found = {"name": f"projects/{number}", "projectId": pid, "state": "ACTIVE"}
            known = [pid] if number else []
            return Route(RESOURCE_MANAGER, pid, checks), _known(pid, known, found, f"Project {pid}")
        # https://cloud.google.com/service-usage/docs/reference/rest/v1/services/list
        services = re.fullmatch(r"/v1/projects/([^/]+)/services", path)
        if services:
            pid = self._project_id(services.group(1))
            checks = (("serviceusage.services.list", "project", f"projects/{pid}"),)
            return Route(SERVICE_USAGE, pid, checks), lambda _: self._services(pid, query)
        # https://cloud.google.com/storage/docs/json_api/v1/buckets/get (storage.buckets.get)
        bucket = re.fullmatch(r"/storage/v1/b/([^/]+)", path)
        if bucket:
            name = bucket.group(1)
            owner = self.buckets.get(name, client_project)
            checks = (("storage.buckets.get", f"bucket:{name}", f"projects/_/buckets/{name}"),)
            return Route(STORAGE, owner, checks), lambda _: self._bucket(name)
        # https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys/get
        key = re.fullmatch(
            r"/v1/(projects/([^/]+)/locations/[^/]+/keyRings/([^/]+)/cryptoKeys/([^/]+))", path
        )
        if key:
            name, pid, ring, short = key.groups()
            checks = (("cloudkms.cryptoKeys.get", f"kms-key:{ring}/{short}", name),)
            found = {"name": name, "purpose": "ENCRYPT_DECRYPT", "primary": {"state": "ENABLED"}}
            answer = _known(name, self.crypto_keys, found, f"CryptoKey {name}")
            return Route(KMS, pid, checks), answer
        # https://cloud.google.com/iam/docs/reference/rest/v1/projects.locations.workloadIdentityPools.providers/get
        provider = re.fullmatch(
            r"/v1/(projects/([^/]+)/locations/global/workloadIdentityPools/[^/]+/providers/[^/]+)",
            path,
        )
        if provider:
            name = provider.group(1)
            pid = self._project_id(provider.group(2))
            checks = (("iam.googleapis.com/workloadIdentityPoolProviders.get", "project", name),)
            found = {"name": name, "state": "ACTIVE", "disabled": False}
            answer = _known(name, self.wif_providers, found, f"Requested entity {name}")
            return Route(IAM, pid, checks), answer
        # https://cloud.google.com/identity/docs/reference/rest/v1/groups/lookup: no IAM
        # permission needed.
        if path == "/v1/groups:lookup":
            email = query.get("groupKey.id", "")
            return Route(CLOUD_IDENTITY, client_project, ()), lambda _: self._group(email)
        # https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.notificationChannels/get
        channel = re.fullmatch(r"/v3/(projects/([^/]+)/notificationChannels/[^/]+)", path)
        if channel:
            name, pid = channel.groups()
            checks = (("monitoring.notificationChannels.get", "project", name),)
            found = {"name": name, "type": "email", "enabled": True}
            missing = f"Notification channel {name}"
            answer = _known(name, self.notification_channels, found, missing)
            return Route(MONITORING, pid, checks), answer
        return None

    def _project_id(self, id_or_number: str) -> str:
        """Google accepts a project id or number in these paths; the fake keys by id."""
        by_number = {n: p for p, n in self.project_numbers.items()}
        return by_number.get(id_or_number, id_or_number)

    def _get_service(self, name: str) -> tuple[int, dict[str, Any]]:
        if name not in self.revisions:
            return not_found(f"Resource '{name.rsplit('/', 1)[-1]}' of kind 'SERVICE'")
        return 200, {"trafficStatuses": [{"revision": self.serving(name), "percent": 100}]}

    def _patch_service(self, name: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if name not in self.revisions:
            return not_found(f"Resource '{name.rsplit('/', 1)[-1]}' of kind 'SERVICE'")
        (target,) = body["traffic"]
        self._serving[name] = target["revision"]
        operation = name.rsplit("/services/", 1)[0] + "/operations/rollback"
        return 200, {"name": operation, "done": True}

    def _access(self, name: str, path: str) -> tuple[int, dict[str, Any]]:
        if name not in self.secrets:
            return not_found(f"Secret [{name}]")
        data = base64.b64encode(self.secrets[name].encode()).decode()
        return 200, {"name": path, "payload": {"data": data}}

    def _bucket(self, name: str) -> tuple[int, dict[str, Any]]:
        if name in self.buckets:
            return 200, {"name": name, "kind": "storage#bucket"}
        return 404, {"error": {"code": 404, "message": "The specified bucket does not exist."}}

    def _group(self, email: str) -> tuple[int, dict[str, Any]]:
        """Cloud Identity answers 403 "Error(2028): Permission denied for resource ... (or it may
        not exist)" for a group the caller cannot see
        (terraform-google-modules/terraform-example-foundation#1206)."""
        if email in self.groups:
            return 200, {"name": f"groups/{abs(hash(email)) % 10**12:012d}"}
        message = f"Error(2028): Permission denied for resource {email} (or it may not exist)."
        return 403, {"error": {"code": 403, "message": message, "status": "PERMISSION_DENIED"}}

    def _services(self, project: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        number = self.project_numbers.get(project, project)
        listed = sorted(self.apis(project))
        if query.get("filter") not in (None, "state:ENABLED"):
            return 400, {"error": {"code": 400, "message": "stand-in: unsupported filter"}}
        return 200, {
            "services": [
                {
                    "name": f"projects/{number}/services/{s}",
                    "config": {"name": s},
                    "state": "ENABLED",
                }
                for s in listed
            ]
        }
