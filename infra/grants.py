"""Who may do what: the roles the main program grants, and the deployer's roles that follow.

One fact, two programs. The main program (`infra/__main__.py`) grants runtime accounts and
Google's service agents the roles below; the bootstrap program (`infra/bootstrap/`) gives the
deployer the roles it needs to declare the main program's resources, and limits its one
project-level IAM power, `roles/resourcemanager.projectIamAdmin`, by an IAM condition to exactly
`PROJECT_GRANTED_ROLES`. `tests/infra/test_iam_simulation.py` fails when the program grants a role
this module does not list (or no longer grants one it lists).

The condition uses the `iam.googleapis.com/modifiedGrantsByRole` API attribute as Google documents
it in "Set limits on granting roles" (https://cloud.google.com/iam/docs/setting-limits-on-granting-roles):
`api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', []).hasOnly([...])` holds when every
role whose grants a `setIamPolicy` call adds or removes is in the list. The same page warns that
the holder must have no other, unconditioned way to set the project's policy: no role in
`DEPLOYER_PROJECT_ROLES` contains `resourcemanager.projects.setIamPolicy` (a test checks it against
Google's predefined roles in tests/infra/data/gcp-iam-roles.json), and neither does the
deployer's custom role.

No resource admin role either: each carries its resource type's setIamPolicy, a way to grant any
role that `modifiedGrantsByRole` (a limit on the project's policy only) never sees. The deployer
gets a custom role (`DEPLOYER_CUSTOM_ROLE_PERMISSIONS`) instead, and the main program grants on
datasets and secrets at project level with a resource condition. What is left, on purpose and
listed by the simulation: `RESOURCE_SET_IAM_EXCEPTIONS` and `DATASET_ACL_PERMISSIONS`.
"""

from __future__ import annotations

from typing import Final

# Where IAM Conditions can narrow a project-level grant to one resource. Google's "Resource
# attributes for IAM Conditions" (https://cloud.google.com/iam/docs/conditions-resource-attributes,
# "Resource service values"; read through the search tool on 2026-12-01) lists
# bigquery.googleapis.com and secretmanager.googleapis.com, and says "Other services and resource
# types do not recognize resource attributes". It lists pubsublite.googleapis.com but not
# pubsub.googleapis.com, and neither run.googleapis.com nor artifactregistry.googleapis.com in the
# versions of the page the search tool holds. So BigQuery datasets and Secret Manager secrets are
# granted at project level with a resource condition (below); topics, subscriptions and the Cloud
# Run service keep resource-level grants, whose setIamPolicy the deployer must keep (see
# RESOURCE_SET_IAM_EXCEPTIONS). Resource-name formats (same page, "Resource name format"):
# BigQuery `projects/PROJECT_ID/datasets/DATASET_ID[/tables/TABLE_ID]`, Secret Manager
# `projects/PROJECT_NUMBER/secrets/SECRET_ID[/versions/VERSION]` (not re-read in full here: the
# page's table was cut in the excerpts the search tool returns).
CONDITION_SERVICES: Final[tuple[str, ...]] = (
    "bigquery.googleapis.com",
    "secretmanager.googleapis.com",
)

# Project-level grants of the main program (components/identity.py, messaging.py, runtime.py).
# Unconditioned: the API's BigQuery jobs, both services' Prometheus sidecar and Cloud Trace spans
# (nothing narrower exists for these). Conditioned on one resource (`resource_condition`): the
# dataset roles and the API key secret's accessor. Every one goes through the deployer's one
# conditioned projectIamAdmin binding, whose `modifiedGrantsByRole` list is exactly this tuple.
PROJECT_GRANTED_ROLES: Final[tuple[str, ...]] = (
    "roles/bigquery.dataEditor",
    "roles/bigquery.dataViewer",
    "roles/bigquery.jobUser",
    "roles/cloudtrace.agent",
    "roles/monitoring.metricWriter",
    "roles/secretmanager.secretAccessor",
)

