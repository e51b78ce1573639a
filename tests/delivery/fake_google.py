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
it; a call without a token this stand-in issued is refused with 401. This module is the HTTP and
identity core (tokens, the authorisation of each call); the APIs themselves, and the project's
state, are tests/delivery/google_apis.py's.
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
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.delivery.google_apis import Resources, account_project
from tests.delivery.google_errors import (
    CLOUD_IDENTITY,
    IAM_CREDENTIALS,
    MONITORING,
    permission_denied,
    service_disabled,
)
from tests.delivery.json_http import JsonHandler, serve

__all__ = [
    "CLOUD_IDENTITY",
    "MONITORING",
    "Authorizer",
    "Call",
    "FakeGoogle",
    "credential_file",
    "simulated_iam",
    "unsigned_jwt",
]

FEDERATED = "federated-token"
UNAUTHENTICATED = 401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}}

# (member, permission, scope, project) -> granted. Scopes are the IAM simulation's
# (tests/infra/iam_calls.py): `project`, `run-service:<name>`, `secret:<id>`,
# `service-account:<email>`, `bucket:<name>`, `kms-key:<ring>/<key>`.
Authorizer = Callable[[str, str, str, str], bool]


def member_of(caller: str) -> str:
    """The IAM member a token's owner is: a service account, or a user."""
    return (
        f"serviceAccount:{caller}" if caller.endswith(".gserviceaccount.com") else f"user:{caller}"
    )


@dataclass
class Call:
    method: str
    path: str
    caller: str | None  # the service account whose token authorised the call
    body: dict[str, Any]
    query: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeGoogle(Resources):
    """A fake project (`Resources`), who may do what in it, and every call received.

    `authorize`: the identity table; None: `simulated_iam()` (built on first use).
    `refresh_tokens`: the OAuth refresh tokens Google issued (a user's ADC), token -> account.
    """

    calls: list[Call] = field(default_factory=list)
    subject_tokens: list[str] = field(default_factory=list)
    authorize: Authorizer | None = None
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def allowed(self, member: str, permission: str, scope: str, project: str) -> bool:
        if self.authorize is None:
            self.authorize = simulated_iam()
        return self.authorize(member, permission, scope, project)

    def sync(self) -> None:
        """Bring the state up to date before a call: nothing changes it but the test here."""

    def start(self) -> tuple[ThreadingHTTPServer, str]:
        # The identity table is built here, in the caller's thread: the simulation runs the
        # Pulumi programs under mocks, which need the thread's event loop.
        if self.authorize is None:
            self.authorize = simulated_iam()
        fake = self

        class Handler(JsonHandler):
            def _body(self) -> dict[str, Any]:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                if not raw:
                    return {}
                if self.headers.get("Content-Type", "").startswith("application/json"):
                    return dict(json.loads(raw))
                return {k: v[0] for k, v in urllib.parse.parse_qs(raw).items()}

            def _caller(self) -> str | None:
                auth = self.headers.get("Authorization", "")
                token = auth.removeprefix("Bearer ")
                return token.removeprefix("at:") if token.startswith("at:") else None

            def answer(self, method: str) -> None:
                split = urllib.parse.urlsplit(self.path)
                query = {k: v[0] for k, v in urllib.parse.parse_qs(split.query).items()}
                body = self._body() if method in ("POST", "PATCH") else {}
                caller = self._caller()
                with fake.lock:
                    fake.calls.append(Call(method, split.path, caller, body, query))
                    status, payload = fake.route(
                        method, split.path, body, caller, self.headers, query=query
                    )
                self.send_json(status, payload)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        return server, serve(server)

    def route(  # noqa: PLR0911 - one answer per Google endpoint and refusal
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
        self.sync()
        if method == "POST" and path == "/v1/token":  # STS token exchange
            return self._exchange(body)
        if method == "POST" and path == "/token":  # OAuth 2.0 refresh grant
            return self._refresh(body)
        account = re.fullmatch(r"/v1/projects/-/serviceAccounts/([^:]+):generateAccessToken", path)
        if method == "POST" and account:
            # Which federated principal may become which account is tests/infra/test_iam_trust's
            # subject (the provider's attribute condition); here any federated token may.
            if headers.get("Authorization") != f"Bearer {FEDERATED}":
                return UNAUTHENTICATED
            email = account.group(1)
            consumer = account_project(email) or ""
            if IAM_CREDENTIALS not in self.apis(consumer):
                return service_disabled(IAM_CREDENTIALS, consumer)
            return 200, {"accessToken": f"at:{email}", "expireTime": "2099-01-01T00:00:00Z"}
        if caller is None:
            return UNAUTHENTICATED
        found = self.resource_route(method, path, caller, headers, query or {})
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

    def _exchange(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """https://sts.googleapis.com/v1/token, the token exchange of a WIF credential."""
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

    def _refresh(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """https://oauth2.googleapis.com/token, the refresh grant google-auth makes for an
        `authorized_user` ADC (RFC 6749 section 6; the answer section 5.1, a refusal 5.2;
        google-auth-library-python google/oauth2/_client.py@v2.63.0 refresh_grant)."""
        if body.get("grant_type") != "refresh_token" or not (
            body.get("client_id") and body.get("client_secret")
        ):
            return 400, {"error": "invalid_request"}
        account = self.refresh_tokens.get(str(body.get("refresh_token")))
        if account is None:
            return 400, {"error": "invalid_grant", "error_description": "Bad Request"}
        token = {"access_token": f"at:{account}", "expires_in": 3599, "token_type": "Bearer"}
        if body.get("scope"):
            token["scope"] = body["scope"]
        return 200, token


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
