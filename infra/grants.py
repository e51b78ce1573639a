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
gets a custom role (`DEPLOYER_CUSTOM_ROLE_PERMISSIONS`) with no setIamPolicy at all; the main
program makes every grant at project level (on datasets and secrets with a resource condition);
the dataset, whose access list is a second way to share data, and the runtime accounts, which
the deployer acts as, are the bootstrap's. So no identity CI can impersonate can grant a role
outside `PROJECT_GRANTED_ROLES` or change its own trust; the simulation
(`test_no_ci_identity_can_grant_or_widen_beyond_the_programs_list`) proves it over the bindings
both programs declare.
"""

from __future__ import annotations

from typing import Final

# Where IAM Conditions can narrow a project-level grant to one resource. Google's "Resource
# attributes for IAM Conditions" (https://cloud.google.com/iam/docs/conditions-resource-attributes,
# "Resource service values") lists bigquery.googleapis.com and secretmanager.googleapis.com, and
# says "Other services and resource types do not recognize resource attributes"; it lists
# pubsublite.googleapis.com but not pubsub.googleapis.com, run.googleapis.com or
# artifactregistry.googleapis.com. So BigQuery datasets and Secret Manager secrets are granted at
# project level with a resource condition (below); the Pub/Sub and Cloud Run roles are granted at
# project level unconditioned (PROJECT_GRANTED_ROLES says what that costs).
# Resource-name formats (same page, "Resource name format"):
# BigQuery `projects/PROJECT_ID/datasets/DATASET_ID[/tables/TABLE_ID]`, Secret Manager
# `projects/PROJECT_NUMBER/secrets/SECRET_ID[/versions/VERSION]`.
CONDITION_SERVICES: Final[tuple[str, ...]] = (
    "bigquery.googleapis.com",
    "secretmanager.googleapis.com",
)

# Project-level grants of the main program (components/identity.py, messaging.py, runtime.py,
# monitoring.py). Every grant the program makes is one of these, at project level, so every one
# goes through the deployer's one conditioned projectIamAdmin binding, whose `modifiedGrantsByRole`
# list is exactly this tuple plus the table writer role (`granted_roles`); the deployer holds no
# resource's setIamPolicy at all.
# - Conditioned on one resource (`resource_condition`): the dataset roles and the secrets'
#   accessor (BigQuery and Secret Manager read resource names, CONDITION_SERVICES).
# - Unconditioned, because nothing narrower exists: BigQuery jobs, metric writes, trace spans.
# - Unconditioned, the trade-off: Pub/Sub publisher/subscriber and Cloud Run invoker. Pub/Sub and
#   Cloud Run do not read resource attributes in IAM Conditions (above), so a resource-level
#   grant (TopicIAMMember, SubscriptionIAMMember, ServiceIamMember) would need the deployer to
#   hold that type's setIamPolicy, with which it can grant any role to anyone on it. Granted at
#   project level instead, in a project that holds only flightpipe (docs/deploying.md requires
#   it), they reach every topic, subscription and Cloud Run service of the project: the
#   subscriber may also consume the dead-letter inspection subscription and publish to the source
#   topic, the Pub/Sub agent may publish to every topic, the analyst group and the uptime
#   agent may invoke every service (there is one, the API). Each still needs the API key for
#   /v1 data. Google documents project-level grants of these roles as working: Pub/Sub's
#   "Access control" page (https://cloud.google.com/pubsub/docs/access-control: "access control
#   can be configured at the project level and at the individual resource level"), and roles
#   granted on a project apply to its resources (IAM's resource hierarchy, inherited downwards).
# Not roles/bigquery.dataEditor: the deployer may grant every role of this list to anyone,
# itself included, at project level and unconditioned (`modifiedGrantsByRole` limits roles, not
# members or conditions), and dataEditor holds bigquery.datasets.create, whose holder becomes the
# OWNER of the dataset it creates (DATASET_ACCESS_PERMISSIONS) and can then grant any role on it.
# The writers get TABLE_WRITER_ROLE_ID instead, a custom role of the bootstrap's.
PROJECT_GRANTED_ROLES: Final[tuple[str, ...]] = (
    "roles/bigquery.dataViewer",
    "roles/bigquery.jobUser",
    "roles/cloudtrace.agent",
    "roles/monitoring.metricWriter",
    "roles/pubsub.publisher",
    "roles/pubsub.subscriber",
    "roles/run.invoker",
    "roles/secretmanager.secretAccessor",
)

# The custom role the subscriber and the Pub/Sub agent (BigQuery subscription) write the events
# table with, conditioned on the dataset: read the dataset's and the table's metadata, insert
# rows (tabledata.insertAll needs bigquery.tables.updateData; the subscriber's recorded RPCs are
# in tests/infra/iam_calls.py). For Pub/Sub's BigQuery subscription this departs from Google's
# page ("Create BigQuery subscriptions",
# https://cloud.google.com/pubsub/docs/create-bigquery-subscription), which asks for
# roles/bigquery.dataEditor on the project or the table; which permissions Pub/Sub really checks
# is not published. If Pub/Sub refuses the subscription (create fails, or its
# `state` is PERMISSION_DENIED), the fix is an owner's grant of dataEditor to the agent on the
# dataset in the bootstrap, never dataEditor in this list. Every permission is one of
# roles/bigquery.dataEditor's (a test checks). The bootstrap creates it;
# the deployer can grant it (it is in the conditioned list, `granted_roles`) but cannot edit it
# (no iam.roles.* write): an admin who can edit a role it may grant can grant anything.
TABLE_WRITER_ROLE_ID: Final = "flightpipeTableWriter"
TABLE_WRITER_PERMISSIONS: Final[tuple[str, ...]] = (
    "bigquery.datasets.get",
    "bigquery.tables.get",
    "bigquery.tables.updateData",
)


def table_writer_role(project: str) -> str:
    """The table writer custom role's name in `project`."""
    return custom_role_name(project, TABLE_WRITER_ROLE_ID)


