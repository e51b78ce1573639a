"""What `make preflight` reads from the stack files, and the checks those files alone answer.

`load` reads `infra/Pulumi.<env>.yaml` and `infra/bootstrap/Pulumi.<env>.yaml` into a `Stack`;
the names the bootstrap gives its bucket, key, provider and deployer come from
infra/bootstrap/bootstrap_names.py, the example values from infra/config.py, so a check and the
program it checks cannot disagree. scripts/preflight.py makes the remote checks.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

REPO = Path(__file__).resolve().parents[1]
for _folder in (REPO / "infra", REPO / "infra" / "bootstrap"):  # neither is a package
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

# What the main program enables itself (infra/components/services.py): missing before the first
# `pulumi up` is normal.
PROGRAM_APIS: Final[tuple[str, ...]] = tuple(
    importlib.import_module("components.services").REQUIRED_APIS
)
_NAMES = importlib.import_module("bootstrap_names")
# What the bootstrap enables: `pulumi up` needs these first.
BOOTSTRAP_APIS: Final[tuple[str, ...]] = tuple(_NAMES.APIS)
# The documentation's example values: infra/config.py's (it refuses them at `pulumi up`), and
# the GitLab project id docs/deploying.md showed.
_STACK_CONFIG = importlib.import_module("config")
EXAMPLE_DOMAINS: Final[tuple[str, ...]] = tuple(_STACK_CONFIG.EXAMPLE_DOMAINS)
EXAMPLE_CHANNEL_IDS: Final[tuple[str, ...]] = tuple(_STACK_CONFIG.EXAMPLE_CHANNEL_IDS)
EXAMPLE_GITLAB_PROJECT_ID: Final = "12345678"


@dataclass(frozen=True)
class Result:
    check: str
    status: str  # "ok", "FAIL" or "skip"
    detail: str = ""

    def line(self) -> str:
        text = f"{self.status:<4} {self.check}"
        return f"{text}: {self.detail}" if self.detail else text


@dataclass(frozen=True)
class Stack:
    """What the two stack files say, and the names the bootstrap derives from them."""

    env: str
    file: Path
    project: str
    config: dict[str, Any]
    secrets_provider: str | None
    encrypted_key: str | None
    boot_config: dict[str, Any]

    @property
    def kms_key(self) -> str:
        location = self.boot_config.get("flightpipe-bootstrap:kmsLocation") or "us-central1"
        ring, key = _NAMES.KEY_RING, _NAMES.KEY
        return f"projects/{self.project}/locations/{location}/keyRings/{ring}/cryptoKeys/{key}"

    @property
    def state_bucket(self) -> str:
        return str(_NAMES.state_bucket(self.project))

    @property
    def deployer(self) -> str:
        return f"{_NAMES.ci_account_id('deployer')}@{self.project}.iam.gserviceaccount.com"


class UsageError(Exception):
    """Bad command line or unreadable stack files: one line, exit status 2."""


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"{path} is not valid YAML: {' '.join(str(exc).split())}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise UsageError(f"{path}: expected a mapping with a `config:` section")
    return data


def load(root: Path, env: str) -> Stack:
    file = root / "infra" / f"Pulumi.{env}.yaml"
    main, boot = read_yaml(file), read_yaml(root / "infra" / "bootstrap" / f"Pulumi.{env}.yaml")
    project = main["config"].get("gcp:project")
    if not project:
        raise UsageError(f"{file}: no gcp:project")
    return Stack(
        env,
        file,
        str(project),
        main["config"],
        main.get("secretsprovider"),
        main.get("encryptedkey"),
        boot["config"],
    )


def static_checks(stack: Stack) -> list[Result]:
    """The checks the files alone answer."""
    return [config_check(stack), examples_check(stack), secrets_provider_check(stack)]


def config_check(stack: Stack) -> Result:
    """Both programs on one project; the per-deployment values set (docs/deploying.md 2-3)."""
    problems = []
    boot_project = stack.boot_config.get("gcp:project")
    if boot_project != stack.project:
        problems.append(
            f"infra/bootstrap/Pulumi.{stack.env}.yaml names project {boot_project!r}, "
            f"infra/Pulumi.{stack.env}.yaml {stack.project!r}: both programs deploy to one"
        )
    if not stack.config.get("flightpipe:analystGroup"):
        problems.append("flightpipe:analystGroup is not set (pulumi config set analystGroup)")
    if not stack.boot_config.get("flightpipe-bootstrap:gitlabProjectId"):
        problems.append(
            "flightpipe-bootstrap:gitlabProjectId is not set (the GitLab project's numeric id)"
        )
    if stack.env == "prod" and not stack.config.get("flightpipe:notificationChannels"):
        problems.append("prod has no flightpipe:notificationChannels (the program refuses it)")
    return Result("config", "FAIL", "; ".join(problems)) if problems else Result("config", "ok")


def examples_check(stack: Stack) -> Result:
    """Values still the documentation's examples (infra/config.py refuses them at `pulumi up`)."""
    examples = []
    group = str(stack.config.get("flightpipe:analystGroup") or "")
    if "@" in group and group.rsplit("@", 1)[-1].lower() in EXAMPLE_DOMAINS:
        examples.append(f"flightpipe:analystGroup {group}")
    for channel in stack.config.get("flightpipe:notificationChannels") or []:
        if str(channel).rsplit("/", 1)[-1] in EXAMPLE_CHANNEL_IDS:
            examples.append(f"flightpipe:notificationChannels {channel}")
    if str(stack.boot_config.get("flightpipe-bootstrap:gitlabProjectId")) == (
        EXAMPLE_GITLAB_PROJECT_ID
    ):
        examples.append(f"flightpipe-bootstrap:gitlabProjectId {EXAMPLE_GITLAB_PROJECT_ID}")
    if examples:
        return Result(
            "example values",
            "FAIL",
            "still the documentation's examples: " + ", ".join(examples) + ": set your own",
        )
    return Result("example values", "ok")