# Resource-level grants of the main program that remain: on a topic, a subscription or the Cloud
# Run API service, whose services IAM Conditions' resource attributes do not cover (above). The
# deployer sets these through each resource's own setIamPolicy: that is the one power left to it
# of granting a role outside PROJECT_GRANTED_ROLES (any role, to any member, on any topic,
# subscription or Cloud Run service of the project). tests/infra/test_iam_simulation.py lists it
# per identity and fails if any other setIamPolicy appears.
RESOURCE_GRANTED_ROLES: Final[tuple[str, ...]] = (
    "roles/pubsub.publisher",
    "roles/pubsub.subscriber",
    "roles/run.invoker",
)
RESOURCE_SET_IAM_EXCEPTIONS: Final[tuple[str, ...]] = (
    "pubsub.subscriptions.setIamPolicy",
    "pubsub.topics.setIamPolicy",
    "run.services.setIamPolicy",
)
# A second, non-IAM way to share data the deployer keeps: BigQuery datasets carry their own
# access list (`access` entries: role + user/group/domain/special group), which
# `datasets.update`/`patch` rewrites and which bigquery.datasets.update authorizes. The deployer
# needs that permission to manage the dataset at all, so it can still give a dataset's
# READER/WRITER/OWNER access to any principal; BigQuery also makes a dataset's creator its OWNER.
# From BigQuery's dataset API and access-control docs as remembered, not re-read here: treat it as
# a remaining power (reported per identity by the simulation) until checked against a project.
DATASET_ACL_PERMISSIONS: Final[tuple[str, ...]] = ("bigquery.datasets.update",)

# The deployer's custom role, in place of pubsub.admin, run.admin, secretmanager.admin,
# bigquery.dataOwner and artifactregistry.admin, each of which holds its resource type's
# setIamPolicy. These are the lifecycle permissions of the resource types the main program
# declares (and of the image push, the rollback and the post-deploy test's key read), taken from
# those roles; no setIamPolicy but RESOURCE_SET_IAM_EXCEPTIONS, no tag bindings (a tag could
# satisfy a tag-conditioned grant elsewhere), no column/row policies, no SSH into instances.
# A test checks every entry against those predefined roles (tests/infra/data/gcp-iam-roles.json)
# and that the role covers every deployer call of the IAM table for these services.
DEPLOYER_CUSTOM_ROLE_ID: Final = "flightpipeDeployer"
DEPLOYER_REPLACED_ROLES: Final[tuple[str, ...]] = (
    "roles/artifactregistry.admin",
    "roles/bigquery.dataOwner",
    "roles/pubsub.admin",
    "roles/run.admin",
    "roles/secretmanager.admin",
)
DEPLOYER_CUSTOM_ROLE_PERMISSIONS: Final[tuple[str, ...]] = (
    # Artifact Registry: the repository, and `docker push` of the two images.
    "artifactregistry.dockerimages.get",
    "artifactregistry.dockerimages.list",
    "artifactregistry.locations.get",
    "artifactregistry.locations.list",
    "artifactregistry.repositories.create",
    "artifactregistry.repositories.delete",
    "artifactregistry.repositories.downloadArtifacts",
    "artifactregistry.repositories.get",
    "artifactregistry.repositories.getIamPolicy",
    "artifactregistry.repositories.list",
    "artifactregistry.repositories.update",
    "artifactregistry.repositories.uploadArtifacts",
    "artifactregistry.tags.create",
    "artifactregistry.tags.get",
    "artifactregistry.tags.list",
    "artifactregistry.tags.update",
    "artifactregistry.versions.get",
    "artifactregistry.versions.list",
    # BigQuery: the dataset, its tables and view.
    "bigquery.datasets.create",
    "bigquery.datasets.delete",
    "bigquery.datasets.get",
    "bigquery.datasets.getIamPolicy",
    "bigquery.datasets.update",
    "bigquery.tables.create",
    "bigquery.tables.delete",
    "bigquery.tables.get",
    "bigquery.tables.getIamPolicy",
    "bigquery.tables.list",
    "bigquery.tables.update",
    # Pub/Sub: topics and subscriptions, and the policies that stay on them (see above).
    "pubsub.subscriptions.create",
    "pubsub.subscriptions.delete",
    "pubsub.subscriptions.get",
    "pubsub.subscriptions.getIamPolicy",
    "pubsub.subscriptions.list",
    "pubsub.subscriptions.setIamPolicy",
    "pubsub.subscriptions.update",
    "pubsub.topics.attachSubscription",
    "pubsub.topics.create",
    "pubsub.topics.delete",
    "pubsub.topics.detachSubscription",
    "pubsub.topics.get",
    "pubsub.topics.getIamPolicy",
    "pubsub.topics.list",
    "pubsub.topics.publish",  # the post-deploy test publishes one event
    "pubsub.topics.setIamPolicy",
    "pubsub.topics.update",
    # Cloud Run: the API service (and its invoker policy, see above) and the worker pool.
    "run.locations.list",
    "run.operations.get",
    "run.operations.list",
    "run.revisions.delete",
    "run.revisions.get",
    "run.revisions.list",
    "run.routes.invoke",  # the post-deploy test GETs the IAM-protected API
    "run.services.create",
    "run.services.delete",
    "run.services.get",
    "run.services.getIamPolicy",
    "run.services.list",
    "run.services.setIamPolicy",
    "run.services.update",
    "run.workerpools.create",
    "run.workerpools.delete",
    "run.workerpools.get",
    "run.workerpools.getIamPolicy",
    "run.workerpools.list",
    "run.workerpools.update",
    # Secret Manager: the API key secrets and their versions (the post-deploy test reads one).
    "secretmanager.locations.get",
    "secretmanager.locations.list",
    "secretmanager.secrets.create",
    "secretmanager.secrets.delete",
    "secretmanager.secrets.get",
    "secretmanager.secrets.getIamPolicy",
    "secretmanager.secrets.list",
    "secretmanager.secrets.update",
    "secretmanager.versions.access",
    "secretmanager.versions.add",
    "secretmanager.versions.destroy",
    "secretmanager.versions.disable",
    "secretmanager.versions.enable",
    "secretmanager.versions.get",
    "secretmanager.versions.list",
    # What every replaced role held to find the project.
    "resourcemanager.projects.get",
)

