"""`.gitlab-ci.yml` validates against GitLab's JSON schema and yields the expected pipelines.

gitlab-ci-local (npm, pinned 4.60.1) validates the file against GitLab's CI schema before listing
jobs, and evaluates job `rules:` the way GitLab does (4.60.1 ignores `workflow:rules`; the
PyYAML policy test covers those). Install it with
`make ci-tools` (npm install into ~/.cache/flightpipe/gitlab-ci-local) or put it on PATH.
Inside GitLab itself the test skips: GitLab validated the file before it ran the pipeline.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHED = Path.home() / ".cache" / "flightpipe" / "gitlab-ci-local" / "node_modules" / ".bin"
INSTALL = (
    "gitlab-ci-local is not installed: run `make ci-tools` "
    "(npm install --prefix ~/.cache/flightpipe/gitlab-ci-local gitlab-ci-local@4.60.1; Node 18+)"
)
CHECKS = {
    "lint": ("check", "on_success"),
    "security": ("check", "on_success"),
    "unit-tests": ("test", "on_success"),
    "integration-tests": ("test", "on_success"),
}

pytestmark = pytest.mark.skipif(
    os.environ.get("GITLAB_CI") == "true",
    reason="GitLab validated .gitlab-ci.yml against its schema before starting this pipeline",
)


def _gitlab_ci_local() -> str:
    found = shutil.which("gitlab-ci-local", path=f"{os.environ.get('PATH', '')}:{CACHED}")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {INSTALL}", pytrace=False)
        pytest.skip(INSTALL)
    return found


def _jobs(*variables: str, unset: tuple[str, ...] = ()) -> dict[str, tuple[str, str]]:
    """{job: (stage, when)} of the pipeline gitlab-ci-local evaluates with these variables."""
    argv = [_gitlab_ci_local(), "--list-csv"]
    for variable in variables:
        argv += ["--variable", variable]
    for name in unset:
        argv += ["--unset-variable", name]
    # Inside a CI job (gitlab-ci-local's own, tests/delivery/pipeline_jobs.py) the job's CI_*
    # variables are in the environment and would steer the rules: list with only ours.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CI_", "GITLAB_"))}
    result = subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=120, check=False, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "json schema validated" in result.stderr, result.stderr
    # Warnings (e.g. about overriding a predefined variable) may precede the CSV header.
    table = result.stdout[result.stdout.index("name;description;stage;") :]
    rows = csv.DictReader(io.StringIO(table), delimiter=";")
    return {row["name"]: (row["stage"], row["when"]) for row in rows}


def test_merge_request_pipeline_runs_checks_tests_and_preview() -> None:
    # GitLab sets no CI_COMMIT_BRANCH in merge-request pipelines.
    mr = _jobs("CI_PIPELINE_SOURCE=merge_request_event", unset=("CI_COMMIT_BRANCH",))
    assert mr == {
        **CHECKS,
        "preview": ("preview", "on_success"),
    }


MAIN = ("CI_PIPELINE_SOURCE=push", "CI_COMMIT_BRANCH=main", "CI_DEFAULT_BRANCH=main")
# A tag's pipeline: GitLab sets CI_COMMIT_TAG and no CI_COMMIT_BRANCH; CI_COMMIT_REF_PROTECTED is
# "true" for a protected tag.
TAG = ("CI_PIPELINE_SOURCE=push", "CI_COMMIT_TAG=v1.2.3", "CI_DEFAULT_BRANCH=main")
DEV = {"deploy-dev": ("deploy", "on_success"), "post-deploy-test-dev": ("verify", "on_success")}
PREMIUM = "FLIGHTPIPE_PROD_GATE=environment"


def test_main_pipeline_deploys_dev_and_verifies_it_but_not_prod_by_default() -> None:
    # A push to main, whatever branch (or detached commit) this checkout is on.
    assert _jobs(*MAIN) == {**CHECKS, **DEV}


def test_main_pipeline_offers_a_manual_prod_deploy_with_the_premium_gate() -> None:
    assert _jobs(*MAIN, PREMIUM) == {**CHECKS, **DEV, "deploy-prod": ("production", "manual")}


def test_protected_tag_pipeline_runs_the_checks_and_deploys_prod_not_dev() -> None:
    tag = _jobs(*TAG, "CI_COMMIT_REF_PROTECTED=true", unset=("CI_COMMIT_BRANCH",))
    assert tag == {**CHECKS, "deploy-prod": ("production", "on_success")}


@pytest.mark.parametrize(
    "variables",
    [("CI_COMMIT_REF_PROTECTED=false",), ("CI_COMMIT_REF_PROTECTED=true", PREMIUM)],
    ids=["unprotected-tag", "premium-gate"],
)
def test_other_tag_pipelines_only_run_the_checks(variables: tuple[str, ...]) -> None:
    assert _jobs(*TAG, *variables, unset=("CI_COMMIT_BRANCH",)) == CHECKS