def secrets_provider_check(stack: Stack) -> Result:
    expected = f"gcpkms://{stack.kms_key}"
    if stack.secrets_provider == expected and stack.encrypted_key:
        return Result("secrets provider", "ok")
    return Result(
        "secrets provider",
        "FAIL",
        f"infra/Pulumi.{stack.env}.yaml needs `secretsprovider: {expected}` and its "
        f"`encryptedkey:` (has {stack.secrets_provider or 'no secretsprovider'}"
        f"{'' if stack.encrypted_key else ', no encryptedkey'}): "
        "`pulumi stack init` with that provider, then commit the file (docs/deploying.md step 3)",
    )


def outputs_check(stack: Stack, project_number: str | None) -> Result:
    """The stack config and the deploy job's variables name what the bootstrap created."""
    wrong = []
    if stack.config.get("flightpipe:deployerServiceAccount") != stack.deployer:
        wrong.append(f"flightpipe:deployerServiceAccount should be {stack.deployer}")
    expected = {
        "PULUMI_BACKEND_URL": f"gs://{stack.state_bucket}",
        "PULUMI_SECRETS_PROVIDER": f"gcpkms://{stack.kms_key}",
        "GCP_DEPLOYER_SERVICE_ACCOUNT": stack.deployer,
    }
    if project_number:
        expected["GCP_WIF_PROVIDER"] = provider_name(project_number)
    for variable, value in expected.items():
        if os.environ.get(variable) not in (None, value):
            wrong.append(f"{variable}={os.environ[variable]} should be {value}")
    if wrong:
        return Result(
            "bootstrap outputs",
            "FAIL",
            "; ".join(wrong) + " (the bootstrap's outputs: docs/deploying.md steps 2-4)",
        )
    return Result("bootstrap outputs", "ok")


def provider_name(project_number: str) -> str:
    return (
        f"projects/{project_number}/locations/global/workloadIdentityPools/{_NAMES.POOL}"
        f"/providers/{_NAMES.PROVIDER}"
    )
