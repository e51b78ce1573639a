"""The pipeline's jobs really run: gitlab-ci-local's shell executor on a fresh clone, cold cache.

`make ci-jobs` runs this file (it is not collected by `make test`: it runs gitlab-ci-local, which
runs `make test-delivery`, which would run it again). Two parts:

* the merge-request checks that need no cloud (`lint`, `security`, `unit-tests`,
  `integration-tests`) run from a fresh `git clone` with no `.venv` and no GitLab cache, each in
  its own copy (`--shell-isolation`), and must all pass. Each job finds on PATH only the tools
  its image has or its before_script installs (job_path), and a service's emulator where the
  service would be (job_services). The only warm thing is uv's download cache (`UV_CACHE_DIR`),
  which stands in for PyPI: what a cold cache costs in GitLab is downloads, what it can break is
  order, and order is what runs here.
* the jobs that talk to Google Cloud (`preview`, `deploy-dev`, `post-deploy-test-dev` and its
  rollback, `deploy-prod` from a protected tag and on Premium's protected environment) run
  their scripts unchanged, to their end, with `pulumi`, `curl` and `docker-buildx` replaced by
  recording stand-ins on PATH (tests/delivery/standins) and the Google HTTP endpoints by a
  recording fake project; the "deployed" API is a real `flightpipe serve`. The world they start
  from is the one docs/deploying.md leaves, run as written (tests/delivery/ci_world.py). Each
  job's ID token carries the claims GitLab gives that job and the provider's own audience, and
  the bootstrap's trust rules must map it to the job's account.
  The assertions read the recorded calls: login before stack select, the KMS secrets provider,
  the service account each job's credential impersonates, preflight passing before `up`, `up`
  before the outputs are read, the e2e test receiving its key, the rollback moving traffic to
  the revision recorded before the deploy.

The scenarios are here, in the order the pipeline runs them; how a job is run is
tests/delivery/ci_local.py's, the world the cloud jobs start from tests/delivery/ci_world.py's.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.preflight import REMOTE
from tests.delivery.ci_local import JOB_TIMEOUT_S, UV_CACHE, Run, fresh_clone, job_services, run_job
from tests.delivery.ci_world import E2E_KEY, ENVIRONMENTS, World, account, build_world, kms
from tests.infra.gitlab_tokens import on_free, tag_token, token

REPO = Path(__file__).resolve().parents[2]
COLLECT_ONLY = "tests.delivery.collect_only"
MR_CHECKS = ("lint", "security", "unit-tests", "integration-tests")
# What scripts/preflight.py prints a line for, in its order.
PREFLIGHT_CHECKS = (
    "config",
    "example values",
    "secrets provider",
    *(check.__name__.replace("_", " ") for check in REMOTE),
    "bootstrap outputs",
)


@pytest.fixture
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone for one test (the merge-request checks run on the tree exactly as committed)."""
    return fresh_clone(tmp_path_factory)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with build_world(fresh_clone(tmp_path_factory), tmp_path_factory.mktemp("standins")) as built:
        yield built


# Each job's gitlab-ci-local run is bounded by JOB_TIMEOUT_S, not pytest's default timeout.
pytestmark = pytest.mark.timeout(4 * JOB_TIMEOUT_S)


# First, before any stand-in of the cloud jobs exists: the longest part, run with nothing else of
# this file alive.
def test_merge_request_checks_pass_from_a_cold_cache(clone: Path) -> None:
    variables = {
        "CI_PIPELINE_SOURCE": "merge_request_event",
        "UV_CACHE_DIR": str(UV_CACHE),
        # Only a job with the emulator service (job_services) gets an emulator.
        "FLIGHTPIPE_TEST_PUBSUB_EMULATOR_HOST": "",
        # `make test` ran the suite once; here each job's pytest runs collect its selection only
        # (tests/delivery/collect_only.py): the jobs' own set-up, tools and markers are what the
        # rehearsal proves.
        "PYTHONPATH": ".",
        "PYTEST_PLUGINS": COLLECT_ONLY,
    }
    # Every job runs whatever an earlier one did, as in GitLab (they all have `needs: []`), so
    # one run names every failing job.
    failures: dict[str, str] = {}
    for job in MR_CHECKS:
        with job_services(clone, job, clone.parent / f"services-{job}") as services:
            run = run_job(clone, job, variables | services, "--unset-variable", "CI_COMMIT_BRANCH")
        try:
            run.assert_cold(job)
            if job == "security" and not _pypi_json_api():
                _assert_only_the_audit_could_not_run(run)
                continue
            assert run.returncode == 0, run.output[-6000:]
            assert run.succeeded(job), f"{job} did not finish:\n{run.output[-4000:]}"
            if job in ("unit-tests", "integration-tests"):
                collected = [
                    int(n) for n in re.findall(r"(\d+)(?:/\d+)? tests? collected", run.output)
                ]
                assert collected and min(collected) > 0, f"{job} selected no test"
                assert not re.search(r"\d+ passed", run.output), f"{job} ran tests again"
        except AssertionError as failed:
            failures[job] = str(failed)
    assert not failures, "\n\n".join(f"---- {job}:\n{why}" for job, why in failures.items())