# The deployer's unconditioned predefined project-level roles: none sets any IAM policy.
# Deliberately absent: roles/iam.serviceAccountAdmin (it sets service accounts' IAM policies, so
# the deployer could let anyone impersonate it), roles/iam.workloadIdentityPoolAdmin (it could
# loosen its own trust), an unconditioned roles/resourcemanager.projectIamAdmin (it could make
# itself owner), and the service admin roles above (replaced by the custom role).
# serviceAccountCreator/Deleter manage the runtime accounts without touching their policies.
DEPLOYER_PROJECT_ROLES: Final[tuple[str, ...]] = (
    "roles/iam.serviceAccountCreator",
    "roles/iam.serviceAccountDeleter",
    "roles/iam.serviceAccountUser",
    "roles/monitoring.editor",
    "roles/serviceusage.serviceUsageAdmin",
)

# The deployer's one conditioned project-level role.
DEPLOYER_CONDITIONED_ROLE: Final = "roles/resourcemanager.projectIamAdmin"

# The previewer (merge-request `pulumi preview`): reads only. Plain `pulumi preview` reads the
# state and calls the program's invokes (projects.get); the viewer roles let a `--refresh`
# preview read every resource type the program declares, and their IAM policies.
PREVIEWER_PROJECT_ROLES: Final[tuple[str, ...]] = (
    "roles/artifactregistry.reader",
    "roles/bigquery.metadataViewer",
    "roles/browser",
    # Read-only IAM policies of every resource type: pubsub.viewer lacks topics/subscriptions
    # getIamPolicy, which refreshing the program's TopicIAMMember/SubscriptionIAMMember needs.
    "roles/iam.securityReviewer",
    "roles/iam.serviceAccountViewer",
    "roles/monitoring.viewer",
    "roles/pubsub.viewer",
    "roles/run.viewer",
    "roles/secretmanager.viewer",
    "roles/serviceusage.serviceUsageViewer",
)


def grant_limit_condition(roles: tuple[str, ...] = PROJECT_GRANTED_ROLES) -> str:
    """The CEL expression that limits a projectIamAdmin binding to granting `roles` only."""
    for role in roles:
        if not role.startswith("roles/") or "'" in role or "\\" in role:
            raise ValueError(f"not a predefined role name: {role!r}")
    listed = ", ".join(f"'{role}'" for role in sorted(roles))
    return f"api.getAttribute('iam.googleapis.com/modifiedGrantsByRole', []).hasOnly([{listed}])"


def custom_role_name(project: str, role_id: str = DEPLOYER_CUSTOM_ROLE_ID) -> str:
    """The name a project-level custom role is granted by: `projects/<project>/roles/<id>`."""
    return f"projects/{project}/roles/{role_id}"


def resource_condition(service: str, *names: str) -> str:
    """The CEL expression that limits a project-level grant to resources `names` and children.

    Each name is a full resource name as IAM Conditions read it (see CONDITION_SERVICES); more
    than one names the same resource in the forms IAM may use (a secret by project number and by
    project id: the number form is what Google's page gives, the id form is a hedge). Children are
    the names under `name + '/'` (a dataset's tables, a secret's versions), never a sibling that
    merely starts with the same characters.
    """
    if service not in CONDITION_SERVICES:
        raise ValueError(f"IAM Conditions do not read resource names of {service}")
    if not names:
        raise ValueError("no resource name")
    for name in names:
        if not name.startswith("projects/") or "'" in name or "\\" in name:
            raise ValueError(f"not a full resource name: {name!r}")
    alternatives = " || ".join(
        f"resource.name == '{n}' || resource.name.startsWith('{n}/')" for n in names
    )
    return f"resource.service == '{service}' && ({alternatives})"