def granted_roles(project: str) -> tuple[str, ...]:
    """Every role the main program grants in `project`: the deployer's grant limit."""
    return (*PROJECT_GRANTED_ROLES, table_writer_role(project))


# The dataset is the bootstrap's, not the main program's (infra/bootstrap/__main__.py): BigQuery
# datasets carry their own access list, a second way to share data that `modifiedGrantsByRole`
# never sees.
# - `datasets.patch`/`update` rewrite it and need bigquery.datasets.update on the dataset
#   (https://cloud.google.com/bigquery/docs/reference/rest/v2/datasets/patch, "IAM Permissions");
#   newer API versions add an `updateMode` where UPDATE_ACL needs bigquery.datasets.setIamPolicy
#   (https://cloud.google.com/ruby/docs/reference/google-cloud-bigquery/latest/Google-Cloud-Bigquery-UpdateMode).
# - `datasets.insert` with no `access` makes the creator the dataset's OWNER ("If unspecified at
#   dataset creation time, BigQuery adds default dataset access for ... access.userByEmail:
#   [dataset creator email]; access.role: OWNER": the Dataset resource's `access` field,
#   https://cloud.google.com/bigquery/docs/reference/rest/v2/datasets), so
#   bigquery.datasets.create alone is a way to hold dataOwner on a new dataset and grant anything
#   there; with explicit `access` it is a way to grant READER/WRITER/OWNER of a new dataset to
#   anyone.
# So the deployer holds none of bigquery.datasets.create/update/delete/setIamPolicy: a human with
# owner rights creates the dataset once, in the bootstrap, with an explicit access list and
# `protect`, and a change to it (description, labels) goes through the bootstrap; its location
# cannot change (`protect` refuses the replacement, which would drop the data). The
# main program manages only the tables and the view in it (bigquery.tables.*, which carry no
# access list; table IAM is bigquery.tables.setIamPolicy, which the deployer does not hold).
DATASET_ACCESS_PERMISSIONS: Final[tuple[str, ...]] = (
    "bigquery.datasets.create",
    "bigquery.datasets.delete",
    "bigquery.datasets.setIamPolicy",
    "bigquery.datasets.update",
)

# The runtime accounts, created by the bootstrap too, so that the deployer can be let act as
# exactly these (roles/iam.serviceAccountUser on each account, not on the project: on the project
# it could act as every account there, including a default compute account with roles/editor,
# which holds iam.serviceAccountKeys.create). The main program refers to them by email, which
# Google derives from the id: `SA_NAME@PROJECT_ID.iam.gserviceaccount.com` ("Service accounts
# overview", https://cloud.google.com/iam/docs/service-account-overview). The subscriber's
# account exists in both ingest modes (one bootstrap per project); in `bigquery-subscription`
# mode the main program grants it nothing.
RUNTIME_ACCOUNT_IDS: Final[dict[str, str]] = {
    "api": "flightpipe-api",
    "subscriber": "flightpipe-subscriber",
}
RUNTIME_ACCOUNT_NAMES: Final[dict[str, str]] = {
    "api": "flightpipe API (Cloud Run)",
    "subscriber": "flightpipe subscriber (Cloud Run worker pool)",
}


