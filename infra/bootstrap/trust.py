"""Which GitLab job may become which Google identity: the WIF provider's CEL, built in one place.

Every claim read here is one GitLab documents for CI/CD ID tokens
(https://docs.gitlab.com/ci/secrets/id_token_authentication/, "Token payload"): `project_id`,
`job_id`, `ref`, `ref_type` (`branch`/`tag`), `ref_protected` (the string `true`/`false`),
`pipeline_source` (`merge_request_event` for merge-request pipelines), and, only when the job
names an environment, `environment` and `environment_protected` (string `true`/`false`).
Claims are strings, so every comparison is against a string literal.

- The provider accepts a token only from the configured `project_id` (numeric and immutable;
  `project_path` changes on rename or transfer and can then be claimed by another project), and
  only when the token maps to an access level. A fork's merge-request pipeline carries the
  fork's `project_id` (GitLab gitlab-org/gitlab#563038) and is refused.
- `attribute.access` is `deploy`, `preview` or `none`; the deployer is bound to
  `.../attribute.access/deploy`, the previewer to `.../attribute.access/preview`.
  - deploy, by the stack's gate (`DeployGate`):
    - `branch`: a push pipeline (a merge, not a merge-request, web, API, trigger or scheduled
      pipeline) of the protected deploy branch.
    - `tag` (any GitLab tier): a pipeline of a protected tag whose name starts with the prefix.
      Protected tags exist on Free and only their "Allowed to create" roles may create them and
      run their pipelines (gitlabhq doc/user/project/protected_tags.md, "Run pipelines on
      protected tags"); `ref_protected` is `Project#protected_for?(ref)`, which for a tag is
      `ProtectedTag.protected?` (gitlabhq app/models/project.rb).
    - `environment` (Premium): the `branch` rule, and a job whose environment is the configured
      one and protected. Outside EE `environment_protected` is always `false`
      (gitlabhq lib/gitlab/ci/jwt.rb `environment_protected?`, overridden only in
      ee/lib/ee/gitlab/ci/jwt.rb), and protected environments are Premium
      (doc/ci/environments/protected_environments.md): on Free this gate never opens.
    Where an environment is configured, `tag` checks its name too.
  - preview (only where enabled): a merge-request pipeline of this project.
- A claim that a token lacks (`environment` outside environment jobs) is tested with `has()`
  first, so the expression is false rather than an evaluation error.

Google's IAM v1 reference for `WorkloadIdentityPoolProvider.attributeMapping` (REST
projects.locations.workloadIdentityPools.providers): each value is a CEL expression over
`assertion` (the token's claims), at most 2048 characters; custom keys are `attribute.[a-z0-9_]`;
`google.subject` cannot exceed 127 bytes. The ternary and string concatenation used here are
standard CEL; that STS accepts them is not checkable here. GitLab's `sub`
(`project_path:<path>:ref_type:<type>:ref:<ref>`) can exceed that for long paths or branch
names, so the subject is `gitlab:<project_id>:job:<job_id>`: short, unique, and audit logs name
the job. Not checkable here: STS's own evaluation (tests/infra/test_iam_trust.py evaluates these
expressions with a CEL interpreter over documented token payloads instead).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal, get_args

DEPLOY: Final = "deploy"
PREVIEW: Final = "preview"
NONE: Final = "none"
MERGE_REQUEST_EVENT: Final = "merge_request_event"
PUSH: Final = "push"
_SAFE = re.compile(r"^[A-Za-z0-9._/-]+$")
DeployGate = Literal["branch", "tag", "environment"]
GATES: Final[tuple[str, ...]] = get_args(DeployGate)


def _literal(value: str, what: str) -> str:
    if not _SAFE.match(value):
        raise ValueError(f"unexpected character in {what} {value!r}")
    return f"'{value}'"


@dataclass(frozen=True)
class TrustPolicy:
    """Who may impersonate what, for one GCP project."""

    gitlab_project_id: str
    deploy_gate: DeployGate = "branch"
    deploy_branch: str = "main"
    deploy_tag_prefix: str = "v"
    deploy_environment: str | None = None
    merge_request_previews: bool = False

    def __post_init__(self) -> None:
        if not self.gitlab_project_id.isdigit():
            raise ValueError(
                f"gitlabProjectId must be the numeric project id, got {self.gitlab_project_id!r}"
            )
        if self.deploy_gate not in GATES:
            raise ValueError(
                f"deployGate must be one of {', '.join(GATES)}, got {self.deploy_gate!r}"
            )
        if self.deploy_gate == "environment" and not self.deploy_environment:
            raise ValueError("deployGate 'environment' needs deployEnvironment (e.g. prod)")
        if self.deploy_gate == "branch" and self.deploy_environment:
            raise ValueError(
                "deployEnvironment is checked only by deployGate 'tag' or 'environment'; "
                "set one of them, or remove deployEnvironment"
            )
        _literal(self.deploy_branch, "deployBranch")
        if self.deploy_gate == "tag":
            _literal(self.deploy_tag_prefix, "deployTagPrefix")
        if self.deploy_environment:
            _literal(self.deploy_environment, "deployEnvironment")

    @classmethod
    def from_config(cls, get: Callable[[str], str | None]) -> TrustPolicy:
        """Read the policy from the bootstrap's config keys (`get("deployGate")`, ...).

        Without `deployGate`, a stack with `deployEnvironment` uses `tag` (it works on every
        GitLab tier) and one without uses `branch`."""
        environment = get("deployEnvironment") or None
        gate = get("deployGate") or ("tag" if environment else "branch")
        previews = (get("mergeRequestPreviews") or "false").lower()
        if previews not in ("true", "false"):
            raise ValueError(f"mergeRequestPreviews must be true or false, got {previews!r}")
        project_id = get("gitlabProjectId")
        if project_id is None:
            raise ValueError("gitlabProjectId is not set (the GitLab project's numeric id)")
        return cls(
            gitlab_project_id=project_id,
            deploy_gate=gate,  # type: ignore[arg-type]  # checked in __post_init__
            deploy_branch=get("deployBranch") or "main",
            deploy_tag_prefix=get("deployTagPrefix") or "v",
            deploy_environment=environment,
            merge_request_previews=previews == "true",
        )

    @property
    def deploy_rule(self) -> str:
        """True for a job that may impersonate the deployer."""
        # Only a push (a merge into the branch, or a tag's creation) starts a deploy: a pipeline
        # started through the UI, the API, a trigger token or a schedule may carry pipeline
        # variables, which outrank the project's (https://docs.gitlab.com/ci/variables/,
        # "CI/CD variable precedence"), e.g. PULUMI_BACKEND_URL or a package index.
        not_mr = f"assertion.pipeline_source == '{PUSH}'"
        if self.deploy_gate == "tag":
            prefix = _literal(self.deploy_tag_prefix, "deployTagPrefix")
            rule = [
                "assertion.ref_type == 'tag'",
                f"assertion.ref.startsWith({prefix})",
                "assertion.ref_protected == 'true'",
                not_mr,
            ]
        else:
            rule = [
                "assertion.ref_type == 'branch'",
                f"assertion.ref == {_literal(self.deploy_branch, 'deployBranch')}",
                "assertion.ref_protected == 'true'",
                not_mr,
            ]
        if self.deploy_environment:
            env = _literal(self.deploy_environment, "deployEnvironment")
            rule.append(f"has(assertion.environment) && assertion.environment == {env}")
        if self.deploy_gate == "environment":
            rule.append(
                "has(assertion.environment_protected) && assertion.environment_protected == 'true'"
            )
        return "(" + " && ".join(rule) + ")"

    @property
    def preview_rule(self) -> str:
        """True for a job that may impersonate the previewer."""
        if not self.merge_request_previews:
            return "false"
        return f"(assertion.pipeline_source == '{MERGE_REQUEST_EVENT}')"

    @property
    def attribute_mapping(self) -> dict[str, str]:
        """The provider's attribute mapping (Google attribute -> CEL over the token)."""
        access = f"{self.deploy_rule} ? '{DEPLOY}' : ({self.preview_rule} ? '{PREVIEW}' : '{NONE}')"
        return {
            "google.subject": "'gitlab:' + assertion.project_id + ':job:' + assertion.job_id",
            "attribute.project_id": "assertion.project_id",
            "attribute.ref": "assertion.ref",
            "attribute.access": access,
        }

    @property
    def attribute_condition(self) -> str:
        """The provider's condition: this project's tokens that map to some access only."""
        project = _literal(self.gitlab_project_id, "gitlabProjectId")
        return f"assertion.project_id == {project} && ({self.deploy_rule} || {self.preview_rule})"


def principal_set(pool_name: str, access: str) -> str:
    """The WIF principal set of every token mapped to `access` in `pool_name` (projects/N/...)."""
    return f"principalSet://iam.googleapis.com/{pool_name}/attribute.access/{access}"
