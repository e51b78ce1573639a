"""The names the bootstrap gives what it creates, which `make preflight` looks up by the same names.

No Pulumi import: scripts/preflight.py reads these without running a program.
"""

from __future__ import annotations

from typing import Final

# What the bootstrap enables, each for the bootstrap's own resources or for CI's first step.
APIS: Final[tuple[str, ...]] = (
    "bigquery.googleapis.com",  # the warehouse dataset
    "cloudkms.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",  # generateAccessToken / generateIdToken of the accounts
    "serviceusage.googleapis.com",
    "storage.googleapis.com",
    "sts.googleapis.com",  # the token exchange of Workload Identity Federation
)
KEY_RING: Final = "flightpipe-pulumi"
KEY: Final = "stack-secrets"
POOL: Final = "gitlab"
PROVIDER: Final = "gitlab-oidc"


def ci_account_id(short: str) -> str:
    """The account id of a CI identity (`deployer`, `previewer`)."""
    return f"flightpipe-{short}"


def state_bucket(project: str) -> str:
    """Bucket names are global: the project id makes it unique and says whose state it is."""
    return f"{project}-pulumi-state"
