"""Which GitLab job becomes which Google identity: the bootstrap's WIF CEL, evaluated.

The provider's attribute condition and mapping (infra/bootstrap/trust.py, as the bootstrap
program declares them under mocks) are evaluated with a CEL interpreter (cel-python) over ID
token payloads shaped as GitLab documents them (https://docs.gitlab.com/ci/secrets/id_token_authentication/,
"Token payload": claims are strings, `environment*` only when the job names an environment).
STS's own evaluation cannot run here; this proves the expressions say what we mean.
"""

from __future__ import annotations

import re
import sys

import pulumi
import pytest

from tests.infra.gitlab_tokens import (
    DOCUMENTED_CLAIMS,
    PROJECT_ID,
    PROVIDER,
    PROVIDER_AUDIENCE,
    access,
    cel,
    on_free,
    policy_access,
    tag_token,
    token,
)
from tests.infra.iam_model import BOOTSTRAP, bootstrap_for
from tests.infra.program import STACKS, run_program

if str(BOOTSTRAP) not in sys.path:
    sys.path.insert(0, str(BOOTSTRAP))
from trust import TrustPolicy

MR = {
    "pipeline_source": "merge_request_event",
    "ref": "feature/x",
    "ref_path": "refs/heads/feature/x",
    "ref_protected": "false",
}
DEV_CASES = {
    "deploy-dev job on protected main": (
        token(environment="dev", environment_protected="false"),
        "deploy",
    ),
    "post-deploy-test-dev on main": (
        token(environment="dev", environment_protected="false"),
        "deploy",
    ),
    "main pipeline started from the web UI": (token(pipeline_source="web"), "refused"),
    "main pipeline started by a trigger token": (token(pipeline_source="trigger"), "refused"),
    "main pipeline started through the API": (token(pipeline_source="api"), "refused"),
    "scheduled main pipeline": (token(pipeline_source="schedule"), "refused"),
    "merge-request preview job": (
        token(**MR, environment="dev", environment_protected="false"),
        "preview",
    ),
    "merge-request pipeline whose source branch is main": (
        token(pipeline_source="merge_request_event"),
        "preview",
    ),
    "fork merge request (fork's project_id)": (token(**MR, project_id="87654321"), "refused"),
    "another project with the same path": (token(project_id="11111111"), "refused"),
    "push to an unprotected branch": (token(ref="feature/x", ref_protected="false"), "refused"),
    "another protected branch": (token(ref="release"), "refused"),
    "protected tag named main": (token(ref_type="tag"), "refused"),
    "main while unprotected": (token(ref_protected="false"), "refused"),
}
# prod's committed bootstrap (deployEnvironment prod, no deployGate): the `tag` gate, which works
# on every GitLab tier. Every token is as GitLab Free issues it unless it says Premium.
PROD_PREMIUM = {"environment": "prod", "environment_protected": "true"}
PROD_CASES = {
    "deploy-prod in a protected v-tag pipeline (Free)": (
        on_free(tag_token(environment="prod")),
        "deploy",
    ),
    "deploy-prod in a protected v-tag pipeline (Premium)": (
        tag_token(**PROD_PREMIUM),
        "deploy",
    ),
    "same tag pipeline started from the web UI": (
        on_free(tag_token(environment="prod", pipeline_source="web")),
        "refused",
    ),
    "unprotected v-tag": (
        on_free(tag_token(environment="prod", ref_protected="false")),
        "refused",
    ),
    "protected tag without the prefix": (
        on_free(tag_token("release-1", environment="prod")),
        "refused",
    ),
    "protected tag, job without an environment": (on_free(tag_token()), "refused"),
    "protected tag, job on dev": (on_free(tag_token(environment="dev")), "refused"),
    "protected branch named like a tag": (
        on_free(token(ref="v1.2.3", environment="prod")),
        "refused",
    ),
    "main job on prod (Free: never protected)": (
        on_free(token(environment="prod")),
        "refused",
    ),
    "main job on the protected prod environment: this stack deploys from tags": (
        token(**PROD_PREMIUM),
        "refused",
    ),
    "prod from a merge-request pipeline": (token(**MR, **PROD_PREMIUM), "refused"),
    "merge-request preview job (no previews in prod)": (token(**MR, environment="dev"), "refused"),
    "another project's protected tag": (
        on_free(tag_token(project_id="11111111", environment="prod")),
        "refused",
    ),
}
# GitLab Premium with `deployGate: environment`: main's jobs on the protected `prod` environment.
PREMIUM = TrustPolicy(PROJECT_ID, deploy_gate="environment", deploy_environment="prod")
PREMIUM_CASES = {
    "deploy-prod job on the protected prod environment": (token(**PROD_PREMIUM), "deploy"),
    "the same job on GitLab Free (environment_protected is always false)": (
        on_free(token(environment="prod")),
        "refused",
    ),
    "main job without an environment": (token(), "refused"),
    "main job on dev": (token(environment="dev", environment_protected="true"), "refused"),
    "prod environment left unprotected": (
        token(environment="prod", environment_protected="false"),
        "refused",
    ),
    "prod from a merge-request pipeline": (token(**MR, **PROD_PREMIUM), "refused"),
    "prod from another protected branch": (token(ref="release", **PROD_PREMIUM), "refused"),
    "prod from a protected tag": (tag_token(**PROD_PREMIUM), "refused"),
    "another project": (token(project_id="11111111", **PROD_PREMIUM), "refused"),
}


