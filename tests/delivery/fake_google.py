"""A recording stand-in for the Google endpoints the pipeline's jobs and `make preflight` call.

Served on loopback; the callers reach it through the endpoint variables their scripts honour
(`GOOGLE_STS_URL`, `GOOGLE_IAMCREDENTIALS_URL` in scripts/gcp_wif_login.sh's credential file,
`CLOUD_RUN_API`, `SECRET_MANAGER_API` in scripts/cloud_run.py, the `*_API` variables of
scripts/preflight.py), so the real google-auth and requests code runs: the Workload Identity
Federation exchange (STS, then `generateAccessToken` of the service account the credential
names), `generateIdToken`, Cloud Run's service GET, PATCH and operation GET, Secret Manager's
`versions/latest:access`, and the read-only gets preflight makes (Resource Manager, Service Usage,
Cloud Storage, Cloud KMS, IAM, Cloud Identity, Monitoring).

It is a fake *project*: each project has the APIs it has enabled, and each answered call is
authorised against an identity table. A call to an API its consumer project has not enabled is
refused with 403 SERVICE_DISABLED; a call whose caller lacks the permission the method needs is
refused with 403 IAM_PERMISSION_DENIED; both with Google's error bodies. The default identity
table is the IAM simulation of tests/infra (`simulated_iam`): the bindings the main program and
the bootstrap declare for the dev and prod stacks.

Tokens carry who they belong to (`at:<account>`), so every recorded call says which identity made
it; a call without a token this stand-in issued is refused with 401.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FEDERATED = "federated-token"

# (member, permission, scope, project) -> granted. Scopes are the IAM simulation's
# (tests/infra/iam_calls.py): `project`, `run-service:<name>`, `secret:<id>`,
# `service-account:<email>`, `bucket:<name>`, `kms-key:<ring>/<key>`.
Authorizer = Callable[[str, str, str, str], bool]

RUN = "run.googleapis.com"
SECRET_MANAGER = "secretmanager.googleapis.com"  # pragma: allowlist secret
IAM_CREDENTIALS = "iamcredentials.googleapis.com"
RESOURCE_MANAGER = "cloudresourcemanager.googleapis.com"
SERVICE_USAGE = "serviceusage.googleapis.com"
STORAGE = "storage.googleapis.com"
KMS = "cloudkms.googleapis.com"
IAM = "iam.googleapis.com"
CLOUD_IDENTITY = "cloudidentity.googleapis.com"
MONITORING = "monitoring.googleapis.com"
STS = "sts.googleapis.com"

# The titles Google puts in a SERVICE_DISABLED message ("<title> has not been used in project").
TITLES: dict[str, str] = {
    RUN: "Cloud Run Admin API",
    SECRET_MANAGER: "Secret Manager API",  # pragma: allowlist secret
    IAM_CREDENTIALS: "IAM Service Account Credentials API",
    RESOURCE_MANAGER: "Cloud Resource Manager API",
    SERVICE_USAGE: "Service Usage API",
    STORAGE: "Cloud Storage API",
    KMS: "Cloud Key Management Service (KMS) API",
    IAM: "Identity and Access Management (IAM) API",
    CLOUD_IDENTITY: "Cloud Identity API",
    MONITORING: "Cloud Monitoring API",
}


def deployed_apis() -> frozenset[str]:
    """What a project holds after the bootstrap and one `pulumi up`: both programs' API lists."""
    from scripts.preflight import BOOTSTRAP_APIS, PROGRAM_APIS

    return frozenset(BOOTSTRAP_APIS) | frozenset(PROGRAM_APIS)


def member_of(caller: str) -> str:
    """The IAM member a token's owner is: a service account, or a user."""
    return (
        f"serviceAccount:{caller}" if caller.endswith(".gserviceaccount.com") else f"user:{caller}"
    )


def account_project(email: str) -> str | None:
    """A user-managed service account's project: `<id>@<project>.iam.gserviceaccount.com`."""
    found = re.fullmatch(r"[^@]+@([^.]+)\.iam\.gserviceaccount\.com", email)
    return found.group(1) if found else None


