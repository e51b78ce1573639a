"""GitLab ID tokens as GitLab documents them, and the bootstrap's WIF CEL evaluated over them.

Claims: https://docs.gitlab.com/ci/secrets/id_token_authentication/ ("Token payload"): every
value is a string; `environment*` only when the job names an environment. The CEL interpreter is
cel-python; STS's own evaluation cannot run here.
"""

from __future__ import annotations

from typing import Any

import celpy

from tests.infra.iam_model import bootstrap_for

PROVIDER = "gcp:iam/workloadIdentityPoolProvider:WorkloadIdentityPoolProvider"
PROJECT_ID = "12345678"  # infra/bootstrap/Pulumi.<stack>.yaml
# ID-token claims seen in GitLab's docs table and its MR !116867 sample payload (the ones this
# session could read); every claim the CEL reads, and every claim a test token carries, is one.
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
        "aud": "https://gitlab.com",
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


def cel(expression: str, assertion: dict[str, str]) -> Any:
    env = celpy.Environment()
    return env.program(env.compile(expression)).evaluate(
        {"assertion": celpy.json_to_cel(assertion)}
    )


def access(stack: str, assertion: dict[str, str]) -> str:
    """`refused` if the provider's condition rejects the token, else its `attribute.access`."""
    provider = bootstrap_for(stack).one(PROVIDER)
    if not bool(cel(provider.inputs["attributeCondition"], assertion)):
        return "refused"
    return str(cel(provider.inputs["attributeMapping"]["attribute.access"], assertion))
