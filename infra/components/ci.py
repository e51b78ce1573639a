"""CI identity: GitLab pipelines deploy by impersonating a deployer account, with no stored key.

GitLab issues each job an OIDC ID token; Google's Security Token Service trusts it through a
Workload Identity Federation pool and provider, and only when the provider's attribute condition
holds: the token comes from the configured project (`project_path`) and from a protected branch
(`ref_protected`, which only maintainers can push to). Merge-request pipelines on unprotected
branches therefore cannot deploy. Principals of that project may then impersonate the deployer
service account (`workloadIdentityUser`), which holds the predefined roles `pulumi up` needs.

Bootstrap: the pool, the provider and the deployer are created by this program, so the first
`pulumi up` of a project is run by a human with their own credentials; every later one by CI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import pulumi
import pulumi_gcp as gcp

# Predefined, non-primitive roles for declaring this program's resources. projectIamAdmin is
# needed for the project-level grants (jobUser, cloudtrace.agent) and is why only protected
# branches may impersonate the deployer.
DEPLOYER_ROLES: Final[tuple[str, ...]] = (
    "roles/artifactregistry.admin",
    "roles/bigquery.admin",
    "roles/iam.serviceAccountAdmin",
    "roles/iam.serviceAccountUser",
    "roles/iam.workloadIdentityPoolAdmin",
    "roles/monitoring.editor",
    "roles/pubsub.admin",
    "roles/resourcemanager.projectIamAdmin",
    "roles/run.admin",
    "roles/secretmanager.admin",
    "roles/serviceusage.serviceUsageAdmin",
)


def attribute_condition(project_path: str) -> str:
    """The CEL condition a GitLab token must satisfy to be exchanged (CEL string literal)."""
    if "'" in project_path or "\\" in project_path:
        raise ValueError(f"unexpected character in GitLab project path {project_path!r}")
    return (
        f"assertion.project_path == '{project_path}'"
        " && assertion.ref_type == 'branch'"
        " && assertion.ref_protected == 'true'"
    )


@dataclass(frozen=True)
class CiIdentityArgs:
    project: str
    gitlab_project_path: str
    issuer_uri: str
    roles: tuple[str, ...] = DEPLOYER_ROLES


class CiIdentity(pulumi.ComponentResource):
    """WIF pool + GitLab provider + the deployer service account GitLab impersonates."""

    def __init__(
        self, name: str, args: CiIdentityArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("flightpipe:infra:CiIdentity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.pool = gcp.iam.WorkloadIdentityPool(
            f"{name}-pool",
            project=args.project,
            workload_identity_pool_id="gitlab",
            display_name="GitLab CI",
            description="OIDC tokens of GitLab pipelines",
            opts=child,
        )
        self.provider = gcp.iam.WorkloadIdentityPoolProvider(
            f"{name}-provider",
            project=args.project,
            workload_identity_pool_id=self.pool.workload_identity_pool_id,
            workload_identity_pool_provider_id="gitlab-oidc",
            display_name="GitLab OIDC",
            attribute_mapping={
                "google.subject": "assertion.sub",
                "attribute.project_path": "assertion.project_path",
                "attribute.ref": "assertion.ref",
                "attribute.ref_protected": "assertion.ref_protected",
            },
            attribute_condition=attribute_condition(args.gitlab_project_path),
            # The job's `id_tokens:` must request this audience (`aud: <issuer uri>`).
            oidc={"issuer_uri": args.issuer_uri, "allowed_audiences": [args.issuer_uri]},
            opts=child,
        )
        self.deployer = gcp.serviceaccount.Account(
            f"{name}-deployer",
            project=args.project,
            account_id="flightpipe-deployer",
            display_name="flightpipe deployer (GitLab CI via Workload Identity Federation)",
            opts=child,
        )
        principals = self.pool.name.apply(
            lambda pool: (
                f"principalSet://iam.googleapis.com/{pool}"
                f"/attribute.project_path/{args.gitlab_project_path}"
            )
        )
        self.impersonation = gcp.serviceaccount.IAMMember(
            f"{name}-deployer-wif",
            service_account_id=self.deployer.name,
            role="roles/iam.workloadIdentityUser",
            member=principals,
            opts=child,
        )
        self.deployer_roles = [
            gcp.projects.IAMMember(
                f"{name}-deployer-{role.removeprefix('roles/').replace('.', '-')}",
                project=args.project,
                role=role,
                member=self.deployer.member,
                opts=child,
            )
            for role in args.roles
        ]
        self.register_outputs(
            {"provider": self.provider.name, "deployer": self.deployer.email},
        )
