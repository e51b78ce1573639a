"""Google Cloud helpers for the pipeline: serving revision, traffic rollback, ID token, a secret.

    python scripts/cloud_run.py serving-revision --project P --region R --service S
    python scripts/cloud_run.py shift-traffic --project P --region R --service S --to REVISION
    python scripts/cloud_run.py id-token --audience URL --service-account SA
    python scripts/cloud_run.py secret --project P --secret S      # the latest version's payload

Credentials are Application Default Credentials (in CI: the Workload Identity Federation
configuration written by scripts/gcp_wif_login.sh). It talks to the REST APIs (Cloud Run Admin v2,
IAM Service Account Credentials v1, Secret Manager v1) with google-auth's AuthorizedSession
(already a runtime dependency) instead of installing gcloud in the job image. `CLOUD_RUN_API`,
`GOOGLE_IAMCREDENTIALS_URL` and `SECRET_MANAGER_API` override the endpoints (the pipeline's
delivery tests point them at a local recording stand-in).
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import sys
import time
from typing import Any

import google.auth
import google.auth.exceptions
import requests
from google.auth.transport.requests import AuthorizedSession

log = logging.getLogger("flightpipe.cloud_run")
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
OPERATION_DEADLINE_SECONDS = 300.0


class GoogleError(Exception):
    """A Google API refused a call; the message is one line naming the call and Google's words."""


def error_info(response: requests.Response) -> dict[str, Any]:
    """The google.rpc.ErrorInfo of an error answer ({} when it has none).

    Google's errors are `{"error": {"code", "message", "status", "details": [...]}}` with a
    `type.googleapis.com/google.rpc.ErrorInfo` detail carrying `reason`, `domain`, `metadata`
    (https://google.aip.dev/193).
    """
    try:
        details = response.json().get("error", {}).get("details", [])
    except (ValueError, AttributeError):
        return {}
    for detail in details if isinstance(details, list) else []:
        if isinstance(detail, dict) and detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
            return detail
    return {}


def check(response: requests.Response, what: str) -> None:
    """Raise GoogleError with one line when `response` is an error."""
    if response.ok:
        return
    try:
        message = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    reason = error_info(response).get("reason")
    tag = f" {reason}" if reason else ""
    raise GoogleError(f"{what}: HTTP {response.status_code}{tag}: {' '.join(message.split())}")


def _api() -> str:
    return os.environ.get("CLOUD_RUN_API", "https://run.googleapis.com").rstrip("/")


def _iamcredentials() -> str:
    default = "https://iamcredentials.googleapis.com"
    return os.environ.get("GOOGLE_IAMCREDENTIALS_URL", default).rstrip("/")


def _secret_manager() -> str:
    return os.environ.get("SECRET_MANAGER_API", "https://secretmanager.googleapis.com").rstrip("/")


def _session() -> AuthorizedSession:
    credentials, _ = google.auth.default(scopes=SCOPES)
    return AuthorizedSession(credentials)  # type: ignore[no-untyped-call]


def _service_url(project: str, region: str, service: str) -> str:
    return f"{_api()}/v2/projects/{project}/locations/{region}/services/{service}"


def serving_revision(session: AuthorizedSession, project: str, region: str, service: str) -> str:
    """The revision with the largest traffic share now, or "" when the service does not exist.

    Before the first `pulumi up` the project has not enabled the Cloud Run Admin API (the
    bootstrap does not; the program does): Google then answers 403 with reason SERVICE_DISABLED
    (google/api/error_reason.proto in googleapis/googleapis), and no service can exist yet.
    """
    response = session.get(_service_url(project, region, service), timeout=30)
    if response.status_code == 404:
        return ""
    info = error_info(response)
    if (
        response.status_code == 403
        and info.get("reason") == "SERVICE_DISABLED"
        and info.get("metadata", {}).get("service") == "run.googleapis.com"
    ):
        consumer = info["metadata"].get("consumer", project)
        log.info(json.dumps(f"run.googleapis.com not enabled in {consumer}: first deploy"))
        return ""
    check(response, f"GET Cloud Run service {service} in {project}/{region}")
    statuses: list[dict[str, Any]] = response.json().get("trafficStatuses", [])
    best = max(statuses, key=lambda s: int(s.get("percent", 0)), default={})
    return str(best.get("revision", ""))


