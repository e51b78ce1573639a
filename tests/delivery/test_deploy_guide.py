"""The deploy guide is a test: docs/deploying.md's commands, run as written, reach what CI needs.

From an empty project (no buckets, no stacks, no value of the owner's in the repository) the
guide's `sh` blocks run in order once for dev and once for prod (tests/delivery/guide.py), with
only `gcloud` and `pulumi` replaced by the stand-ins; the bootstrap's `pulumi up` runs the real
bootstrap program under mocks. Then the committed stack files and the GitLab variables the guide
printed must be what the pipeline's jobs need. The jobs themselves run from this end state in
tests/delivery/pipeline_jobs.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.delivery import guide
from tests.delivery.guide import GuideError, GuideRun, Operator
from tests.delivery.owners_google import OWNER_ACCOUNT, Organisation
from tests.delivery.test_preflight import CHECKS

REPO = guide.REPO
STANDINS = REPO / guide.STANDINS
# The group and prod's channel exist in the fake organisation the program runs against
# (tests/infra/program.py); dev's project is not the documentation's, to show the guide sets it.
# The owner's ADC bills Cloud Identity to a project of theirs that is neither dev nor prod.
GROUP = "group:flight-analysts@acme-flights.dev"
QUOTA_PROJECT = "acme-flights-admin"
OPERATORS = [
    Operator("dev", "acme-flights-dev", "4242", GROUP, quota_project=QUOTA_PROJECT),
    Operator(
        "prod",
        "flightpipe-prod",
        "4242",
        GROUP,
        # pragma: allowlist nextline secret
        "projects/flightpipe-prod/notificationChannels/8264519037712834",
        QUOTA_PROJECT,
    ),
]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> GuideRun:
    checkout = guide.copy_checkout(tmp_path_factory.mktemp("guide") / "flightpipe")
    (checkout / ".venv").symlink_to(REPO / ".venv")  # `make setup`, kept for the previews below
    return guide.run_guide(checkout, OPERATORS, tmp_path_factory.mktemp("owner"))


def _committed(run: GuideRun, path: str) -> dict[str, Any]:
    """`path` as the last commit holds it (the guide commits its stack files)."""
    text = subprocess.run(
        ["git", "show", f"HEAD:{path}"],
        cwd=run.checkout,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def _bootstrap_outputs(run: GuideRun, operator: Operator) -> dict[str, Any]:
    backend = f"gs://{operator.project}-pulumi-bootstrap"
    outputs: dict[str, Any] = run.stack(backend, "flightpipe-bootstrap", operator.env)["outputs"]
    return outputs


def _committed_with_the_bootstraps_key(
    run: GuideRun, operator: Operator, program: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The bootstrap's outputs and `program`'s committed stack file, which names its KMS key."""
    outputs = _bootstrap_outputs(run, operator)
    settings = _committed(run, f"{program}/Pulumi.{operator.env}.yaml")
    assert settings["secretsprovider"] == outputs["secrets_provider"]
    return outputs, settings


@pytest.mark.parametrize("operator", OPERATORS, ids=lambda o: o.env)
def test_the_main_stack_file_is_committed_with_the_bootstraps_key_and_the_owners_values(
    run: GuideRun, operator: Operator
) -> None:
    outputs, settings = _committed_with_the_bootstraps_key(run, operator, "infra")
    assert settings["secretsprovider"].startswith(f"gcpkms://projects/{operator.project}/")
    assert settings.get("encryptedkey") and "encryptionsalt" not in settings
    config = settings["config"]
    assert config["gcp:project"] == operator.project
    assert config["flightpipe:deployerServiceAccount"] == outputs["deployer_service_account"]
    assert config["flightpipe:analystGroup"] == operator.analyst_group
    channels = [operator.notification_channel] if operator.notification_channel else None
    assert config.get("flightpipe:notificationChannels") == channels
    # The stack exists in the stacks' bucket, recorded with the same provider.
    stack = run.stack(outputs["state_url"], "flightpipe", operator.env)
    assert stack["secrets_provider"] == outputs["secrets_provider"]


