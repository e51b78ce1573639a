"""A project-level grant limited by an IAM condition to one resource (and what lies under it).

Why not the resource's own IAM member (DatasetIamMember, SecretIamMember): setting a dataset's
or a secret's policy needs that type's setIamPolicy, which lets its holder grant *any* role there.
A project-level grant goes through the deployer's one conditioned projectIamAdmin binding, whose
`modifiedGrantsByRole` condition limits it to the roles in infra/grants.py; the resource
condition (grants.resource_condition, with the services that support it and Google's source)
keeps the grantee's access to the one resource the old member granted.
"""

from __future__ import annotations

import grants
import pulumi
import pulumi_gcp as gcp


def project_role(
    name: str,
    project: pulumi.Input[str],
    role: str,
    member: pulumi.Input[str],
    opts: pulumi.ResourceOptions | None = None,
) -> gcp.projects.IAMMember:
    """An unconditioned project-level grant, for a resource IAM Conditions cannot name
    (infra/grants.py PROJECT_GRANTED_ROLES says which roles and why)."""
    return gcp.projects.IAMMember(name, project=project, role=role, member=member, opts=opts)


def project_grant_on(
    name: str,
    *,
    project: pulumi.Input[str],
    role: str,
    member: pulumi.Input[str],
    service: str,
    resource_name: pulumi.Input[str] | pulumi.Input[list[str]],
    opts: pulumi.ResourceOptions | None = None,
) -> gcp.projects.IAMMember:
    """Grant `role` to `member` at project level, for `resource_name` and its children only.

    `resource_name` may be a list: the forms of one resource's name (see `secret_name`)."""
    names = pulumi.Output.from_input(resource_name).apply(
        lambda n: [n] if isinstance(n, str) else list(n)
    )
    full = names.apply(lambda n: n[0])
    return gcp.projects.IAMMember(
        name,
        project=project,
        role=role,
        member=member,
        condition={
            # IAM wants a title per conditioned binding; the resource's last name segment.
            "title": full.apply(lambda n: f"only-{n.rsplit('/', 1)[-1]}"[:100]),
            "description": full.apply(lambda n: f"{role} on {n} and what lies under it"),
            "expression": names.apply(lambda n: grants.resource_condition(service, *n)),
        },
        opts=opts,
    )


def dataset_grant(
    name: str,
    role: str,
    member: pulumi.Input[str],
    dataset: tuple[str, pulumi.Input[str]],
    opts: pulumi.ResourceOptions | None = None,
) -> gcp.projects.IAMMember:
    """`project_grant_on` a BigQuery dataset, given as (project, dataset id), and its tables."""
    project, dataset_id = dataset
    return project_grant_on(
        name,
        project=project,
        role=role,
        member=member,
        service="bigquery.googleapis.com",
        resource_name=dataset_name(project, dataset_id),
        opts=opts,
    )


def dataset_name(project: pulumi.Input[str], dataset_id: pulumi.Input[str]) -> pulumi.Output[str]:
    """A BigQuery dataset's name as IAM Conditions read it: projects/<project id>/datasets/<id>."""
    return pulumi.Output.concat("projects/", project, "/datasets/", dataset_id)


def secret_name(
    project: pulumi.Input[str], project_number: pulumi.Input[str], secret_id: pulumi.Input[str]
) -> pulumi.Output[list[str]]:
    """A secret's name as IAM Conditions read it: `projects/<project number>/secrets/<id>` in
    Google's resource-name table; the `projects/<project id>/...` form is accepted too, so a
    difference between the page and the service cannot lock the API out of its key."""
    short = pulumi.Output.from_input(secret_id).apply(lambda s: s.rsplit("/", 1)[-1])
    return pulumi.Output.all(project_number, project, short).apply(
        lambda v: [f"projects/{v[0]}/secrets/{v[2]}", f"projects/{v[1]}/secrets/{v[2]}"]
    )
