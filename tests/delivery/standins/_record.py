"""Shared by the recording stand-ins on PATH (pulumi, curl, docker-buildx).

Each call appends one JSON line to $STANDIN_LOG: the tool, its argv, the working directory, the
job's pipeline variables that decide identity and state, and the identity the Google credential
configuration in GOOGLE_APPLICATION_CREDENTIALS would impersonate (the service account named in
its `service_account_impersonation_url`). State the stand-ins share between calls (logged-in
backend, stacks, deployed stacks) lives in $STANDIN_STATE (JSON). Standard library only: the
stand-ins run with the system python3, before any virtual environment exists.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

ENV_KEYS = (
    "CI_JOB_NAME",
    "STACK",
    "GCP_SERVICE_ACCOUNT",
    "PULUMI_BACKEND_URL",
    "PULUMI_SECRETS_PROVIDER",
    "PULUMI_CONFIG_PASSPHRASE",
    "BUILDX_BUILDER",
    "CI_COMMIT_SHA",
)


def identity() -> dict[str, Any]:
    """What the job's Google credential configuration says (file, audience, account)."""
    path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if not path or not Path(path).is_file():
        return {}
    config = json.loads(Path(path).read_text())
    url = config.get("service_account_impersonation_url", "")
    account = re.search(r"serviceAccounts/([^:/]+):generateAccessToken", url)
    return {
        "type": config.get("type"),
        "audience": config.get("audience"),
        "service_account": account.group(1) if account else None,
        "token_file": config.get("credential_source", {}).get("file"),
    }


def record(tool: str, **extra: Any) -> None:
    """Append this call to $STANDIN_LOG."""
    entry = {
        "tool": tool,
        "argv": sys.argv[1:],
        "cwd": os.getcwd(),
        "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ},
        "identity": identity(),
        **extra,
    }
    with open(os.environ["STANDIN_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")


def load_state() -> dict[str, Any]:
    path = Path(os.environ["STANDIN_STATE"])
    return json.loads(path.read_text()) if path.is_file() else {}


def save_state(state: dict[str, Any]) -> None:
    Path(os.environ["STANDIN_STATE"]).write_text(json.dumps(state))


def fail(tool: str, message: str) -> None:
    """Record the refusal and exit 1 with the message on stderr, as the real tool would."""
    record(tool, error=message)
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(1)
