"""Preflight: every precondition of `pulumi up` for a stack, checked read-only, all in one run.

    python scripts/preflight.py dev|prod [--root DIR]      (or: make preflight ENV=dev)

Run by a human before the first `pulumi up` of a stack and by the deploy jobs before theirs. One
line per check, `ok   <check>` or `FAIL <check>: <why and what to do>` (`skip` when this identity
cannot make a check that is not a precondition of the deploy itself); exit status 1 when any
check failed, 2 on bad usage. It reads `infra/Pulumi.<env>.yaml` and
`infra/bootstrap/Pulumi.<env>.yaml` (scripts/preflight_stack.py, with the checks those files
alone answer), and makes GET calls only, with Application Default Credentials and google-auth's
AuthorizedSession (like scripts/cloud_run.py):

- project: Resource Manager projects.get (resourcemanager.projects.get)
- apis: Service Usage services.list, state:ENABLED (serviceusage.services.list)
- state bucket: Cloud Storage buckets.get of `<project>-pulumi-state` (storage.buckets.get)
- kms key: Cloud KMS cryptoKeys.get of `flightpipe-pulumi/stack-secrets` (cloudkms.cryptoKeys.get)
- wif provider: IAM workloadIdentityPools.providers.get of `gitlab/gitlab-oidc`
  (iam.googleapis.com/workloadIdentityPoolProviders.get)
- analyst group: Cloud Identity groups.lookup (no IAM permission: the caller must be able to see
  the group in Cloud Identity, and the Cloud Identity API must be enabled in its quota project)
- notification channels: Monitoring notificationChannels.get (monitoring.notificationChannels.get)

`RESOURCE_MANAGER_API`, `SERVICE_USAGE_API`, `STORAGE_API`, `CLOUD_KMS_API`, `IAM_API`,
`CLOUD_IDENTITY_API` and `MONITORING_API` override the endpoints (tests point them at a stand-in).
When the deploy job's variables are set (`PULUMI_BACKEND_URL`, `PULUMI_SECRETS_PROVIDER`,
`GCP_WIF_PROVIDER`, `GCP_DEPLOYER_SERVICE_ACCOUNT`), they must name the bootstrap's outputs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

import google.auth
import google.auth.exceptions
import requests
from google.auth.transport.requests import AuthorizedSession

if (_REPO := str(Path(__file__).resolve().parents[1])) not in sys.path:
    sys.path.insert(0, _REPO)  # run as a script: the stack half is scripts/preflight_stack.py

from scripts.preflight_stack import (
    BOOTSTRAP_APIS,
    PROGRAM_APIS,
    REPO,
    Result,
    Stack,
    UsageError,
    load,
    outputs_check,
    provider_name,
    static_checks,
)

__all__ = ["BOOTSTRAP_APIS", "PROGRAM_APIS", "main", "refused"]


SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
ENDPOINTS: Final[dict[str, tuple[str, str]]] = {
    "resourcemanager": ("RESOURCE_MANAGER_API", "https://cloudresourcemanager.googleapis.com"),
    "serviceusage": ("SERVICE_USAGE_API", "https://serviceusage.googleapis.com"),
    "storage": ("STORAGE_API", "https://storage.googleapis.com"),
    "kms": ("CLOUD_KMS_API", "https://cloudkms.googleapis.com"),
    "iam": ("IAM_API", "https://iam.googleapis.com"),
    "cloudidentity": ("CLOUD_IDENTITY_API", "https://cloudidentity.googleapis.com"),
    "monitoring": ("MONITORING_API", "https://monitoring.googleapis.com"),
}


def endpoint(api: str) -> str:
    variable, default = ENDPOINTS[api]
    return os.environ.get(variable, default).rstrip("/")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _error(response: requests.Response) -> tuple[str, dict[str, Any]]:
    """Google's message and the ErrorInfo detail of an error answer (https://google.aip.dev/193)."""
    try:
        error = response.json().get("error", {})
    except ValueError:
        return response.text[:200], {}
    if not isinstance(error, dict):
        return str(error), {}
    infos = [
        d
        for d in error.get("details", [])
        if isinstance(d, dict) and str(d.get("@type", "")).endswith("google.rpc.ErrorInfo")
    ]
    return " ".join(str(error.get("message", "")).split()), infos[0] if infos else {}