@pytest.mark.parametrize("operator", OPERATORS, ids=lambda o: o.env)
def test_the_bootstrap_stack_is_kms_encrypted_in_its_own_bucket(
    run: GuideRun, operator: Operator
) -> None:
    _, settings = _committed_with_the_bootstraps_key(run, operator, "infra/bootstrap")
    assert "encryptionsalt" not in settings
    assert settings["config"]["flightpipe-bootstrap:gitlabProjectId"] == operator.gitlab_project_id
    assert settings["config"]["gcp:project"] == operator.project
    gate = settings["config"].get("flightpipe-bootstrap:deployGate")
    assert gate == ("tag" if operator.env == "prod" else None)  # prod: any GitLab tier
    bucket = run.cloud()["buckets"][f"{operator.project}-pulumi-bootstrap"]
    assert bucket["versioning"] and bucket["uniform_bucket_level_access"]
    assert bucket["public_access_prevention"]
    # Only the bootstrap lives there: the main stack is in the bucket the bootstrap made.
    stacks = run.cloud()["backends"][f"gs://{operator.project}-pulumi-bootstrap"]["stacks"]
    assert set(stacks) == {f"flightpipe-bootstrap/{operator.env}"}


def test_the_gitlab_variables_the_guide_prints_are_the_ones_the_pipeline_needs(
    run: GuideRun,
) -> None:
    needed = guide.pipeline_variables(REPO)
    assert "GCP_WIF_PROVIDER" in needed and "PULUMI_SECRETS_PROVIDER" in needed
    for operator in OPERATORS:
        printed = run.variables[operator.env]
        previews = {"GCP_PREVIEWER_SERVICE_ACCOUNT"} if operator.env == "prod" else set()
        assert set(printed) == needed - previews, operator.env
        outputs = _bootstrap_outputs(run, operator)
        assert printed["GCP_WIF_PROVIDER"] == outputs["wif_provider"]
        assert printed["GCP_DEPLOYER_SERVICE_ACCOUNT"] == outputs["deployer_service_account"]
        assert printed["PULUMI_BACKEND_URL"] == outputs["state_url"]
        assert printed["PULUMI_SECRETS_PROVIDER"] == outputs["secrets_provider"]
        if operator.env == "dev":
            assert printed["GCP_PREVIEWER_SERVICE_ACCOUNT"] == outputs["previewer_service_account"]


@pytest.mark.parametrize("operator", OPERATORS, ids=lambda o: o.env)
def test_the_committed_main_stack_previews_with_the_real_program(
    run: GuideRun, operator: Operator
) -> None:
    """What the guide committed is a stack the CLI accepts and infra/config.py validates: the
    main program runs under mocks on it (as the merge request's `preview` would)."""
    outputs = _bootstrap_outputs(run, operator)
    env = {
        "PATH": f"{run.checkout / guide.STANDINS}:{os.environ['PATH']}",
        "HOME": str(run.home),
        "STANDIN_STATE": str(run.state),
        "STANDIN_LOG": str(run.log),
        "BUILDX_BUILDER": "stand-in",
    }
    assert _pulumi(env, run.checkout, "login", outputs["state_url"]).returncode == 0
    preview = _pulumi(env, run.checkout, "-C", "infra", "preview", "--stack", operator.env)
    assert preview.returncode == 0, preview.stderr[-3000:]
    assert "api_url" in preview.stdout


PREFLIGHT_LINE = re.compile(r"^(?P<status>ok|FAIL|skip) +(?P<check>[a-z][a-z ]*[a-z])(:|$)")