def _assert_preflight_passed(run: Run, env: str) -> None:
    """`make preflight ENV=<env>` ran every check green, before `pulumi up`.

    But the analyst group's, which preflight skips as the job's identity: neither program
    enables the Cloud Identity API, which a service account's lookup bills to its own project.
    """
    assert f"scripts/preflight.py {env}" in run.output, run.output[-6000:]
    for check in PREFLIGHT_CHECKS:
        found = re.search(rf"(?m)\b(ok|FAIL|skip) +{check}\b.*$", run.output)
        assert found, (check, run.output[-6000:])
        if check == "analyst group" and found.group(1) == "skip":
            assert "cloudidentity.googleapis.com is not enabled" in found.group(0), found.group(0)
        else:
            assert found.group(1) == "ok", found.group(0)
    preflight = run.output.index(f"scripts/preflight.py {env}")
    assert preflight < run.output.index(f"Updating ({env})"), "preflight runs before `pulumi up`"


def _pulumi(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in calls if c["tool"] == "pulumi" and c["argv"] != ["version"]]


def _verb(call: dict[str, Any]) -> str:
    """`login gs://...`, `stack select`, `up`, `stack output`... (flags and values dropped)."""
    words, skip = [], False
    for arg in call["argv"]:
        if skip:
            skip = False
        elif arg in ("-C", "--cwd", "--stack", "-s", "--secrets-provider"):
            skip = True
        elif not arg.startswith("-"):
            words.append(arg)
    return " ".join(words[:2] if words[:1] in (["stack"], ["config"], ["login"]) else words[:1])


def _assert_state_and_identity(calls: list[dict[str, Any]], env: str, account: str) -> None:
    """Login to the env's bucket, then select the stack with the KMS provider, all as `account`."""
    facts = ENVIRONMENTS[env]
    pulumi = _pulumi(calls)
    assert not [c for c in pulumi if "error" in c], [c["error"] for c in pulumi if "error" in c]
    verbs = [_verb(c) for c in pulumi]
    assert verbs[0] == f"login {facts['bucket']}", verbs
    assert verbs[1] == "stack select", verbs
    select = pulumi[1]
    assert select["stack"] == env and select["secrets_provider"] == kms(facts["project"])
    assert "PULUMI_CONFIG_PASSPHRASE" not in select["env"]
    for call in pulumi:
        assert call["identity"]["service_account"] == account, call
        assert call["identity"]["audience"].endswith("/providers/gitlab-oidc"), call


# The tokens GitLab Free issues each job (tests/infra/gitlab_tokens.py): a merge request's from an
# unprotected branch, main's, and a protected tag's.
MERGE_REQUEST_TOKEN = on_free(
    token(
        pipeline_source="merge_request_event",
        ref="feature/x",
        ref_path="refs/heads/feature/x",
        ref_protected="false",
        environment="dev",
    )
)
MAIN_DEV_TOKEN = on_free(token(environment="dev"))
PROD_TAG = "v1.2.3"
PROD_TAG_TOKEN = on_free(tag_token(PROD_TAG, environment="prod"))
# GitLab Premium: main's manual job on the protected environment `prod`.
PREMIUM_PROD_TOKEN = token(environment="prod", environment_protected="true")
MAIN_PIPELINE = {"CI_PIPELINE_SOURCE": "push", "CI_COMMIT_BRANCH": "main"}