@pytest.mark.parametrize("case", DEV_CASES)
def test_dev_trust_maps_each_pipeline_to_the_right_identity(case: str) -> None:
    assertion, expected = DEV_CASES[case]
    assert access("dev", assertion) == expected


@pytest.mark.parametrize("case", PROD_CASES)
def test_prod_trust_maps_each_pipeline_to_the_right_identity(case: str) -> None:
    assertion, expected = PROD_CASES[case]
    assert access("prod", assertion) == expected


@pytest.mark.parametrize("stack", STACKS)
def test_every_claim_the_cel_reads_is_a_documented_gitlab_claim(stack: str) -> None:
    provider = bootstrap_for(stack).one(PROVIDER)
    text = provider.inputs["attributeCondition"] + " ".join(
        provider.inputs["attributeMapping"].values()
    )
    used = set(re.findall(r"assertion\.([a-z_]+)", text))
    assert used and used <= DOCUMENTED_CLAIMS, used - DOCUMENTED_CLAIMS
    assert "project_path" not in used  # mutable: trust is keyed on project_id


@pytest.mark.parametrize("case", PREMIUM_CASES)
def test_premium_environment_gate_maps_each_pipeline_to_the_right_identity(case: str) -> None:
    assertion, expected = PREMIUM_CASES[case]
    mapping = PREMIUM.attribute_mapping
    assert policy_access(PREMIUM.attribute_condition, mapping, assertion) == expected


def test_free_tokens_never_carry_a_protected_environment() -> None:
    """The fixture follows GitLab Free: whatever the job, `environment_protected` is "false"."""
    issued = on_free(token(environment="prod", environment_protected="true"))
    assert issued["environment_protected"] == "false"
    assert "environment_protected" not in on_free(token())


def test_test_tokens_carry_only_documented_claims() -> None:
    for assertion, _ in (*DEV_CASES.values(), *PROD_CASES.values(), *PREMIUM_CASES.values()):
        assert set(assertion) <= DOCUMENTED_CLAIMS


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"deployGate": "protected"}, "deployGate must be one of branch, tag, environment"),
        (
            {"deployGate": "environment", "deployEnvironment": None},
            "deployGate 'environment' needs deployEnvironment",
        ),
        ({"deployGate": "branch", "deployEnvironment": "prod"}, "deployEnvironment is checked"),
        ({"deployTagPrefix": "v'||true"}, "unexpected character in deployTagPrefix"),
        ({"gitlabProjectId": "latam/flightpipe"}, "numeric project id"),
        ({"gitlabProjectId": None}, "gitlabProjectId is not set"),
        ({"mergeRequestPreviews": "yes"}, "mergeRequestPreviews must be true or false"),
    ],
)
def test_bad_trust_config_is_refused_with_a_one_line_reason(
    config: dict[str, str | None], message: str
) -> None:
    values = {"gitlabProjectId": PROJECT_ID, "deployEnvironment": "prod", **config}
    with pytest.raises(ValueError, match=re.escape(message)) as raised:
        TrustPolicy.from_config(values.get)
    assert "\n" not in str(raised.value)


def test_the_bootstrap_stops_on_bad_trust_config_without_a_traceback() -> None:
    """pulumi.RunError: Pulumi prints its message alone (pulumi sdk/python/lib/pulumi/errors.py)."""
    config = {
        "gcp:project": "flightpipe-prod",
        "flightpipe-bootstrap:gitlabProjectId": PROJECT_ID,
        "flightpipe-bootstrap:deployGate": "protected",
    }
    with pytest.raises(pulumi.RunError, match=r"^flightpipe-bootstrap config: deployGate must be"):
        run_program(BOOTSTRAP / "__main__.py", "flightpipe-bootstrap", "prod", config)