def refused(response: requests.Response, who: str, missing: str) -> str:
    """Why a check's call failed, and what to do, in one line."""
    message, info = _error(response)
    if info.get("reason") == "SERVICE_DISABLED":
        service = info.get("metadata", {}).get("service", "?")
        consumer = str(info.get("metadata", {}).get("consumer", "")).removeprefix("projects/")
        if not consumer:
            return (
                f"{service} needs a quota project for your credentials: gcloud auth "
                "application-default set-quota-project <project> (docs/deploying.md step 3)"
            )
        enable = f"gcloud services enable {service} --project {consumer}"
        return f"{service} is not enabled in {consumer}: {enable}"
    if response.status_code == 403:
        permission = info.get("metadata", {}).get("permission")
        needs = f" (needs {permission})" if permission else ""
        return f"{who} is refused{needs}: {message}"
    if response.status_code == 404:
        return missing
    return f"HTTP {response.status_code}: {message}"


class Checker:
    """The remote checks, one GET each, as the credentials' identity."""

    def __init__(self, session: AuthorizedSession, stack: Stack, who: str) -> None:
        self.session = session
        self.stack = stack
        self.who = who
        self.project_number: str | None = None

    def get(self, url: str, **params: str) -> requests.Response:
        response: requests.Response = self.session.get(url, params=params or None, timeout=30)
        return response

    def project(self) -> Result:
        response = self.get(f"{endpoint('resourcemanager')}/v3/projects/{self.stack.project}")
        if response.ok:
            self.project_number = str(response.json()["name"]).removeprefix("projects/")
            return Result("project", "ok")
        missing = f"project {self.stack.project} does not exist: fix gcp:project"
        return Result("project", "FAIL", refused(response, self.who, missing))

    def apis(self) -> Result:
        enabled: set[str] = set()
        url = f"{endpoint('serviceusage')}/v1/projects/{self.stack.project}/services"
        token = ""
        while True:
            params = {"filter": "state:ENABLED", "pageSize": "200"}
            if token:
                params["pageToken"] = token
            response = self.get(url, **params)
            if not response.ok:
                missing = f"project {self.stack.project} not found"
                return Result("apis", "FAIL", refused(response, self.who, missing))
            page = response.json()
            enabled |= {str(s["config"]["name"]) for s in page.get("services", [])}
            token = str(page.get("nextPageToken") or "")
            if not token:
                break
        missing_boot = sorted(set(BOOTSTRAP_APIS) - enabled)
        if missing_boot:
            return Result(
                "apis",
                "FAIL",
                f"not enabled: {', '.join(missing_boot)}: run the bootstrap "
                "(docs/deploying.md step 2)",
            )
        later = sorted(set(PROGRAM_APIS) - enabled)
        return Result("apis", "ok", f"pulumi up enables {', '.join(later)}" if later else "")

    def state_bucket(self) -> Result:
        bucket = self.stack.state_bucket
        response = self.get(f"{endpoint('storage')}/storage/v1/b/{bucket}")
        missing = f"bucket {bucket} does not exist: run the bootstrap (docs/deploying.md step 2)"
        if response.ok:
            return Result("state bucket", "ok")
        return Result("state bucket", "FAIL", refused(response, self.who, missing))

    def kms_key(self) -> Result:
        key = self.stack.kms_key
        response = self.get(f"{endpoint('kms')}/v1/{key}")
        if not response.ok:
            missing = f"{key} does not exist: run the bootstrap (docs/deploying.md step 2)"
            return Result("kms key", "FAIL", refused(response, self.who, missing))
        state = response.json().get("primary", {}).get("state")
        if state != "ENABLED":
            return Result(
                "kms key", "FAIL", f"{key}'s primary version is {state}: enable or rotate it"
            )
        return Result("kms key", "ok")

    def wif_provider(self) -> Result:
        if self.project_number is None:
            return Result("wif provider", "FAIL", "not checked: the project number is unknown")
        name = provider_name(self.project_number)
        response = self.get(f"{endpoint('iam')}/v1/{name}")
        if not response.ok:
            missing = f"{name} does not exist: run the bootstrap (docs/deploying.md step 2)"
            return Result("wif provider", "FAIL", refused(response, self.who, missing))
        body = response.json()
        if body.get("state") != "ACTIVE" or body.get("disabled"):
            return Result(
                "wif provider",
                "FAIL",
                f"{name} is {body.get('state')}, disabled={body.get('disabled')}",
            )
        return Result("wif provider", "ok")

    def analyst_group(self) -> Result:
        group = str(self.stack.config.get("flightpipe:analystGroup") or "")
        if not group:
            return Result("analyst group", "skip", "not set (see config)")
        if not group.startswith("group:"):
            return Result(
                "analyst group",
                "FAIL",
                f"flightpipe:analystGroup {group!r}: expected group:<email>",
            )
        email = group.removeprefix("group:")
        response = self.get(
            f"{endpoint('cloudidentity')}/v1/groups:lookup", **{"groupKey.id": email}
        )
        if response.ok:
            return Result("analyst group", "ok")
        message, info = _error(response)
        if info.get("reason") == "SERVICE_DISABLED":
            # Not a precondition of `pulumi up`; only this check needs the API (Cloud Identity is
            # a client-based API: it bills the caller's quota project).
            return Result(
                "analyst group",
                "skip",
                f"cannot look {email} up: {refused(response, self.who, '')}",
            )
        # Cloud Identity answers 403 alike for a group that does not exist and one the caller
        # may not see ("Permission denied ... (or it may not exist)").
        return Result(
            "analyst group",
            "FAIL",
            f"{email} not found or not visible to {self.who} ({message}): create the group or "
            "fix flightpipe:analystGroup",
        )

    def notification_channels(self) -> Result:
        channels = [str(c) for c in self.stack.config.get("flightpipe:notificationChannels") or []]
        if not channels:
            if self.stack.env == "prod":
                return Result(
                    "notification channels",
                    "FAIL",
                    "prod has none: add flightpipe:notificationChannels (the program refuses "
                    "prod without one)",
                )
            return Result("notification channels", "ok", "none configured")
        problems = []
        for channel in channels:
            response = self.get(f"{endpoint('monitoring')}/v3/{channel}")
            if not response.ok:
                problems.append(refused(response, self.who, f"{channel} does not exist"))
        if problems:
            return Result("notification channels", "FAIL", "; ".join(problems))
        return Result("notification channels", "ok")


