"""`make preflight` (scripts/preflight.py) against a fake project: each failure class has its line.

The project is tests/delivery/fake_google.py's: the APIs it has enabled, its resources, and the
identity table of tests/infra's IAM simulation plus a human owner. google-auth's real federation
flow obtains the token. Every run must be read-only: the fake records only GETs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from scripts import preflight
from tests.delivery.fake_google import (
    CLOUD_IDENTITY,
    MONITORING,
    Authorizer,
    FakeGoogle,
    credential_file,
    simulated_iam,
)
from tests.infra.iam_model import BOOTSTRAP
from tests.infra.program import run_program

REPO = Path(__file__).resolve().parents[2]
PROJECT = "flightpipe-dev"
NUMBER = "123456789012"
OWNER = f"preflight-owner@{PROJECT}.iam.gserviceaccount.com"
DEPLOYER = f"flightpipe-deployer@{PROJECT}.iam.gserviceaccount.com"
NOBODY = f"nobody@{PROJECT}.iam.gserviceaccount.com"
BUCKET = f"{PROJECT}-pulumi-state"
KEY = (
    f"projects/{PROJECT}/locations/us-central1/keyRings/flightpipe-pulumi/cryptoKeys/stack-secrets"
)
PROVIDER = f"projects/{NUMBER}/locations/global/workloadIdentityPools/gitlab/providers/gitlab-oidc"
GROUP = "flight-analysts@acme-flights.dev"
CHANNEL = f"projects/{PROJECT}/notificationChannels/8264519037712834"
CI_VARIABLES = (
    "PULUMI_BACKEND_URL",
    "PULUMI_SECRETS_PROVIDER",
    "GCP_WIF_PROVIDER",
    "GCP_DEPLOYER_SERVICE_ACCOUNT",
)


@pytest.fixture(scope="module")
def iam() -> Authorizer:
    # A human owner: roles/owner on the project, and on the state bucket what a new bucket's
    # policy gives project owners (convenience value projectOwner -> legacyBucketOwner,
    # https://cloud.google.com/storage/docs/access-control/iam#convenience-values).
    owner = f"serviceAccount:{OWNER}"
    return simulated_iam(
        ("dev",),
        extra=[
            (PROJECT, "project", "roles/owner", owner),
            (PROJECT, f"bucket:{BUCKET}", "roles/storage.legacyBucketOwner", owner),
        ],
    )


@dataclass
class World:
    fake: FakeGoogle
    url: str
    root: Path
    main: dict[str, Any]  # infra/Pulumi.dev.yaml
    boot: dict[str, Any]  # infra/bootstrap/Pulumi.dev.yaml


@pytest.fixture
def world(iam: Authorizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """A project that is ready: bootstrapped, stack initialised, every value set."""
    fake = FakeGoogle(authorize=iam)
    fake.enabled_apis[PROJECT] = {*preflight.BOOTSTRAP_APIS, CLOUD_IDENTITY, MONITORING}
    fake.project_numbers[PROJECT] = NUMBER
    fake.buckets[BUCKET] = PROJECT
    fake.crypto_keys.add(KEY)
    fake.wif_providers.add(PROVIDER)
    fake.groups.add(GROUP)
    fake.notification_channels.add(CHANNEL)
    server, url = fake.start()
    main = {
        "secretsprovider": f"gcpkms://{KEY}",
        "encryptedkey": "c3RhbmQtaW4=",
        "config": {
            "gcp:project": PROJECT,
            "flightpipe:analystGroup": f"group:{GROUP}",
            "flightpipe:deployerServiceAccount": DEPLOYER,
            "flightpipe:notificationChannels": [CHANNEL],
        },
    }
    boot = {"config": {"gcp:project": PROJECT, "flightpipe-bootstrap:gitlabProjectId": "4242"}}
    for variable in CI_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    for api in ("RESOURCE_MANAGER", "SERVICE_USAGE", "STORAGE", "CLOUD_KMS", "IAM"):
        monkeypatch.setenv(f"{api}_API", url)
    monkeypatch.setenv("CLOUD_IDENTITY_API", url)
    monkeypatch.setenv("MONITORING_API", url)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    identity = tmp_path / "identity"
    identity.mkdir()
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(credential_file(identity, url, OWNER)))
    try:
        yield World(fake, url, tmp_path / "repo", main, boot)
    finally:
        server.shutdown()


def run(world: World, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, str]]:
    """Preflight `dev` on the world's files: (exit status, check -> its line)."""
    (world.root / "infra" / "bootstrap").mkdir(parents=True, exist_ok=True)
    (world.root / "infra" / "Pulumi.dev.yaml").write_text(yaml.safe_dump(world.main))
    (world.root / "infra" / "bootstrap" / "Pulumi.dev.yaml").write_text(yaml.safe_dump(world.boot))
    status = preflight.main(["dev", "--root", str(world.root)])
    out = capsys.readouterr().out.splitlines()
    # Read-only: besides google-auth's token exchange, GETs only.
    writes = [
        (c.method, c.path)
        for c in world.fake.calls
        if c.method != "GET" and not c.path.endswith(("/v1/token", ":generateAccessToken"))
    ]
    assert not writes, writes
    lines = {}
    for line in out:
        if line.startswith("preflight "):
            continue
        status_word, _, rest = line.partition(" ")
        check = rest.strip().split(":", 1)[0]
        lines[check] = line
        assert status_word in ("ok", "FAIL", "skip"), line
    return status, lines