def service_account_email(project: str, account_id: str) -> str:
    """A user-managed service account's email: `<id>@<project>.iam.gserviceaccount.com`."""
    return f"{account_id}@{project}.iam.gserviceaccount.com"


# The deployer's custom role, in place of pubsub.admin, run.admin, secretmanager.admin,
# bigquery.dataOwner and artifactregistry.admin, each of which holds its resource type's
# setIamPolicy. These are the lifecycle permissions of the resource types the main program
# declares (and of the image push and the rollback), taken from those roles. Left out on
# purpose, and checked by tests/infra/test_iam_simulation.py against the bindings both programs
# declare: any secret's payload (DEPLOYER_READ_SECRET_IDS says where), every setIamPolicy (all
# the program's grants are project-level, above), the dataset's create/update/delete
# (DATASET_ACCESS_PERMISSIONS), tag bindings (a tag could satisfy a tag-conditioned grant
# elsewhere), column/row policies, SSH into instances.
# What stays that touches identity, and why it cannot widen trust: `*.getIamPolicy` (reads, for a
# refresh); run.services/workerpools create/update and pubsub.subscriptions create/update (a
# revision's or a push subscription's identity needs iam.serviceAccounts.actAs on that account,
# which the deployer holds only on the runtime accounts, RUNTIME_ACCOUNT_IDS).
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
    # BigQuery: the tables and the view in the bootstrap's dataset (DATASET_ACCESS_PERMISSIONS
    # says why nothing of the dataset's own but reading it).
    "bigquery.datasets.get",
    "bigquery.datasets.getIamPolicy",
    "bigquery.tables.create",
    "bigquery.tables.delete",
    "bigquery.tables.get",
    "bigquery.tables.getIamPolicy",
    "bigquery.tables.list",
    "bigquery.tables.update",
    # Pub/Sub: topics and subscriptions (their policies are read by a refresh, never set).
    "pubsub.subscriptions.create",
    "pubsub.subscriptions.delete",
    "pubsub.subscriptions.get",
    "pubsub.subscriptions.getIamPolicy",
    "pubsub.subscriptions.list",
    "pubsub.subscriptions.update",
    "pubsub.topics.attachSubscription",
    "pubsub.topics.create",
    "pubsub.topics.delete",
    "pubsub.topics.detachSubscription",
    "pubsub.topics.get",
    "pubsub.topics.getIamPolicy",
    "pubsub.topics.list",
    "pubsub.topics.publish",  # the post-deploy test publishes one event
    "pubsub.topics.update",
    # Cloud Run: the API service and the worker pool (policies read, never set).
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
    "run.services.update",
    "run.workerpools.create",
    "run.workerpools.delete",
    "run.workerpools.get",
    "run.workerpools.getIamPolicy",
    "run.workerpools.list",
    "run.workerpools.update",
    # Secret Manager: the API key secrets and their versions. No versions.access: reading a
    # payload is DEPLOYER_SECRET_ROLE on DEPLOYER_READ_SECRET_IDS only (below).
    "secretmanager.locations.get",
    "secretmanager.locations.list",
    "secretmanager.secrets.create",
    "secretmanager.secrets.delete",
    "secretmanager.secrets.get",
    "secretmanager.secrets.getIamPolicy",
    "secretmanager.secrets.list",
    "secretmanager.secrets.update",
    "secretmanager.versions.add",
    "secretmanager.versions.destroy",
    "secretmanager.versions.disable",
    "secretmanager.versions.enable",
    "secretmanager.versions.get",
    "secretmanager.versions.list",
    # What every replaced role held to find the project.
    "resourcemanager.projects.get",
)

# The secrets whose payload the deployer reads, each through its own project-level
# DEPLOYER_SECRET_ROLE binding conditioned on that secret (the bootstrap's; Secret Manager reads
# resource names in IAM Conditions, CONDITION_SERVICES). Why it needs any: pulumi-gcp's
# SecretVersion reads `secret_data` back after every create, update and refresh by calling
# `versions/N:access` (terraform-provider-google
# google/services/secretmanager/resource_secret_manager_secret_version.go,
# flattenSecretManagerSecretVersionPayload), and the post-deploy test reads the plain e2e key.
# The main program creates a version of exactly these two (components/runtime.py
# API_KEYS_SECRET_ID, E2E_KEY_SECRET_ID; tests/infra/test_iam_simulation.py checks they agree);
# every other secret of the project stays unreadable to the deployer's own bindings.
DEPLOYER_READ_SECRET_IDS: Final[tuple[str, ...]] = ("flightpipe-api-keys", "flightpipe-e2e-api-key")
DEPLOYER_SECRET_ROLE: Final = "roles/secretmanager.secretAccessor"  # noqa: S105 - a role
# The deployer's read of the warehouse dataset's tables (the bootstrap's conditioned binding):
# creating the view checks that its creator can query what the view reads.
DEPLOYER_DATASET_ROLE: Final = "roles/bigquery.dataViewer"