@pytest.mark.parametrize("operator", OPERATORS, ids=lambda o: o.env)
def test_preflight_passes_on_what_the_guide_made_with_the_owners_own_credentials(
    run: GuideRun, operator: Operator
) -> None:
    """`make preflight` at the end of step 3 checks every precondition, the analyst group
    included (looked up, not skipped), read-only and as the owner's ADC user."""
    found = [PREFLIGHT_LINE.match(line) for line in run.output[operator.env].splitlines()]
    results = {m["check"]: m["status"] for m in found if m}
    assert set(results) == CHECKS, run.output[operator.env]
    assert set(results.values()) == {"ok"}, run.output[operator.env]
    assert run.google is not None
    calls = [c for c in run.google.calls if c.path != "/token"]  # google-auth's token refresh
    assert {(c.method, c.caller) for c in calls} == {("GET", OWNER_ACCOUNT)}
    paths = {c.path for c in calls}
    assert f"/storage/v1/b/{operator.project}-pulumi-state" in paths
    assert f"/v1/{_bootstrap_outputs(run, operator)['wif_provider']}" in paths


def test_preflight_stops_the_guide_when_the_analyst_group_does_not_exist(tmp_path: Path) -> None:
    checkout = guide.copy_checkout(tmp_path / "flightpipe")
    empty = Organisation(groups=frozenset(), channels=frozenset())
    with pytest.raises(GuideError) as refused:
        guide.run_guide(checkout, OPERATORS[:1], tmp_path / "owner", organisation=empty)
    where = re.search(r"docs/deploying\.md:(\d+) failed", str(refused.value))
    assert where, refused.value
    failed = next(
        b for b in guide.blocks((REPO / guide.GUIDE).read_text()) if b.line == int(where[1])
    )
    assert "make preflight" in failed.text
    says = "FAIL analyst group: flight-analysts@acme-flights.dev not found or not visible"
    assert says in str(refused.value)


def test_every_shell_block_of_the_guide_runs_or_says_why_not() -> None:
    text = (REPO / guide.GUIDE).read_text()
    found = guide.blocks(text)
    skipped = [b for b in found if b.skip_reason]
    assert guide.runnable(text) and all(b.lang == "sh" for b in skipped)
    with pytest.raises(GuideError, match="must be ```sh"):
        guide.blocks("text\n\n```bash\npulumi up\n```\n")
    with pytest.raises(GuideError, match="must be ```sh"):
        guide.blocks("text\n\n```\ngcloud auth login\n```\n")


def test_a_failing_command_fails_the_guide(tmp_path: Path) -> None:
    """A block that fails stops the run and names its line (the owner's values missing here)."""
    checkout = guide.copy_checkout(tmp_path / "flightpipe")
    incomplete = Operator("dev", "acme-flights-dev", "4242", "")
    with pytest.raises(GuideError, match=r"docs/deploying\.md:\d+ failed"):
        guide.run_guide(checkout, [incomplete], tmp_path / "owner")


# ---- the stand-in CLI: backends, secrets providers, strict files -------------------------------


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[dict[str, str]]:
    home = tmp_path / "home"
    (home / ".config" / "gcloud").mkdir(parents=True)
    (home / ".config" / "gcloud" / "application_default_credentials.json").write_text("{}")
    yield {
        "PATH": f"{STANDINS}:{os.environ['PATH']}",
        "HOME": str(home),
        "STANDIN_STATE": str(tmp_path / "state.json"),
        "STANDIN_LOG": str(tmp_path / "log.jsonl"),
        "STANDIN_DIR": str(STANDINS),
    }