def test_preview_runs_as_the_previewer_on_the_dev_stack(world: World) -> None:
    variables = {
        **world.variables,
        **world.env_variables("dev", MERGE_REQUEST_TOKEN, wants="preview"),
    }
    variables["CI_PIPELINE_SOURCE"] = "merge_request_event"
    run = run_job(world.clone, "preview", variables, "--unset-variable", "CI_COMMIT_BRANCH")
    assert run.returncode == 0, run.output[-6000:]
    run.assert_cold("preview")
    calls = world.calls("preview")
    _assert_state_and_identity(calls, "dev", account("flightpipe-dev", "previewer"))
    verbs = [_verb(c) for c in _pulumi(calls)]
    assert verbs[-1] == "preview", verbs
    assert not [v for v in verbs if v == "up"], "a preview must never update"
    builder = [c for c in calls if c["tool"] == "docker-buildx" and c["argv"][:1] == ["create"]]
    assert builder and builder[0]["endpoint"] == "tcp://buildkitd:1234"


def test_deploy_dev_then_post_deploy_test_pass_with_the_deployer_and_the_e2e_key(
    world: World,
) -> None:
    before = len(world.google.calls)
    world.use_project("dev")
    variables = {**world.variables, **world.env_variables("dev", MAIN_DEV_TOKEN, wants="deploy")}
    variables |= MAIN_PIPELINE
    run = run_job(world.clone, "deploy-dev", variables)
    assert run.returncode == 0, run.output[-8000:]
    run.assert_cold("deploy-dev")
    _assert_preflight_passed(run, "dev")
    with world.deployed_api("dev"):
        run = run_job(world.clone, "post-deploy-test-dev", variables)  # reads deploy-dev's dotenv
    assert run.returncode == 0, run.output[-8000:]
    run.assert_cold("post-deploy-test-dev")
    deployer = account("flightpipe-dev", "deployer")
    deploy = world.calls("deploy-dev")
    _assert_state_and_identity(deploy, "dev", deployer)
    verbs = [_verb(c) for c in _pulumi(deploy)]
    assert "up" in verbs and "stack output" in verbs
    assert verbs.index("up") < verbs.index("stack output"), verbs  # outputs read after `up`
    (up,) = [c for c in _pulumi(deploy) if _verb(c) == "up"]
    assert up["cwd"].endswith("/infra") and up["env"]["BUILDX_BUILDER"] == "flightpipe-ci"
    calls = world.google.calls[before:]
    # Every Google call the jobs made was authorised by the deployer's federated token.
    api_calls = [c for c in calls if not c.path.endswith(("/token", ":generateAccessToken"))]
    assert api_calls and all(c.caller == deployer for c in api_calls), api_calls
    assert f"/v1/projects/-/serviceAccounts/{deployer}:generateAccessToken" in [
        c.path for c in calls
    ]
    id_tokens = [c for c in calls if c.path.endswith(":generateIdToken")]
    assert [c.path for c in id_tokens] == [
        f"/v1/projects/-/serviceAccounts/{deployer}:generateIdToken"
    ]
    assert (
        id_tokens[0].body["audience"]
        == json.loads((Path(world.variables["STANDIN_OUTPUTS"])).read_text())["dev"]["api_url"]
    )
    secret = [c for c in calls if c.path.endswith("versions/latest:access")]
    assert [c.path for c in secret] == [
        "/v1/projects/flightpipe-dev/secrets/flightpipe-e2e-api-key/versions/latest:access"
    ]
    assert not [c for c in calls if c.method == "PATCH"], "a passing test must not roll back"
    # The e2e test ran against the "deployed" API (it could only pass with the key).
    assert "1 passed" in run.output


def test_a_failing_post_deploy_test_rolls_the_api_back_and_fails_the_job(world: World) -> None:
    before = len(world.google.calls)
    project = ENVIRONMENTS["dev"]["project"]
    world.google.secrets[f"projects/{project}/secrets/flightpipe-e2e-api-key"] = "a-revoked-key"
    try:
        world.use_project("dev")
        token_variables = world.env_variables("dev", MAIN_DEV_TOKEN, wants="deploy")
        variables = {**world.variables, **token_variables, **MAIN_PIPELINE}
        variables["FLIGHTPIPE_E2E_DEADLINE_SECONDS"] = "5"
        with world.deployed_api("dev"):
            run = run_job(world.clone, "post-deploy-test-dev", variables)
    finally:
        world.google.secrets[f"projects/{project}/secrets/flightpipe-e2e-api-key"] = E2E_KEY
    assert run.returncode != 0, "the job must fail after rolling back"
    run.assert_cold("post-deploy-test-dev")
    patches = [c for c in world.google.calls[before:] if c.method == "PATCH"]
    assert len(patches) == 1, [c.path for c in world.google.calls[before:]]
    assert (
        patches[0].path == f"/v2/projects/{project}/locations/us-central1/services/flightpipe-api"
    )
    assert patches[0].body["traffic"] == [
        {
            "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
            "revision": "flightpipe-api-dev-00001-old",
            "percent": 100,
        }
    ]
    assert patches[0].caller == account(project, "deployer")