def service_disabled(service: str, consumer: str) -> tuple[int, dict[str, Any]]:
    """Google's 403 for a call to an API the consumer project has not enabled.

    Body shape: google.rpc.Status with a google.rpc.Help link and a google.rpc.ErrorInfo whose
    reason is SERVICE_DISABLED, domain googleapis.com, metadata consumer/service
    (googleapis/googleapis google/api/error_reason.proto, SERVICE_DISABLED; full bodies quoted in
    google-gemini/gemini-cli#1343 and GoogleCloudPlatform/pbmm-on-gcp-onboarding#432).
    """
    url = f"https://console.developers.google.com/apis/api/{service}/overview?project={consumer}"
    title = TITLES.get(service, service)
    message = (
        f"{title} has not been used in project {consumer} before or it is disabled. Enable it by "
        f"visiting {url} then retry. If you enabled this API recently, wait a few minutes for "
        "the action to propagate to our systems and retry."
    )
    return 403, {
        "error": {
            "code": 403,
            "message": message,
            "status": "PERMISSION_DENIED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.Help",
                    "links": [
                        {"description": "Google developers console API activation", "url": url}
                    ],
                },
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "SERVICE_DISABLED",
                    "domain": "googleapis.com",
                    "metadata": {
                        "consumer": f"projects/{consumer}",
                        "service": service,
                        "serviceTitle": title,
                        "containerInfo": consumer,
                        "activationUrl": url,
                    },
                },
            ],
        }
    }


def permission_denied(permission: str, resource: str) -> tuple[int, dict[str, Any]]:
    """Google's 403 for a caller without the permission: "Permission 'p' denied on resource 'r'
    (or it may not exist)." with ErrorInfo IAM_PERMISSION_DENIED (error_reason.proto,
    IAM_PERMISSION_DENIED; the message as google-github-actions/deploy-cloudrun#182 quotes it)."""
    return 403, {
        "error": {
            "code": 403,
            "message": f"Permission '{permission}' denied on resource '{resource}' "
            "(or it may not exist).",
            "status": "PERMISSION_DENIED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "IAM_PERMISSION_DENIED",
                    "domain": "iam.googleapis.com",
                    "metadata": {"permission": permission, "resource": resource},
                }
            ],
        }
    }


def not_found(what: str) -> tuple[int, dict[str, Any]]:
    return 404, {"error": {"code": 404, "message": f"{what} not found.", "status": "NOT_FOUND"}}


@dataclass(frozen=True)
class Route:
    """What one answered call needs: the API, its consumer project, the IAM checks."""

    service: str
    consumer: str
    checks: tuple[tuple[str, str, str], ...]  # (permission, scope, resource name for messages)
    policy_project: str | None = None  # whose policies hold the resource; None: the consumer