def test_gate_defaults_follow_the_environment() -> None:
    """No deployGate: `tag` where an environment is named (any tier), else `branch`."""
    assert TrustPolicy.from_config({"gitlabProjectId": PROJECT_ID}.get).deploy_gate == "branch"
    prod = {"gitlabProjectId": PROJECT_ID, "deployEnvironment": "prod", "deployGate": ""}
    assert TrustPolicy.from_config(prod.get).deploy_gate == "tag"


@pytest.mark.parametrize("stack", STACKS)
def test_mapping_fits_googles_limits(stack: str) -> None:
    mapping = bootstrap_for(stack).one(PROVIDER).inputs["attributeMapping"]
    assert all(len(expression) <= 2048 for expression in mapping.values())
    assert all(re.fullmatch(r"attribute\.[a-z0-9_]+|google\.subject", key) for key in mapping)


@pytest.mark.parametrize("stack", STACKS)
def test_subject_is_short_enough_for_google(stack: str) -> None:
    provider = bootstrap_for(stack).one(PROVIDER)
    long_branch = token(ref="feature/" + "x" * 200, job_id="98765432109")
    subject = str(cel(provider.inputs["attributeMapping"]["google.subject"], long_branch))
    assert subject == f"gitlab:{PROJECT_ID}:job:98765432109"
    assert len(subject.encode()) <= 127  # Google's limit on google.subject


@pytest.mark.parametrize("stack", STACKS)
def test_provider_accepts_only_its_own_resource_name_as_audience(stack: str) -> None:
    """The issuer URL is every GitLab relying party's audience; the provider's name is its own."""
    boot = bootstrap_for(stack)
    oidc = boot.one(PROVIDER).inputs["oidc"]
    assert oidc == {"issuerUri": "https://gitlab.com"}  # no allowedAudiences: STS's default
    assert boot.exports["wif_audience"] == PROVIDER_AUDIENCE
    job = token(environment="dev") if stack == "dev" else on_free(tag_token(environment="prod"))
    assert access(stack, job) == "deploy"
    https = PROVIDER_AUDIENCE.replace("//", "https://", 1)
    assert access(stack, {**job, "aud": https}) == "deploy"  # "with or without the HTTPS prefix"
    for aud in ("https://gitlab.com", "https://vault.example.com", PROVIDER_AUDIENCE + "-other"):
        assert access(stack, {**job, "aud": aud}) == "refused", aud


@pytest.mark.parametrize("stack", STACKS)
def test_each_ci_account_trusts_exactly_its_access_level(stack: str) -> None:
    boot = bootstrap_for(stack)
    pool = boot.one("gcp:iam/workloadIdentityPool:WorkloadIdentityPool").outputs["name"]
    wif = {
        r.inputs["serviceAccountId"].rsplit("/", 1)[-1]: r.inputs["member"]
        for r in boot.of_type("gcp:serviceaccount/iAMMember:IAMMember")
        if r.inputs["role"] == "roles/iam.workloadIdentityUser"
    }
    expected = {
        boot.exports[
            "deployer_service_account"
        ]: f"principalSet://iam.googleapis.com/{pool}/attribute.access/deploy"
    }
    if boot.exports.get("previewer_service_account"):
        expected[boot.exports["previewer_service_account"]] = (
            f"principalSet://iam.googleapis.com/{pool}/attribute.access/preview"
        )
    assert wif == expected
    assert (stack == "dev") == bool(boot.exports.get("previewer_service_account"))


@pytest.mark.parametrize("stack", STACKS)
def test_state_bucket_is_versioned_private_and_kept(stack: str) -> None:
    bucket = bootstrap_for(stack).one("gcp:storage/bucket:Bucket").inputs
    assert bucket["versioning"] == {"enabled": True}
    assert bucket["uniformBucketLevelAccess"] is True
    assert bucket["publicAccessPrevention"] == "enforced"
    assert bucket["forceDestroy"] is False


@pytest.mark.parametrize("stack", STACKS)
def test_secrets_provider_names_the_bootstrap_key_in_pulumis_form(stack: str) -> None:
    boot = bootstrap_for(stack)
    key = boot.one("gcp:kms/cryptoKey:CryptoKey").inputs
    assert key["purpose"] == "ENCRYPT_DECRYPT"
    assert boot.exports["secrets_provider"] == (
        f"gcpkms://projects/flightpipe-{stack}/locations/us-central1/keyRings/flightpipe-pulumi/cryptoKeys/stack-secrets"
    )