def _deploy_prod(world: World, variables: dict[str, str], *extra: str) -> None:
    """deploy-prod runs to its end as the prod deployer on the prod stack: preflight, `up`, the
    post-deploy test with prod's e2e key."""
    before, logged = len(world.google.calls), len(world.log())
    world.use_project("prod")
    with world.deployed_api("prod"):
        run = run_job(world.clone, "deploy-prod", {**world.variables, **variables}, *extra)
    assert run.returncode == 0, run.output[-8000:]
    assert run.succeeded("deploy-prod"), run.output[-4000:]
    run.assert_cold("deploy-prod")
    _assert_preflight_passed(run, "prod")
    deployer = account("flightpipe-prod", "deployer")
    calls = world.calls("deploy-prod", since=logged)
    _assert_state_and_identity(calls, "prod", deployer)
    verbs = [_verb(c) for c in _pulumi(calls)]
    assert verbs.index("up") < verbs.index("stack output"), verbs
    google = world.google.calls[before:]
    assert google and all(
        c.caller == deployer
        for c in google
        if not c.path.endswith(("/token", ":generateAccessToken"))
    )
    assert any(
        c.path.endswith("flightpipe-prod/secrets/flightpipe-e2e-api-key/versions/latest:access")
        for c in google
    )
    assert "1 passed" in run.output


def test_deploy_prod_runs_by_itself_in_a_protected_tags_pipeline(world: World) -> None:
    """GitLab Free, the default gate: the tag's pipeline deploys prod, no one presses play."""
    variables = world.env_variables("prod", PROD_TAG_TOKEN, wants="deploy")
    variables |= {
        "CI_PIPELINE_SOURCE": "push",
        "CI_COMMIT_TAG": PROD_TAG,
        "CI_COMMIT_REF_NAME": PROD_TAG,
        "CI_COMMIT_REF_PROTECTED": "true",
    }
    _deploy_prod(world, variables, "--unset-variable", "CI_COMMIT_BRANCH")


def test_deploy_prod_runs_when_played_on_premiums_protected_environment(world: World) -> None:
    """GitLab Premium (FLIGHTPIPE_PROD_GATE=environment, the bootstrap's deployGate too): main's
    pipeline, a manual job on the protected environment."""
    variables = world.env_variables("prod", PREMIUM_PROD_TOKEN, wants="deploy", gate="environment")
    variables |= MAIN_PIPELINE | {"FLIGHTPIPE_PROD_GATE": "environment"}
    _deploy_prod(world, variables, "--manual", "deploy-prod")


def _pypi_json_api() -> bool:
    """Whether PyPI's per-release JSON API answers here for the locked versions pip-audit asks.

    pip-audit reads `https://pypi.org/pypi/<name>/<version>/json`
    (pypa/pip-audit pip_audit/_service/pypi.py@v2.10.1, PyPIService.query), so the probe asks
    exactly that; a network or mirror that serves only the unversioned URL answers 404 there.
    """
    lock = (REPO / "requirements" / "api.lock").read_text()
    name, version = re.findall(r"^([A-Za-z0-9_.-]+)==([^ \\]+)", lock, re.M)[0]
    url = f"https://pypi.org/pypi/{name}/{version}/json"
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def _assert_only_the_audit_could_not_run(run: Run) -> None:
    """`make security` ran bandit, detect-secrets and hadolint clean; pip-audit had no PyPI API.

    Without PyPI's per-release JSON API pip-audit --strict cannot audit anything, so the job
    fails at its last step whatever the code. Everything before it
    must have passed; the audit itself runs in GitLab, where PyPI answers.
    """
    out = run.output
    assert run.returncode != 0
    assert "Potential secrets about to be committed" not in out, out[-4000:]
    assert ".venv/bin/hadolint services/Dockerfile" in out
    assert "could not be audited" in out and "audit-deps] Error" in out, out[-4000:]
    assert "security-static] Error" not in out, out[-4000:]
