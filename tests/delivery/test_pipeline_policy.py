"""Policies of .gitlab-ci.yml, read with PyYAML: fast and offline.

One pipeline per change, interruptible checks, deploys serialised and never cancelled, prod from
a protected tag (any GitLab tier) or manual on a protected environment (Premium), GCP reached only
through OIDC ID tokens for the WIF provider's own audience, jobs run make targets, every test
directory runs in a merge-request job, with the system tools its tests need.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CI: dict[str, Any] = yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())
JOBS = {name: job for name, job in CI.items() if isinstance(job, dict) and "stage" in job}
DEPLOYS = {"deploy-dev", "post-deploy-test-dev", "deploy-prod"}
MAIN_ONLY = "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"
PREMIUM_GATE = '$FLIGHTPIPE_PROD_GATE == "environment"'
TAG_GATE = (
    '$FLIGHTPIPE_PROD_GATE != "environment" && $CI_COMMIT_TAG && $CI_COMMIT_REF_PROTECTED == "true"'
)
GCP_JOBS = {"preview", "deploy-dev", "post-deploy-test-dev", "deploy-prod"}


def _merged(name: str) -> dict[str, Any]:
    job = JOBS[name]
    base = CI.get(job["extends"], {}) if "extends" in job else {}
    return {**CI["default"], **base, **job}


def _script(name: str) -> str:
    return "\n".join(_merged(name)["script"])


def test_workflow_runs_merge_request_or_main_pipelines_never_both() -> None:
    rules = CI["workflow"]["rules"]
    assert rules[0] == {"if": '$CI_PIPELINE_SOURCE == "merge_request_event"'}
    assert rules[1] == {"if": "$CI_COMMIT_BRANCH && $CI_OPEN_MERGE_REQUESTS", "when": "never"}
    assert rules[2] == {"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"}
    assert rules[3] == {"if": "$CI_COMMIT_TAG"}  # prod releases (deploy-prod's tag rule)
    assert len(rules) == 4


def test_checks_are_interruptible_and_deploys_are_not() -> None:
    assert CI["default"]["interruptible"] is True
    for name in JOBS:
        assert _merged(name)["interruptible"] is (name not in DEPLOYS), name


@pytest.mark.parametrize("name", sorted(DEPLOYS))
def test_deploy_jobs_hold_a_resource_group(name: str) -> None:
    job = _merged(name)
    assert job["resource_group"] in {"dev", "prod"}
    assert job["environment"]["name"] == job["resource_group"]


@pytest.mark.parametrize("name", ["deploy-dev", "post-deploy-test-dev"])
def test_dev_deploys_run_on_main_only_never_from_a_tag(name: str) -> None:
    assert _merged(name)["rules"] == [{"if": MAIN_ONLY}]


def test_production_deploys_from_a_protected_tag_or_manually_on_premiums_environment() -> None:
    job = _merged("deploy-prod")
    premium, tag = job["rules"]
    # Premium: main's pipeline, a manual job on the protected environment.
    assert premium == {
        "if": f"{PREMIUM_GATE} && {MAIN_ONLY}",
        "when": "manual",
        "allow_failure": True,
    }
    # Any tier (the default gate): a protected tag's pipeline, at once (the tag is the decision).
    assert tag == {"if": TAG_GATE}
    assert job["environment"]["deployment_tier"] == "production"
    assert "make deploy ENV=prod" in _script("deploy-prod")
    # The checks in every pipeline; dev's post-deploy test where there is one (main's).
    needs = job["needs"]
    assert needs[:4] == ["lint", "security", "unit-tests", "integration-tests"]
    assert {"job": "post-deploy-test-dev", "optional": True} in needs


@pytest.mark.parametrize(("name", "env"), [("deploy-dev", "dev"), ("deploy-prod", "prod")])
def test_deploy_jobs_run_preflight_logged_in_before_anything_changes(name: str, env: str) -> None:
    """scripts/preflight.py reads the cloud as the job's identity (the credential and the
    backend login of before_script), and names every missing precondition before `pulumi up`."""
    job = _merged(name)
    before = job["before_script"]
    assert before.index("source scripts/gcp_wif_login.sh") < before.index(
        'pulumi login "$PULUMI_BACKEND_URL"'
    )
    script = job["script"]
    preflight = script.index(f"make preflight ENV={env}")
    assert preflight < script.index(f"make deploy ENV={env}")
    assert preflight == 0, "nothing before preflight (stack_outputs.sh already calls Google)"


@pytest.mark.parametrize("name", sorted(GCP_JOBS))
def test_gcp_jobs_authenticate_with_an_oidc_id_token(name: str) -> None:
    job = _merged(name)
    # The WIF provider's own resource name, not the issuer URL that other relying parties share.
    assert job["id_tokens"] == {
        "GITLAB_OIDC_TOKEN": {"aud": "//iam.googleapis.com/$GCP_WIF_PROVIDER"}
    }
    assert "source scripts/gcp_wif_login.sh" in job["before_script"]


def _wif_login(provider: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "TMPDIR": str(tmp_path),
        "GITLAB_OIDC_TOKEN": "header.payload.signature",
        "GCP_SERVICE_ACCOUNT": "flightpipe-deployer@p.iam.gserviceaccount.com",
        "GCP_WIF_PROVIDER": provider,
    }
    script = 'source scripts/gcp_wif_login.sh && cat "$GOOGLE_APPLICATION_CREDENTIALS"'
    return subprocess.run(
        ["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )


def test_wif_login_names_the_provider_the_tokens_audience_names(tmp_path: Path) -> None:
    # A resource name, no secret: detect-secrets reads it as base64.
    # pragma: allowlist nextline secret
    provider = "projects/123456789012/locations/global/workloadIdentityPools/gitlab/providers/x-1"
    done = _wif_login(provider, tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["audience"] == f"//iam.googleapis.com/{provider}"


@pytest.mark.parametrize(
    "provider",
    [
        "projects/flightpipe-dev/locations/global/workloadIdentityPools/gitlab/providers/x",
        "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/gitlab/providers/x",
        "gitlab-oidc",
    ],
)
def test_wif_login_refuses_a_provider_that_is_not_a_full_name(
    provider: str, tmp_path: Path
) -> None:
    done = _wif_login(provider, tmp_path)
    assert done.returncode != 0 and not done.stdout
    assert done.stderr.startswith("error: GCP_WIF_PROVIDER=") and done.stderr.count("\n") == 1


def test_no_job_carries_a_credential_variable() -> None:
    forbidden = {"GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CREDENTIALS", "GCP_SA_KEY"}
    every_variables = [CI.get("variables", {})] + [_merged(n).get("variables", {}) for n in JOBS]
    for variables in every_variables:
        assert not forbidden & set(variables)
    assert "private_key" not in (REPO / ".gitlab-ci.yml").read_text()


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("lint", "make lint"),
        ("security", "make security"),
        ("unit-tests", "make test-unit"),
        ("unit-tests", "make infra-test"),
        ("integration-tests", "make test-integration"),
        ("integration-tests", "make test-delivery"),
        ("integration-tests", "make test-e2e"),
        ("preview", "make preview ENV=dev"),
        ("deploy-dev", "make deploy ENV=dev"),
        ("post-deploy-test-dev", "scripts/post_deploy_test.sh"),
    ],
)
def test_jobs_run_the_make_targets_a_laptop_runs(name: str, target: str) -> None:
    assert target in _script(name)


def test_preview_keeps_its_output_as_an_artifact() -> None:
    job = _merged("preview")
    assert "tee pulumi-preview.txt" in _script("preview")
    assert job["artifacts"]["paths"] == ["pulumi-preview.txt"]
    assert job["artifacts"]["when"] == "always"


def test_integration_tests_get_the_pubsub_emulator_as_a_service() -> None:
    services = _merged("integration-tests")["services"]
    assert any("emulators" in s["name"] and "pubsub" in s["command"] for s in services)


def test_image_builds_reach_a_buildkit_service() -> None:
    pulumi = CI[".pulumi"]
    assert pulumi["services"][0]["name"].startswith("moby/buildkit:")
    assert pulumi["variables"]["BUILDKIT_HOST"] == "tcp://buildkitd:1234"
    assert "source scripts/ci_builder.sh" in pulumi["before_script"]


def test_dependency_cache_is_keyed_by_the_lock_file() -> None:
    cache = CI["default"]["cache"]
    assert "requirements/dev.lock" in cache["key"]["files"]
    assert ".venv" in cache["paths"]


def _make_pytest_paths() -> dict[str, set[str]]:
    """{make target: the paths its `$(BIN)/pytest` recipe runs}, from the Makefile and mk/*.mk."""
    paths: dict[str, set[str]] = {}
    for makefile in [REPO / "Makefile", *sorted((REPO / "mk").glob("*.mk"))]:
        target = None
        for line in makefile.read_text().splitlines():
            if match := re.match(r"^([\w-]+):", line):
                target = match[1]
            elif target and (match := re.match(r"^\t\$\(BIN\)/pytest\b(.*)$", line)):
                args = match[1].split()
                paths[target] = {a for a in args if not a.startswith("-")} or {"tests"}
    return paths


def _merge_request_jobs() -> list[str]:
    def runs_on_mr(job: dict[str, Any]) -> bool:
        rules = job.get("rules")
        return rules is None or any("merge_request_event" in r.get("if", "") for r in rules)

    return [name for name in JOBS if runs_on_mr(_merged(name))]


def test_every_test_directory_runs_in_a_merge_request_job() -> None:
    pytest_paths = _make_pytest_paths()
    ran: set[str] = set()
    for name in _merge_request_jobs():
        for targets in re.findall(r"\bmake ((?:[\w-]+ ?)+)", _script(name)):
            for target in targets.split():
                ran |= {p.split("::")[0] for p in pytest_paths.get(target, set())}
    test_dirs = {
        d.relative_to(REPO).as_posix()
        for d in (REPO / "tests").iterdir()
        if d.is_dir() and any(d.glob("test_*.py"))
    }
    assert test_dirs >= {"tests/unit", "tests/infra", "tests/integration", "tests/e2e"}
    for directory in sorted(test_dirs):
        assert any(path == directory or path.startswith(f"{directory}/") for path in ran), (
            f"{directory} runs in no merge-request job"
        )


def test_integration_tests_install_the_system_tools_their_tests_need() -> None:
    # GitLab sets CI=true, where a test missing promtool, chromium or rsync fails, not skips.
    before = _merged("integration-tests")["before_script"]
    assert before.index("scripts/ci_bootstrap.sh") < before.index("bash scripts/system-deps.sh")
    deps = (REPO / "scripts" / "system-deps.sh").read_text()
    for tool in ("promtool", "chromium", "rsync"):
        assert f"command -v {tool}" in deps, tool


@pytest.mark.parametrize("name", ["unit-tests", "integration-tests"])
def test_each_pytest_run_reports_to_its_own_junit_file(name: str) -> None:
    written = re.findall(r"--junitxml=\$CI_PROJECT_DIR/(\S+?)\"", _script(name))
    assert len(written) == _script(name).count("make "), "a run without its own JUnit file"
    assert len(set(written)) == len(written), "two runs overwrite one JUnit file"
    assert _merged(name)["artifacts"]["reports"]["junit"] == written


# Steps that run something from .venv: its own path, or a script that does so.
_USES_VENV = re.compile(r"\.venv/|scripts/(stack_outputs|post_deploy_test)\.sh")


@pytest.mark.parametrize("name", sorted(JOBS))
def test_every_job_sets_up_the_venv_before_its_first_step_that_uses_it(name: str) -> None:
    # A cache hit restores .venv; a cold cache (new runner, changed lock file) does not. `make X`
    # sets up by itself (X depends on setup), so the first bare use of .venv is what must follow
    # an explicit `make setup`.
    job = _merged(name)
    steps = [*job.get("before_script", []), *job["script"]]
    setup = next((i for i, step in enumerate(steps) if step.strip() == "make setup"), None)
    first_use = next((i for i, s in enumerate(steps) if _USES_VENV.search(s)), None)
    if first_use is not None:
        assert setup is not None and setup < first_use, (name, steps)


@pytest.mark.parametrize("script", ["stack_outputs.sh", "post_deploy_test.sh"])
def test_scripts_that_run_the_venv_make_it_first(script: str) -> None:
    text = (REPO / "scripts" / script).read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    body = "\n".join(lines)
    assert "make -s setup" in body
    assert body.index("make -s setup") < body.index(".venv/bin/"), script


def test_pulumi_jobs_log_in_and_select_their_stack_before_any_stack_command() -> None:
    before = CI[".pulumi"]["before_script"]
    login = next(i for i, s in enumerate(before) if s.startswith("pulumi login "))
    select = next(i for i, s in enumerate(before) if "stack select" in s)
    assert login < select
    assert '--secrets-provider "$PULUMI_SECRETS_PROVIDER"' in before[select]
    assert before.index("source scripts/gcp_wif_login.sh") < login  # the bucket needs credentials
    for name in ("preview", "deploy-dev", "deploy-prod"):
        assert _merged(name)["variables"]["STACK"] in {"dev", "prod"}


@pytest.mark.parametrize(
    ("name", "account"),
    [
        ("preview", "$GCP_PREVIEWER_SERVICE_ACCOUNT"),
        ("deploy-dev", "$GCP_DEPLOYER_SERVICE_ACCOUNT"),
        ("post-deploy-test-dev", "$GCP_DEPLOYER_SERVICE_ACCOUNT"),
        ("deploy-prod", "$GCP_DEPLOYER_SERVICE_ACCOUNT"),
    ],
)
def test_each_gcp_job_names_the_identity_it_impersonates(name: str, account: str) -> None:
    assert JOBS[name]["variables"]["GCP_SERVICE_ACCOUNT"] == account


# Images whose digest could not be read here; each has a comment saying so where it is used.
_TAG_ONLY = {"gcr.io/google.com/cloudsdktool/google-cloud-cli:583.0.0-emulators"}


def test_every_image_is_pinned_by_digest() -> None:
    images = [CI["variables"]["PYTHON_IMAGE"]]
    for job in CI.values():
        if isinstance(job, dict):
            images += [s["name"] for s in job.get("services", [])]
    assert len(images) >= 3
    for image in images:
        assert re.search(r"@sha256:[0-9a-f]{64}$", image) or image in _TAG_ONLY, image


def _e2e_deadline(tmp_path: Path, **env: str) -> str:
    """The FLIGHTPIPE_E2E_DEADLINE_SECONDS scripts/post_deploy_test.sh gives `make test-e2e`.

    Run in a directory of its own whose `make` and `.venv/bin/python` only record or echo: what
    the e2e test would be given is the script's doing, not theirs.
    """
    work = tmp_path / "job"
    (work / "scripts").mkdir(parents=True)
    script = work / "scripts" / "post_deploy_test.sh"
    script.write_text((REPO / "scripts" / "post_deploy_test.sh").read_text())
    bin_dir, venv = tmp_path / "bin", work / ".venv" / "bin"
    bin_dir.mkdir()
    venv.mkdir(parents=True)
    seen = tmp_path / "deadline"
    (bin_dir / "make").write_text(
        "#!/bin/sh\n"
        f'[ "$1" = test-e2e ] && printf %s "${{FLIGHTPIPE_E2E_DEADLINE_SECONDS-unset}}" > {seen}\n'
        "exit 0\n"
    )
    (venv / "python").write_text("#!/bin/sh\necho stand-in\n")
    for tool in (bin_dir / "make", venv / "python"):
        tool.chmod(0o755)
    job_env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FLIGHTPIPE_E2E_BASE_URL": "https://api.example",
        "E2E_API_KEY_SECRET": "flightpipe-e2e-api-key",  # pragma: allowlist secret
        "GCP_SERVICE_ACCOUNT": "flightpipe-deployer@p.iam.gserviceaccount.com",
        "GOOGLE_CLOUD_PROJECT": "p",
        **env,
    }
    done = subprocess.run(
        ["bash", str(script)], cwd=work, env=job_env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return seen.read_text()


def test_a_first_deploys_e2e_test_waits_for_iam_and_a_later_one_does_not(tmp_path: Path) -> None:
    """Nothing to roll back to (no PREVIOUS_API_REVISION): up to 10 minutes for fresh grants."""
    assert _e2e_deadline(tmp_path / "first") == "600"
    assert _e2e_deadline(tmp_path / "set", FLIGHTPIPE_E2E_DEADLINE_SECONDS="60") == "60"
    later = _e2e_deadline(tmp_path / "later", PREVIOUS_API_REVISION="flightpipe-api-00001-abc")
    assert later == "unset"  # the e2e test's own default