def shift_traffic(
    session: AuthorizedSession, project: str, region: str, service: str, revision: str
) -> None:
    """Send 100% of the service's traffic to `revision` and wait for the operation to finish."""
    body = {
        "traffic": [
            {
                "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
                "revision": revision,
                "percent": 100,
            }
        ]
    }
    url = _service_url(project, region, service)
    response = session.patch(url, params={"updateMask": "traffic"}, json=body, timeout=60)
    check(response, f"PATCH traffic of Cloud Run service {service}")
    operation: dict[str, Any] = response.json()
    deadline = time.monotonic() + OPERATION_DEADLINE_SECONDS
    while not operation.get("done"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"traffic shift of {service} not done: {operation.get('name')}")
        time.sleep(2)
        polled = session.get(f"{_api()}/v2/{operation['name']}", timeout=30)
        check(polled, f"GET operation {operation['name']}")
        operation = polled.json()
    if "error" in operation:
        raise RuntimeError(f"traffic shift of {service} failed: {operation['error']}")


def id_token(session: AuthorizedSession, audience: str, service_account: str) -> str:
    """An ID token of `service_account` for `audience` (Cloud Run checks it on private services).

    IAM Credentials `generateIdToken`: the caller needs iam.serviceAccounts.getOpenIdToken on
    `service_account` (in CI the deployer on itself).
    """
    url = f"{_iamcredentials()}/v1/projects/-/serviceAccounts/{service_account}:generateIdToken"
    response = session.post(url, json={"audience": audience, "includeEmail": True}, timeout=30)
    check(response, f"generateIdToken of {service_account}")
    return str(response.json()["token"])


def secret(session: AuthorizedSession, project: str, secret_id: str) -> str:
    """The payload of the secret's latest version (secretmanager.versions.access)."""
    url = f"{_secret_manager()}/v1/projects/{project}/secrets/{secret_id}/versions/latest:access"
    response = session.get(url, timeout=30)
    check(response, f"access the latest version of secret {secret_id} in {project}")
    return base64.b64decode(response.json()["payload"]["data"]).decode()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints results on stdout for the calling shell script."""
    logging.basicConfig(
        level=logging.INFO, format='{"severity":"%(levelname)s","message":%(message)r}'
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serving-revision", "shift-traffic"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--project", required=True)
        cmd.add_argument("--region", required=True)
        cmd.add_argument("--service", required=True)
        if name == "shift-traffic":
            cmd.add_argument("--to", required=True, dest="revision")
    token = sub.add_parser("id-token")
    token.add_argument("--audience", required=True)
    token.add_argument("--service-account", required=True)
    value = sub.add_parser("secret")
    value.add_argument("--project", required=True)
    value.add_argument("--secret", required=True, dest="secret_id")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (GoogleError, TimeoutError, RuntimeError) as exc:
        problem = str(exc)
    except google.auth.exceptions.GoogleAuthError as exc:
        problem = f"credentials: {exc}"
    except requests.RequestException as exc:
        problem = f"{type(exc).__name__}: {exc}"
    sys.stderr.write(f"cloud_run.py {args.command}: {' '.join(problem.split())}\n")
    return 1


def _run(args: argparse.Namespace) -> int:
    session = _session()
    if args.command == "id-token":
        sys.stdout.write(id_token(session, args.audience, args.service_account) + "\n")
        return 0
    if args.command == "secret":
        sys.stdout.write(secret(session, args.project, args.secret_id))
        return 0
    if args.command == "serving-revision":
        sys.stdout.write(serving_revision(session, args.project, args.region, args.service) + "\n")
        return 0
    shift_traffic(session, args.project, args.region, args.service, args.revision)
    log.info(json.dumps(f"{args.service}: 100% of traffic on {args.revision}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
