""".gitlab-ci.yml's identity lines agree with the bootstrap's trust policy.

For each job that logs in to Google and each rule that adds it to a pipeline, the ID token GitLab
would issue it is built from the job's own definition (its pipeline from the rule: merge request,
main or a protected tag; its `environment:`; its `id_tokens` audience with GCP_WIF_PROVIDER set to
the bootstrap's output) as the GitLab tier that rule is for issues it (tests/infra/gitlab_tokens.py:
on Free `environment_protected` is always "false"; the Premium rule's `prod` environment is
protected per docs/deploying.md), evaluated against the provider of the job's stack
(tests/infra/test_iam_trust.py), and the access level it maps to must be the account the job
asks for in GCP_SERVICE_ACCOUNT.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.gitlab_tokens import access, on_free, policy_access, tag_token, token
from tests.infra.iam_model import BOOTSTRAP, bootstrap_for

if str(BOOTSTRAP) not in sys.path:
    sys.path.insert(0, str(BOOTSTRAP))
from trust import TrustPolicy

CI_FILE = Path(__file__).resolve().parents[2] / ".gitlab-ci.yml"
CI: dict[str, Any] = yaml.safe_load(CI_FILE.read_text())
ACCOUNT_FOR = {
    "$GCP_DEPLOYER_SERVICE_ACCOUNT": "deploy",
    "$GCP_PREVIEWER_SERVICE_ACCOUNT": "preview",
}
PREMIUM_RULE = '$FLIGHTPIPE_PROD_GATE == "environment"'


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
CASES = [(n, i) for n in GCP_JOBS for i in range(len(_merged(n)["rules"]))]


def _audience(job: dict[str, Any], stack: str) -> str:
    """The job's `id_tokens` aud as GitLab expands it (GCP_WIF_PROVIDER: the bootstrap's output)."""
    aud = str(job["id_tokens"]["GITLAB_OIDC_TOKEN"]["aud"])
    return aud.replace("$GCP_WIF_PROVIDER", bootstrap_for(stack).exports["wif_provider"])


def _access(name: str, rule_index: int) -> str:
    """The access level of the token GitLab issues `name` in the pipeline its rule selects."""
    job = _merged(name)
    rule = str(job["rules"][rule_index]["if"])
    env = job["environment"]["name"]
    stack = job.get("variables", {}).get("STACK") or env
    aud = _audience(job, stack)
    if "merge_request_event" in rule:
        mr = {
            "pipeline_source": "merge_request_event",
            "ref": "feature/x",
            "ref_protected": "false",
        }
        return access(stack, on_free(token(**mr, environment=env, aud=aud)))
    if "$CI_COMMIT_TAG" in rule:
        assert '$CI_COMMIT_REF_PROTECTED == "true"' in rule, "a tag deploy needs a protected tag"
        return access(stack, on_free(tag_token(environment=env, aud=aud)))
    assert "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH" in rule, "a deploy job runs on main only"
    if PREMIUM_RULE not in rule:
        return access(stack, on_free(token(environment=env, aud=aud)))
    # GitLab Premium with the bootstrap's `deployGate: environment` (the committed stack file
    # otherwise), its protected environment: the provider built from that configuration.
    config = {k.split(":", 1)[1]: v for k, v in bootstrap_for(stack).config.items()}
    premium = TrustPolicy.from_config({**config, "deployGate": "environment"}.get)
    assert aud == bootstrap_for(stack).exports["wif_audience"]
    claims = token(environment=env, environment_protected="true", aud=aud)
    return policy_access(premium.attribute_condition, premium.attribute_mapping, claims)


def test_every_gcp_job_is_known() -> None:
    assert set(GCP_JOBS) == {"preview", "deploy-dev", "post-deploy-test-dev", "deploy-prod"}


@pytest.mark.parametrize(("name", "rule"), CASES, ids=[f"{n}-rule{i}" for n, i in CASES])
def test_each_job_asks_for_the_account_its_token_maps_to(name: str, rule: int) -> None:
    job = _merged(name)
    wanted = ACCOUNT_FOR[job["variables"]["GCP_SERVICE_ACCOUNT"]]
    assert _access(name, rule) == wanted


def test_prod_deploys_on_gitlab_free_from_a_protected_tag() -> None:
    """The committed prod bootstrap and the pipeline agree on a path that Free can take."""
    job = _merged("deploy-prod")
    [tag_rule] = [i for i, r in enumerate(job["rules"]) if "$CI_COMMIT_TAG" in r["if"]]
    assert _access("deploy-prod", tag_rule) == "deploy"


@pytest.mark.parametrize("name", GCP_JOBS)
def test_each_job_requests_the_providers_only_audience(name: str) -> None:
    job = _merged(name)
    stack = job.get("variables", {}).get("STACK") or job["environment"]["name"]
    assert _audience(job, stack) == bootstrap_for(stack).exports["wif_audience"]


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