REMOTE: Final[tuple[Callable[[Checker], Result], ...]] = (
    Checker.project,
    Checker.apis,
    Checker.state_bucket,
    Checker.kms_key,
    Checker.wif_provider,
    Checker.analyst_group,
    Checker.notification_channels,
)


def remote_checks(stack: Stack) -> list[Result]:
    # Named, so that google-auth does not look the project up for a federated credential (a
    # Resource Manager call the check does not need; google/auth/_default.py).
    os.environ.setdefault("GOOGLE_CLOUD_PROJECT", stack.project)
    try:
        credentials, _ = google.auth.default(scopes=SCOPES)
    except google.auth.exceptions.GoogleAuthError as exc:
        return [
            Result(
                "credentials",
                "FAIL",
                f"{' '.join(str(exc).split())[:200]}: gcloud auth application-default login",
            )
        ]
    who = str(getattr(credentials, "service_account_email", None) or "these credentials")
    checker = Checker(AuthorizedSession(credentials), stack, who)  # type: ignore[no-untyped-call]
    results = []
    for check in REMOTE:
        name = check.__name__.replace("_", " ")
        try:
            results.append(check(checker))
        except google.auth.exceptions.GoogleAuthError as exc:
            results.append(Result(name, "FAIL", f"credentials: {' '.join(str(exc).split())}"))
        except requests.RequestException as exc:
            results.append(Result(name, "FAIL", f"{type(exc).__name__}: {exc}"))
    results.append(outputs_check(stack, checker.project_number))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="preflight.py", description=__doc__.splitlines()[0])
    parser.add_argument("env", metavar="ENV", choices=("dev", "prod"), help="dev or prod")
    parser.add_argument("--root", type=Path, default=REPO, help="the repository (infra/ in it)")
    try:
        args = parser.parse_args(argv)
        stack = load(args.root, args.env)
    except UsageError as exc:
        sys.stderr.write(f"preflight.py: {exc}\n")
        return 2
    results = static_checks(stack) + remote_checks(stack)
    for result in results:
        sys.stdout.write(result.line() + "\n")
    failed = [r.check for r in results if r.status == "FAIL"]
    if failed:
        sys.stdout.write(f"preflight {stack.env}: {len(failed)} failed: {', '.join(failed)}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