def _pulumi(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["pulumi", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def _project(tmp_path: Path, name: str) -> Path:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "Pulumi.yaml").write_text(f"name: {name}\nruntime: python\n")
    return directory


def test_stack_output_reads_the_logged_in_backend_only(cli: dict[str, str], tmp_path: Path) -> None:
    """After `pulumi login` to another bucket, the bootstrap's stack is not there."""
    boot = _project(tmp_path, "boot")
    assert _pulumi(cli, boot, "login", "gs://a").returncode == 0
    init = _pulumi(cli, boot, "stack", "init", "dev", "--secrets-provider", "passphrase")
    assert init.returncode != 0 and "PULUMI_CONFIG_PASSPHRASE" in init.stderr
    env = cli | {"PULUMI_CONFIG_PASSPHRASE": ""}
    assert (
        _pulumi(env, boot, "stack", "init", "dev", "--secrets-provider", "passphrase").returncode
        == 0
    )
    assert _pulumi(env, boot, "login", "gs://b").returncode == 0
    elsewhere = _pulumi(env, boot, "stack", "output", "state_url", "--stack", "dev")
    assert elsewhere.returncode != 0 and "no stack named 'dev' found" in elsewhere.stderr
    assert _pulumi(env, boot, "login", "gs://a").returncode == 0
    missing = _pulumi(env, boot, "stack", "output", "state_url", "--stack", "dev")
    assert "does not have output property 'state_url'" in missing.stderr  # never updated


def test_an_empty_secrets_provider_with_a_passphrase_set_makes_a_passphrase_stack(
    cli: dict[str, str], tmp_path: Path
) -> None:
    """`--secrets-provider ""` is `default`: the passphrase provider on a bucket backend."""
    main = _project(tmp_path, "main")
    env = cli | {"PULUMI_CONFIG_PASSPHRASE": ""}
    assert _pulumi(env, main, "login", "gs://state").returncode == 0
    assert _pulumi(env, main, "stack", "init", "dev", "--secrets-provider", "").returncode == 0
    settings = yaml.safe_load((main / "Pulumi.dev.yaml").read_text())
    assert "encryptionsalt" in settings and "secretsprovider" not in settings
    state = json.loads(Path(cli["STANDIN_STATE"]).read_text())
    # pragma: allowlist nextline secret
    assert state["backends"]["gs://state"]["stacks"]["main/dev"]["secrets_provider"] == "passphrase"


def test_the_cli_refuses_a_project_file_it_cannot_parse(
    cli: dict[str, str], tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "Pulumi.yaml").write_text(
        "name: b\nruntime: python\nconfig:\n  uri:\n    type: string\n"
        "    description: tokens carry (aud: $CI_SERVER_URL).\n"
    )
    assert _pulumi(cli, broken, "login", "gs://state").returncode == 0
    refused = _pulumi(cli, broken, "stack", "init", "dev", "--secrets-provider", "passphrase")
    assert refused.returncode != 0
    assert "invalid YAML file: line 6: mapping values are not allowed here" in refused.stderr


def test_up_refuses_a_stack_missing_a_required_key(cli: dict[str, str], tmp_path: Path) -> None:
    project = _project(tmp_path, "req")
    (project / "Pulumi.yaml").write_text(
        "name: req\nruntime: python\nconfig:\n  group:\n    type: string\n"
    )
    env = cli | {"PULUMI_CONFIG_PASSPHRASE": ""}
    assert _pulumi(env, project, "login", "gs://state").returncode == 0
    assert _pulumi(env, project, "stack", "init", "dev").returncode == 0
    refused = _pulumi(env, project, "up", "--yes")
    assert "Stack 'dev' is missing configuration value 'group'" in refused.stderr


def test_set_quota_project_needs_the_adc_file_and_a_project_of_the_account(
    cli: dict[str, str], tmp_path: Path
) -> None:
    """As gcloud: the quota project goes into an existing user ADC, on a project the account may
    use; the file is what google-auth reads (quota_project_id)."""
    Path(cli["STANDIN_STATE"]).write_text(json.dumps({"projects": ["mine"]}))
    adc = Path(cli["HOME"]) / ".config" / "gcloud" / "application_default_credentials.json"
    adc.unlink()

    def gcloud(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["gcloud", *args], env=cli, capture_output=True, text=True, check=False
        )

    early = gcloud("auth", "application-default", "set-quota-project", "mine")
    assert early.returncode == 1 and "gcloud auth application-default login" in early.stderr
    assert gcloud("auth", "application-default", "login").returncode == 0
    assert gcloud("auth", "application-default", "set-quota-project", "theirs").returncode == 1
    assert gcloud("auth", "application-default", "set-quota-project", "mine").returncode == 0
    written = json.loads(adc.read_text())
    assert written["type"] == "authorized_user" and written["quota_project_id"] == "mine"