def secret_resource_names(project: str, project_number: str, secret_id: str) -> tuple[str, ...]:
    """A secret's full names as IAM Conditions may read them.

    Google's table gives `projects/<project number>/secrets/<id>` ("Resource attributes for IAM
    Conditions", https://cloud.google.com/iam/docs/conditions-resource-attributes); the
    project-id form is accepted too, so a difference between the page and the service cannot
    lock the deploy out (the same hedge as components/grants_on.py `secret_name`)."""
    return (
        f"projects/{project_number}/secrets/{secret_id}",
        f"projects/{project}/secrets/{secret_id}",
    )


# The deployer's unconditioned predefined project-level roles: none sets any IAM policy, none
# acts as or mints tokens for any account. Deliberately absent: roles/iam.serviceAccountAdmin (it
# sets service accounts' IAM policies, so the deployer could let anyone impersonate it),
# roles/iam.workloadIdentityPoolAdmin (it could loosen its own trust), an unconditioned
# roles/resourcemanager.projectIamAdmin (it could make itself owner), the service admin roles
# above (replaced by the custom role), and serviceAccountUser/Creator/Deleter at project level:
# the runtime accounts are the bootstrap's, and the deployer may act as those two only
# (RUNTIME_ACCOUNT_IDS).
# - monitoring.editor: alert policies, dashboards, SLOs, uptime checks; no IAM permission.
# - serviceusage.serviceUsageAdmin: enables the program's APIs. Enabling an API can create that
#   API's Google-managed service agent with the role Google assigns it: a fixed role to a Google
#   identity that no one outside Google can impersonate, not a grant the deployer chooses.
DEPLOYER_PROJECT_ROLES: Final[tuple[str, ...]] = (
    "roles/monitoring.editor",
    "roles/serviceusage.serviceUsageAdmin",
)

# The deployer's roles on single service accounts (bootstrap): act as the runtime accounts (a
# Cloud Run revision runs as one; the rollback updates the API service), mint an ID token for
# itself (the post-deploy test calls the IAM-protected API).
DEPLOYER_RUNTIME_ACCOUNT_ROLE: Final = "roles/iam.serviceAccountUser"
DEPLOYER_SELF_ROLE: Final = "roles/iam.serviceAccountOpenIdTokenCreator"

# The deployer's one conditioned project-level role.
DEPLOYER_CONDITIONED_ROLE: Final = "roles/resourcemanager.projectIamAdmin"

# The previewer (merge-request `pulumi preview`): reads only. Plain `pulumi preview` reads the
# state and calls the program's invokes (projects.get); the viewer roles let a `--refresh`
# preview read every resource type the program declares, and their IAM policies.
PREVIEWER_PROJECT_ROLES: Final[tuple[str, ...]] = (
    "roles/artifactregistry.reader",
    "roles/bigquery.metadataViewer",
    # Its resourcemanager.projects.getIamPolicy refreshes every grant of the program, all of
    # which are project-level (no roles/iam.securityReviewer: it reads the topics' and
    # subscriptions' own policies, which the program does not set, and 170-odd more; no
    # roles/iam.serviceAccountViewer: the program declares no account, the bootstrap does).
    "roles/browser",
    "roles/monitoring.viewer",
    "roles/pubsub.viewer",
    "roles/run.viewer",
    "roles/secretmanager.viewer",
    "roles/serviceusage.serviceUsageViewer",
)


def grant_limit_condition(roles: tuple[str, ...]) -> str:
    """The CEL expression that limits a projectIamAdmin binding to granting `roles` only.

    A role is a predefined role (`roles/...`) or a project's custom role
    (`projects/<p>/roles/<id>`), the name it is granted by."""
    for role in roles:
        predefined = role.startswith("roles/")
        custom = role.startswith("projects/") and "/roles/" in role
        if not (predefined or custom) or "'" in role or "\\" in role:
            raise ValueError(f"not a role name: {role!r}")
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
