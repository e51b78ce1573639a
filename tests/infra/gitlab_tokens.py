"""GitLab ID tokens as GitLab documents them, and the bootstrap's WIF CEL evaluated over them.

Claims: https://docs.gitlab.com/ci/secrets/id_token_authentication/ ("Token payload"): every
value is a string; `environment*` only when the job names an environment. On GitLab Free
`environment_protected` is always `"false"` (gitlabhq lib/gitlab/ci/jwt.rb
`environment_protected?`: "false # Overridden in EE"), which `on_free` enforces. The CEL
interpreter is cel-python; STS's own evaluation cannot run here.
"""

from __future__ import annotations

from typing import Any

import celpy
from celpy.adapter import json_to_cel

from tests.infra.iam_model import GITLAB_PROJECT_ID, bootstrap_for
from tests.infra.program import PROJECT_NUMBER

PROVIDER = "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider"
PROJECT_ID = GITLAB_PROJECT_ID
# The provider's full resource name under the mocks (tests/infra/program.py), as an audience.
PROVIDER_AUDIENCE = (
    f"//iam.googleapis.com/projects/{PROJECT_NUMBER}/locations/global/"
    "workloadIdentityPools/gitlab/providers/gitlab-oidc"
)
# ID-token claims in GitLab's docs table (https://docs.gitlab.com/ci/secrets/id_token_authentication/,
# "Token payload") and its MR !116867 sample payload; every claim the CEL reads, and every claim a
# test token carries, is one.
DOCUMENTED_CLAIMS = {
    "namespace_id",
    "namespace_path",
    "project_id",
    "project_path",
    "user_id",
    "user_login",
    "user_email",
    "pipeline_id",
    "pipeline_source",
    "job_id",
    "ref",
    "ref_type",
    "ref_path",
    "ref_protected",
    "environment",
    "environment_protected",
    "deployment_tier",
    "runner_id",
    "runner_environment",
    "sha",
    "ci_config_ref_uri",
    "ci_config_sha",
    "sub",
    "iss",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
}


def token(**claims: str) -> dict[str, str]:
    """A GitLab ID token payload of a push pipeline on protected `main`, with overrides."""
    base = {
        "iss": "https://gitlab.com",
        "aud": PROVIDER_AUDIENCE,
        "sub": "project_path:latam/flightpipe:ref_type:branch:ref:main",
        "namespace_id": "99",
        "namespace_path": "latam",
        "project_id": PROJECT_ID,
        "project_path": "latam/flightpipe",
        "pipeline_id": "1001",
        "pipeline_source": "push",
        "job_id": "5005",
        "ref": "main",
        "ref_type": "branch",
        "ref_path": "refs/heads/main",
        "ref_protected": "true",
        "user_id": "7",
        "user_login": "dev",
    }
    base.update(claims)
    return {k: v for k, v in base.items() if v != "<absent>"}


def on_free(issued: dict[str, str]) -> dict[str, str]:
    """`issued` as GitLab Free issues it: a job naming an environment always gets
    `environment_protected: "false"` (protected environments are Premium)."""
    if "environment" in issued:
        return {**issued, "environment_protected": "false"}
    return issued


def tag_token(tag: str = "v1.2.3", **claims: str) -> dict[str, str]:
    """A push pipeline of tag `tag` (protected unless overridden)."""
    return token(
        **{
            "ref": tag,
            "ref_type": "tag",
            "ref_path": f"refs/tags/{tag}",
            "sub": f"project_path:latam/flightpipe:ref_type:tag:ref:{tag}",
            **claims,
        }
    )


def cel(expression: str, assertion: dict[str, str]) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(expression)).evaluate({"assertion": json_to_cel(assertion)})


def accepted_audiences(provider: dict[str, Any], provider_name: str) -> set[str]:
    """The `aud` values STS accepts for an OIDC provider.

    IAM v1 WorkloadIdentityPoolProvider.Oidc.allowedAudiences
    (https://cloud.google.com/iam/docs/reference/rest/v1/projects.locations.workloadIdentityPools.providers):
    "Token exchange requests are rejected if the token audience does not match one of the
    configured values ... If this list is empty, the OIDC token audience must be equal to the
    full canonical resource name of the WorkloadIdentityPoolProvider, with or without the HTTPS
    prefix" (`//iam.googleapis.com/...` or `https://iam.googleapis.com/...`)."""
    configured = provider.get("oidc", {}).get("allowedAudiences") or []
    if configured:
        return set(configured)
    return {f"//iam.googleapis.com/{provider_name}", f"https://iam.googleapis.com/{provider_name}"}


def access(stack: str, assertion: dict[str, str]) -> str:
    """`refused` if STS rejects the token (audience or the provider's condition), else its
    `attribute.access`."""
    provider = bootstrap_for(stack).one(PROVIDER)
    if assertion.get("aud") not in accepted_audiences(provider.inputs, provider.outputs["name"]):
        return "refused"
    if not bool(cel(provider.inputs["attributeCondition"], assertion)):
        return "refused"
    return str(cel(provider.inputs["attributeMapping"]["attribute.access"], assertion))


def policy_access(condition: str, mapping: dict[str, str], assertion: dict[str, str]) -> str:
    """`access` for a provider's condition and mapping given directly (a TrustPolicy's)."""
    if not bool(cel(condition, assertion)):
        return "refused"
    return str(cel(mapping["attribute.access"], assertion))
