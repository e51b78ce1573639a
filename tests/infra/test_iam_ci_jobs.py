""".gitlab-ci.yml's identity lines agree with the bootstrap's trust policy.

For each job that logs in to Google, the ID token GitLab would issue it is built from the job's
own definition (its pipeline from `rules:`, `ref` main, its `environment:`, and whether that
environment is protected per docs/deploying.md: `prod` is, `dev` is not), evaluated against the
provider's CEL of the job's stack (tests/infra/test_iam_trust.py), and the access level it maps
to must be the account the job asks for in GCP_SERVICE_ACCOUNT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.gitlab_tokens import access, token
from tests.infra.iam_model import bootstrap_for

CI_FILE = Path(__file__).resolve().parents[2] / ".gitlab-ci.yml"
CI: dict[str, Any] = yaml.safe_load(CI_FILE.read_text())
ACCOUNT_FOR = {
    "$GCP_DEPLOYER_SERVICE_ACCOUNT": "deploy",
    "$GCP_PREVIEWER_SERVICE_ACCOUNT": "preview",
}
PROTECTED_ENVIRONMENTS = {"prod"}  # docs/deploying.md: Settings > CI/CD > Protected environments


def _merged(name: str) -> dict[str, Any]:
    job = dict(CI[name])
    parent = job.get("extends")
    if parent:
        base = _merged(parent)
        job = {
            **base,
            **job,
            "variables": {**base.get("variables", {}), **job.get("variables", {})},
        }
    return job


GCP_JOBS = sorted(
    n for n in CI if not n.startswith(".") and isinstance(CI[n], dict)
    and "source scripts/gcp_wif_login.sh" in _merged(n).get("before_script", [])
)  # fmt: skip


def _token_for(job: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """(stack, the ID token payload GitLab gives this job)."""
    rules = " ".join(str(r.get("if", "")) for r in job.get("rules", []))
    mr = "merge_request_event" in rules
    env = job["environment"]["name"]
    claims = {
        "environment": env,
        "environment_protected": str(env in PROTECTED_ENVIRONMENTS).lower(),
    }
    if mr:
        claims |= {
            "pipeline_source": "merge_request_event",
            "ref": "feature/x",
            "ref_protected": "false",
        }
    else:
        assert "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH" in rules, "a deploy job runs on main only"
    stack = job.get("variables", {}).get("STACK") or env
    return stack, token(**claims)


def test_every_gcp_job_is_known() -> None:
    assert set(GCP_JOBS) == {"preview", "deploy-dev", "post-deploy-test-dev", "deploy-prod"}


@pytest.mark.parametrize("name", GCP_JOBS)
def test_each_job_asks_for_the_account_its_token_maps_to(name: str) -> None:
    job = _merged(name)
    wanted = ACCOUNT_FOR[job["variables"]["GCP_SERVICE_ACCOUNT"]]
    stack, claims = _token_for(job)
    assert access(stack, claims) == wanted


@pytest.mark.parametrize("name", GCP_JOBS)
def test_each_job_requests_the_providers_only_audience(name: str) -> None:
    assert _merged(name)["id_tokens"] == {"GITLAB_OIDC_TOKEN": {"aud": "$CI_SERVER_URL"}}


def test_pulumi_jobs_log_in_to_the_bootstrap_state_and_key_before_selecting_the_stack() -> None:
    steps = CI[".pulumi"]["before_script"]
    login = steps.index("source scripts/gcp_wif_login.sh")
    backend = steps.index('pulumi login "$PULUMI_BACKEND_URL"')
    select = next(i for i, s in enumerate(steps) if s.startswith("pulumi -C infra stack select"))
    assert login < backend < select
    assert '--create --secrets-provider "$PULUMI_SECRETS_PROVIDER"' in steps[select]
    guard = next(s for s in steps if "encryptedkey" in s)
    assert steps.index(guard) < select and "exit 1" in guard
    for name in GCP_JOBS:
        job = _merged(name)
        if "STACK" in job["variables"]:
            assert job["variables"]["STACK"] == job["environment"]["name"]


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_committed_stack_files_use_the_bootstraps_key_and_deployer(stack: str) -> None:
    """Once `pulumi stack init` ran (docs/deploying.md step 3), its lines must name this key."""
    boot = bootstrap_for(stack)
    settings = yaml.safe_load((CI_FILE.parent / "infra" / f"Pulumi.{stack}.yaml").read_text())
    if "secretsprovider" in settings:
        assert settings["secretsprovider"] == boot.exports["secrets_provider"]
        assert settings.get("encryptedkey"), "a KMS secrets provider needs its encryptedkey"
    deployer = settings["config"].get("flightpipe:deployerServiceAccount")
    assert deployer == boot.exports["deployer_service_account"]
    assert settings["config"]["gcp:project"] == boot.config["gcp:project"]