# Every check preflight reports, one line each (docs/deploying.md, "Preflight").
CHECKS = frozenset(
    {
        "config",
        "example values",
        "secrets provider",
        "project",
        "apis",
        "state bucket",
        "kms key",
        "wif provider",
        "analyst group",
        "notification channels",
        "bootstrap outputs",
    }
)


def failed(lines: dict[str, str]) -> set[str]:
    return {check for check, line in lines.items() if line.startswith("FAIL")}


def test_a_ready_project_passes_every_check_with_get_calls_only(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines = run(world, capsys)
    assert status == 0, lines
    assert set(lines) == CHECKS
    assert all(line.startswith("ok") for line in lines.values()), lines
    # Before the first `pulumi up` the program's own APIs are not on yet: said, not failed.
    assert "pulumi up enables" in lines["apis"] and "run.googleapis.com" in lines["apis"]
    reads = {c.path for c in world.fake.calls if c.method == "GET"}
    assert f"/storage/v1/b/{BUCKET}" in reads and f"/v1/{KEY}" in reads


def _drop_api(api: str) -> Callable[[World], None]:
    return lambda w: w.fake.enabled_apis[PROJECT].discard(api)


# (name, how the world breaks, the checks that fail, what the failing line says)
BREAKS: list[tuple[str, Callable[[World], None], set[str], str]] = [
    (
        "api",
        _drop_api("cloudkms.googleapis.com"),
        {"apis", "kms key"},
        "not enabled: cloudkms.googleapis.com",
    ),
    ("project", lambda w: w.fake.project_numbers.clear(), {"project", "wif provider"}, "exist"),
    ("bucket", lambda w: w.fake.buckets.clear(), {"state bucket"}, f"bucket {BUCKET} does not"),
    ("key", lambda w: w.fake.crypto_keys.clear(), {"kms key"}, f"{KEY} does not exist"),
    ("provider", lambda w: w.fake.wif_providers.clear(), {"wif provider"}, "does not exist"),
    ("group", lambda w: w.fake.groups.clear(), {"analyst group"}, f"{GROUP} not found"),
    (
        "channel",
        lambda w: w.fake.notification_channels.clear(),
        {"notification channels"},
        f"{CHANNEL} does not exist",
    ),
    (
        "no-encryptedkey",
        lambda w: w.main.pop("encryptedkey"),
        {"secrets provider"},
        "no encryptedkey",
    ),
    (
        "example-group",
        lambda w: w.main["config"].update({"flightpipe:analystGroup": "group:team@example.com"}),
        {"example values", "analyst group"},
        "group:team@example.com",
    ),
    (
        "example-gitlab-project",
        lambda w: w.boot["config"].update({"flightpipe-bootstrap:gitlabProjectId": "12345678"}),
        {"example values"},
        "gitlabProjectId 12345678",
    ),
    (
        "unset-group",
        lambda w: w.main["config"].pop("flightpipe:analystGroup"),
        {"config"},
        "flightpipe:analystGroup is not set",
    ),
    (
        "other-project",
        lambda w: w.boot["config"].update({"gcp:project": "flightpipe-other"}),
        {"config"},
        "'flightpipe-other'",
    ),
]


@pytest.mark.parametrize("case", BREAKS, ids=[b[0] for b in BREAKS])
def test_each_failure_class_has_its_line(
    world: World,
    capsys: pytest.CaptureFixture[str],
    case: tuple[str, Callable[[World], None], set[str], str],
) -> None:
    _, breaks, failing, says = case
    breaks(world)
    status, lines = run(world, capsys)
    assert status == 1, lines
    assert failed(lines) == failing, lines
    assert any(says in lines[check] for check in failing), lines


def test_the_deploy_jobs_variables_must_name_the_bootstrap_outputs(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULUMI_BACKEND_URL", f"gs://{BUCKET}")
    monkeypatch.setenv("GCP_WIF_PROVIDER", PROVIDER.replace(NUMBER, "999"))
    status, lines = run(world, capsys)
    assert status == 1 and failed(lines) == {"bootstrap outputs"}, lines
    assert (
        f"GCP_WIF_PROVIDER={PROVIDER.replace(NUMBER, '999')} should be {PROVIDER}"
        in (lines["bootstrap outputs"])
    )


def test_one_run_lists_every_failure(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    for _, breaks, _, _ in BREAKS[2:8]:
        breaks(world)
    status, lines = run(world, capsys)
    assert status == 1
    expected = {"state bucket", "kms key", "wif provider", "analyst group"}
    assert failed(lines) == expected | {"notification channels", "secrets provider"}


def test_an_identity_without_the_permissions_is_told_which_it_lacks(
    world: World,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv(
        "GOOGLE_APPLICATION_CREDENTIALS", str(credential_file(tmp_path, world.url, NOBODY))
    )
    status, lines = run(world, capsys)
    assert status == 1
    assert "is refused (needs resourcemanager.projects.get)" in lines["project"], lines
    assert "(needs storage.buckets.get)" in lines["state bucket"]
    assert "(needs cloudkms.cryptoKeys.get)" in lines["kms key"]


def test_cloud_identity_disabled_for_the_caller_skips_the_group_check(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    world.fake.enabled_apis[PROJECT].discard(CLOUD_IDENTITY)
    status, lines = run(world, capsys)
    assert status == 0, lines
    assert lines["analyst group"].startswith("skip analyst group: cannot look")
    assert "cloudidentity.googleapis.com is not enabled in flightpipe-dev" in lines["analyst group"]


def test_without_credentials_it_says_so_in_one_line(
    world: World,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "absent.json"))
    status, lines = run(world, capsys)
    assert status == 1 and failed(lines) == {"credentials"}, lines
    assert not world.fake.calls


@pytest.mark.parametrize("argv", [[], ["staging"], ["dev", "--root", "/nonexistent"]])
def test_bad_usage_is_one_line_and_exit_2(argv: list[str]) -> None:
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "preflight.py"), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert run.stdout == ""
    assert len(run.stderr.splitlines()) == 1 and run.stderr.startswith("preflight.py: ")


def test_the_bootstrap_api_list_is_the_bootstraps() -> None:
    raw = yaml.safe_load((BOOTSTRAP / "Pulumi.dev.yaml").read_text())["config"]
    config = {k: str(v) for k, v in raw.items()} | {"flightpipe-bootstrap:gitlabProjectId": "4242"}
    if str(BOOTSTRAP) not in sys.path:
        sys.path.insert(0, str(BOOTSTRAP))
    graph = run_program(BOOTSTRAP / "__main__.py", "flightpipe-bootstrap", "dev", config)
    declared = {r.inputs["service"] for r in graph.of_type("gcp:projects/service:Service")}
    assert declared == set(preflight.BOOTSTRAP_APIS)


def test_make_preflight_runs_the_script_for_env() -> None:
    dry = subprocess.run(
        ["make", "-n", "preflight", "ENV=prod"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "scripts/preflight.py prod" in dry.stdout


def test_a_call_without_a_quota_project_says_how_to_set_one() -> None:
    """User credentials with no quota project: Google names no consumer project to enable the
    API in (https://cloud.google.com/docs/quotas/set-quota-project), so saying "enable it in ''"
    would help nobody."""
    response = requests.Response()
    response.status_code = 403
    body = {
        "error": {
            "code": 403,
            "status": "PERMISSION_DENIED",
            "message": "Cloud Identity API has not been used in project before or it is disabled.",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "SERVICE_DISABLED",
                    "domain": "googleapis.com",
                    "metadata": {"service": "cloudidentity.googleapis.com", "consumer": ""},
                }
            ],
        }
    }
    response._content = json.dumps(body).encode()
    line = preflight.refused(response, "you", "missing")
    assert "set-quota-project" in line and "--project" not in line