@dataclass
class FakeGoogle:
    """State: the projects' APIs and resources, who may do what, and every call received.

    `enabled_apis`: project -> its enabled services; a project not listed has `deployed_apis()`.
    `authorize`: the identity table; None: `simulated_iam()` (built on first use).
    """

    secrets: dict[str, str] = field(default_factory=dict)  # "projects/P/secrets/S" -> payload
    revisions: dict[str, list[str]] = field(default_factory=dict)  # service path -> [old, new]
    calls: list[Call] = field(default_factory=list)
    subject_tokens: list[str] = field(default_factory=list)
    enabled_apis: dict[str, set[str]] = field(default_factory=dict)
    authorize: Authorizer | None = None
    project_numbers: dict[str, str] = field(default_factory=dict)  # project id -> number
    buckets: dict[str, str] = field(default_factory=dict)  # bucket -> project
    crypto_keys: set[str] = field(
        default_factory=set
    )  # projects/P/locations/L/keyRings/R/cryptoKeys/K
    wif_providers: set[str] = field(default_factory=set)  # projects/<number>/locations/global/...
    groups: set[str] = field(default_factory=set)  # group emails Cloud Identity knows
    notification_channels: set[str] = field(
        default_factory=set
    )  # projects/P/notificationChannels/N
    _gets: dict[str, int] = field(default_factory=dict)
    _serving: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serving(self, service: str) -> str:
        """Before a deploy: the old revision; from the second read on, the new one."""
        if service in self._serving:
            return self._serving[service]
        count = self._gets[service] = self._gets.get(service, 0) + 1
        old, new = self.revisions[service]
        return old if count == 1 else new

    def apis(self, project: str) -> set[str]:
        return self.enabled_apis.get(project) or set(deployed_apis())

    def allowed(self, member: str, permission: str, scope: str, project: str) -> bool:
        if self.authorize is None:
            self.authorize = simulated_iam()
        return self.authorize(member, permission, scope, project)

    def start(self) -> tuple[ThreadingHTTPServer, str]:
        # The identity table is built here, in the caller's thread: the simulation runs the
        # Pulumi programs under mocks, which need the thread's event loop.
        if self.authorize is None:
            self.authorize = simulated_iam()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

            def _body(self) -> dict[str, Any]:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                if not raw:
                    return {}
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    return dict(json.loads(raw))
                return {k: v[0] for k, v in urllib.parse.parse_qs(raw).items()}

            def _answer(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _caller(self) -> str | None:
                auth = self.headers.get("Authorization", "")
                token = auth.removeprefix("Bearer ")
                return token.removeprefix("at:") if token.startswith("at:") else None

            def _handle(self, method: str) -> None:
                split = urllib.parse.urlsplit(self.path)
                query = {k: v[0] for k, v in urllib.parse.parse_qs(split.query).items()}
                body = self._body() if method in ("POST", "PATCH") else {}
                caller = self._caller()
                with fake.lock:
                    fake.calls.append(Call(method, split.path, caller, body, query))
                    status, payload = fake.route(
                        method, split.path, body, caller, self.headers, query=query
                    )
                self._answer(status, payload)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

            def do_PUT(self) -> None:
                self._handle("PUT")

            def do_DELETE(self) -> None:
                self._handle("DELETE")

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_port}"

    def route(  # noqa: PLR0911 - one answer per Google endpoint
        self,
        method: str,
        path: str,
        body: dict[str, Any],
        caller: str | None,
        headers: Any,
        *,
        query: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """One Google API call: (status, JSON answer)."""
        query = query or {}
        if method == "POST" and path == "/v1/token":  # STS token exchange
            self.subject_tokens.append(str(body.get("subject_token", "")))
            ok = body.get("subject_token") and body.get("audience", "").startswith("//iam.")
            if not ok:
                return 400, {"error": "invalid_request"}
            # A provider without allowedAudiences takes only tokens whose `aud` is its own full
            # resource name, with or without `https:` (IAM v1 WorkloadIdentityPoolProvider
            # Oidc.allowedAudiences; tests/infra/gitlab_tokens.accepted_audiences); the bootstrap
            # sets none. STS answers an OAuth error (RFC 8693 2.2.2, RFC 6749 5.2: invalid_grant).
            provider = str(body["audience"]).removeprefix("//iam.googleapis.com/")
            aud = _claims(str(body["subject_token"])).get("aud")
            if aud not in (
                f"//iam.googleapis.com/{provider}",
                f"https://iam.googleapis.com/{provider}",
            ):
                return 400, {
                    "error": "invalid_grant",
                    "error_description": f"The audience in ID Token [{aud}] does not match "
                    "the expected audience.",
                }
            return 200, {
                "access_token": FEDERATED,
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": 3600,
            }
        account = re.fullmatch(r"/v1/projects/-/serviceAccounts/([^:]+):(\w+)", path)
        if method == "POST" and account and account.group(2) == "generateAccessToken":
            # Which federated principal may become which account is tests/infra/test_iam_trust's
            # subject (the provider's attribute condition); here any federated token may.
            if headers.get("Authorization") != f"Bearer {FEDERATED}":
                return 401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}}
            email = account.group(1)
            consumer = account_project(email) or ""
            if IAM_CREDENTIALS not in self.apis(consumer):
                return service_disabled(IAM_CREDENTIALS, consumer)
            return 200, {"accessToken": f"at:{email}", "expireTime": "2099-01-01T00:00:00Z"}
        if caller is None:
            return 401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}}
        found = self._route(method, path, caller, headers, query)
        if found is None:
            return 404, {"error": {"code": 404, "message": f"stand-in: no {method} {path}"}}
        target, answer = found
        if target.service not in self.apis(target.consumer):
            return service_disabled(target.service, target.consumer)
        for permission, scope, resource in target.checks:
            policies = target.policy_project or target.consumer
            if not self.allowed(member_of(caller), permission, scope, policies):
                return permission_denied(permission, resource)
        return answer(body)

    def _route(
        self, method: str, path: str, caller: str, headers: Any, query: dict[str, str]
    ) -> tuple[Route, Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]] | None:
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
    ) -> tuple[Route, Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]] | None:
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
            return (
                Route(RESOURCE_MANAGER, pid, checks),
                lambda _: (
                    (200, {"name": f"projects/{number}", "projectId": pid, "state": "ACTIVE"})
                    if number
                    else not_found(f"Project {pid}")
                ),
            )
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
            return (
                Route(STORAGE, owner, checks),
                lambda _: (
                    (200, {"name": name, "kind": "storage#bucket"})
                    if name in self.buckets
                    else (
                        404,
                        {"error": {"code": 404, "message": "The specified bucket does not exist."}},
                    )
                ),
            )
        # https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys/get
        key = re.fullmatch(
            r"/v1/(projects/([^/]+)/locations/[^/]+/keyRings/([^/]+)/cryptoKeys/([^/]+))", path
        )
        if key:
            name, pid, ring, short = key.groups()
            checks = (("cloudkms.cryptoKeys.get", f"kms-key:{ring}/{short}", name),)
            return (
                Route(KMS, pid, checks),
                lambda _: (
                    (
                        200,
                        {
                            "name": name,
                            "purpose": "ENCRYPT_DECRYPT",
                            "primary": {"state": "ENABLED"},
                        },
                    )
                    if name in self.crypto_keys
                    else not_found(f"CryptoKey {name}")
                ),
            )
        # https://cloud.google.com/iam/docs/reference/rest/v1/projects.locations.workloadIdentityPools.providers/get
        provider = re.fullmatch(
            r"/v1/(projects/([^/]+)/locations/global/workloadIdentityPools/[^/]+/providers/[^/]+)",
            path,
        )
        if provider:
            name = provider.group(1)
            pid = self._project_id(provider.group(2))
            checks = (("iam.googleapis.com/workloadIdentityPoolProviders.get", "project", name),)
            return (
                Route(IAM, pid, checks),
                lambda _: (
                    (200, {"name": name, "state": "ACTIVE", "disabled": False})
                    if name in self.wif_providers
                    else not_found(f"Requested entity {name}")
                ),
            )
        # https://cloud.google.com/identity/docs/reference/rest/v1/groups/lookup: no IAM
        # permission; Cloud Identity answers 403 "Error(2028): Permission denied for resource
        # ... (or it may not exist)" for a group the caller cannot see
        # (terraform-google-modules/terraform-example-foundation#1206).
        if path == "/v1/groups:lookup":
            email = query.get("groupKey.id", "")
            return (
                Route(CLOUD_IDENTITY, client_project, ()),
                lambda _: (
                    (200, {"name": f"groups/{abs(hash(email)) % 10**12:012d}"})
                    if email in self.groups
                    else (
                        403,
                        {
                            "error": {
                                "code": 403,
                                "message": f"Error(2028): Permission denied for resource {email} "
                                "(or it may not exist).",
                                "status": "PERMISSION_DENIED",
                            }
                        },
                    )
                ),
            )
        # https://cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.notificationChannels/get
        channel = re.fullmatch(r"/v3/(projects/([^/]+)/notificationChannels/[^/]+)", path)
        if channel:
            name, pid = channel.groups()
            checks = (("monitoring.notificationChannels.get", "project", name),)
            return (
                Route(MONITORING, pid, checks),
                lambda _: (
                    (200, {"name": name, "type": "email", "enabled": True})
                    if name in self.notification_channels
                    else not_found(f"Notification channel {name}")
                ),
            )
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


