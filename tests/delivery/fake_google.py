"""A recording stand-in for the Google endpoints the pipeline's jobs call over HTTP.

Served on loopback; the jobs reach it through the endpoint variables their scripts honour
(`GOOGLE_STS_URL`, `GOOGLE_IAMCREDENTIALS_URL` in scripts/gcp_wif_login.sh's credential file,
`CLOUD_RUN_API`, `SECRET_MANAGER_API` in scripts/cloud_run.py), so the real google-auth and
requests code runs: the Workload Identity Federation exchange (STS, then `generateAccessToken`
of the service account the job's credential names), `generateIdToken`, Cloud Run's service GET,
PATCH and operation GET, Secret Manager's `versions/latest:access`.

Tokens carry who they belong to (`at:<account>`), so every recorded call says which identity made
it. A call without a token it issued, or with the wrong one, is refused with 401/403 as Google
would. Standard library only.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FEDERATED = "federated-token"


@dataclass
class Call:
    method: str
    path: str
    caller: str | None  # the service account whose token authorised the call
    body: dict[str, Any]


@dataclass
class FakeGoogle:
    """State: serving revisions per service, secret payloads, and every call received."""

    secrets: dict[str, str] = field(default_factory=dict)  # "projects/P/secrets/S" -> payload
    revisions: dict[str, list[str]] = field(default_factory=dict)  # service path -> [old, new]
    calls: list[Call] = field(default_factory=list)
    subject_tokens: list[str] = field(default_factory=list)
    _gets: dict[str, int] = field(default_factory=dict)
    _serving: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serving(self, service: str) -> str:
        """Before a deploy: the old revision; from the second read on, the new one."""
        if service in self._serving:
            return self._serving[service]
        count = self._gets[service] = self._gets.get(service, 0) + 1
        old, new = self.revisions.get(service, ["rev-old", "rev-new"])
        return old if count == 1 else new

    def start(self) -> tuple[ThreadingHTTPServer, str]:
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
                path = urllib.parse.urlsplit(self.path).path
                body = self._body() if method in ("POST", "PATCH") else {}
                caller = self._caller()
                with fake.lock:
                    fake.calls.append(Call(method, path, caller, body))
                    status, payload = fake.route(method, path, body, caller, self.headers)
                self._answer(status, payload)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

            def do_PATCH(self) -> None:
                self._handle("PATCH")

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_port}"

    def route(  # noqa: PLR0911 - one answer per Google endpoint
        self, method: str, path: str, body: dict[str, Any], caller: str | None, headers: Any
    ) -> tuple[int, dict[str, Any]]:
        """One Google API call: (status, JSON answer)."""
        if method == "POST" and path == "/v1/token":  # STS token exchange
            self.subject_tokens.append(str(body.get("subject_token", "")))
            ok = body.get("subject_token") and body.get("audience", "").startswith("//iam.")
            if not ok:
                return 400, {"error": "invalid_request"}
            return 200, {
                "access_token": FEDERATED,
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": 3600,
            }
        account = re.fullmatch(r"/v1/projects/-/serviceAccounts/([^:]+):(\w+)", path)
        if method == "POST" and account:
            email, verb = account.groups()
            if verb == "generateAccessToken":
                if headers.get("Authorization") != f"Bearer {FEDERATED}":
                    return 401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}}
                return 200, {"accessToken": f"at:{email}", "expireTime": "2099-01-01T00:00:00Z"}
            if verb == "generateIdToken":
                if caller is None:
                    return 401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}}
                return 200, {"token": f"idt:{email}:{body.get('audience')}"}
        if caller is None:
            return 401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}}
        service = re.fullmatch(r"/v2/(projects/[^/]+/locations/[^/]+/services/[^/]+)", path)
        if service and method == "GET":
            revision = self.serving(service.group(1))
            return 200, {"trafficStatuses": [{"revision": revision, "percent": 100}]}
        if service and method == "PATCH":
            (target,) = body["traffic"]
            self._serving[service.group(1)] = target["revision"]
            name = service.group(1).rsplit("/services/", 1)[0] + "/operations/rollback"
            return 200, {"name": name, "done": True}
        secret = re.fullmatch(r"/v1/(projects/[^/]+/secrets/[^/]+)/versions/latest:access", path)
        if secret and method == "GET":
            if secret.group(1) not in self.secrets:
                return 404, {"error": {"code": 404, "status": "NOT_FOUND"}}
            data = base64.b64encode(self.secrets[secret.group(1)].encode()).decode()
            return 200, {"name": path, "payload": {"data": data}}
        return 404, {"error": {"code": 404, "message": f"stand-in: no {method} {path}"}}
