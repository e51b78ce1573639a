"""Which GitLab job becomes which Google identity: the bootstrap's WIF CEL, evaluated.

The provider's attribute condition and mapping (infra/bootstrap/trust.py, as the bootstrap
program declares them under mocks) are evaluated with a CEL interpreter (cel-python) over ID
token payloads shaped as GitLab documents them (https://docs.gitlab.com/ci/secrets/id_token_authentication/,
"Token payload": claims are strings, `environment*` only when the job names an environment).
STS's own evaluation cannot run here; this proves the expressions say what we mean.
"""

from __future__ import annotations

import re

import pytest

from tests.infra.gitlab_tokens import DOCUMENTED_CLAIMS, PROJECT_ID, PROVIDER, access, cel, token
from tests.infra.iam_model import bootstrap_for
from tests.infra.program import STACKS

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
    "main pipeline started from the web UI": (token(pipeline_source="web"), "deploy"),
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
PROD_CASES = {
    "deploy-prod job on the protected prod environment": (
        token(environment="prod", environment_protected="true"),
        "deploy",
    ),
    "main job without an environment": (token(), "refused"),
    "main job on dev": (token(environment="dev", environment_protected="true"), "refused"),
    "prod environment left unprotected": (
        token(environment="prod", environment_protected="false"),
        "refused",
    ),
    "prod from a merge-request pipeline": (
        token(**MR, environment="prod", environment_protected="true"),
        "refused",
    ),
    "prod from another protected branch": (
        token(ref="release", environment="prod", environment_protected="true"),
        "refused",
    ),
    "merge-request preview job (no previews in prod)": (token(**MR, environment="dev"), "refused"),
    "another project": (
        token(project_id="11111111", environment="prod", environment_protected="true"),
        "refused",
    ),
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


def test_test_tokens_carry_only_documented_claims() -> None:
    for assertion, _ in (*DEV_CASES.values(), *PROD_CASES.values()):
        assert set(assertion) <= DOCUMENTED_CLAIMS


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
def test_provider_accepts_only_the_gitlab_issuer_as_audience(stack: str) -> None:
    oidc = bootstrap_for(stack).one(PROVIDER).inputs["oidc"]
    assert oidc == {"issuerUri": "https://gitlab.com", "allowedAudiences": ["https://gitlab.com"]}


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