def unsigned_jwt(claims: dict[str, str]) -> str:
    """A JWT with `claims` and no valid signature: the stand-in STS reads claims only."""

    def part(obj: dict[str, str]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def _claims(jwt: str) -> dict[str, Any]:
    """The payload of a JWT (the stand-in's tokens are unsigned; STS checks GitLab's signature)."""
    try:
        payload = jwt.split(".")[1]
        return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
    except (IndexError, ValueError):
        return {}


@dataclass
class Call:
    method: str
    path: str
    caller: str | None  # the service account whose token authorised the call
    body: dict[str, Any]
    query: dict[str, str] = field(default_factory=dict)


def simulated_iam(
    stacks: Iterable[str] = ("dev", "prod"), extra: Iterable[tuple[str, str, str, str]] = ()
) -> Authorizer:
    """The identity table of tests/infra's IAM simulation: what both programs grant per stack.

    The committed stack files leave the per-deployment values unset (docs/deploying.md sets
    them); the simulation runs with stand-in ones. `extra`: (project, scope, role, member)
    bindings the programs do not declare (a human owner).
    """
    import yaml

    from tests.infra.iam_model import BOOTSTRAP, Binding, bindings, granting
    from tests.infra.program import EXISTING_CHANNELS, run_program, run_stack

    per_project: dict[str, list[Binding]] = {}
    for stack in stacks:
        main = run_stack(
            stack,
            ingestMode="subscriber",
            analystGroup="group:flight-analysts@acme-flights.dev",
            **(
                {"notificationChannels": json.dumps(sorted(EXISTING_CHANNELS))}
                if stack == "prod"
                else {}
            ),
        )
        raw = yaml.safe_load((BOOTSTRAP / f"Pulumi.{stack}.yaml").read_text())["config"]
        boot_config = {k: str(v) for k, v in raw.items()}
        boot_config.setdefault("flightpipe-bootstrap:gitlabProjectId", "4242")
        if str(BOOTSTRAP) not in sys.path:
            sys.path.insert(0, str(BOOTSTRAP))
        boot = run_program(BOOTSTRAP / "__main__.py", "flightpipe-bootstrap", stack, boot_config)
        per_project.setdefault(main.config["gcp:project"], []).extend(bindings(main, boot))
    for project, scope, role, member in extra:
        per_project.setdefault(project, []).append(Binding(scope, role, member, None, "extra"))

    def authorize(member: str, permission: str, scope: str, project: str) -> bool:
        return bool(granting(per_project.get(project, []), member, permission, scope))

    return authorize


def credential_file(directory: Path, url: str, account: str) -> Path:
    """An external-account ADC file, as scripts/gcp_wif_login.sh writes it, that makes google-auth
    exchange a token at the stand-in (`url`) and impersonate `account`."""
    # pragma: allowlist nextline secret
    provider = "projects/123456789012/locations/global/workloadIdentityPools/gitlab/providers/x"
    token = directory / "oidc-token"
    token.write_text(unsigned_jwt({"aud": f"//iam.googleapis.com/{provider}"}))
    path = directory / "credentials.json"
    path.write_text(
        json.dumps(
            {
                "type": "external_account",
                "audience": f"//iam.googleapis.com/{provider}",
                "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
                "token_url": f"{url}/v1/token",
                "credential_source": {"file": str(token)},
                "service_account_impersonation_url": f"{url}/v1/projects/-/serviceAccounts/"
                f"{account}:generateAccessToken",
            }
        )
    )
    return path
