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
Google's predefined roles in tests/infra/data/gcp-iam-roles.json).
"""

from __future__ import annotations

from typing import Final

# Project-level grants of the main program (components/identity.py): the API's BigQuery jobs,
# both services' Prometheus sidecar and Cloud Trace spans. Nothing narrower exists for these.
PROJECT_GRANTED_ROLES: Final[tuple[str, ...]] = (
    "roles/bigquery.jobUser",
    "roles/cloudtrace.agent",
    "roles/monitoring.metricWriter",
)

# Resource-level grants of the main program (on a topic, subscription, dataset, secret or Cloud
# Run service). The deployer sets these through each resource's own setIamPolicy, which its
# service admin role holds for that resource type only; none can reach the project's policy,
# the workload identity pool or a service account's policy.
RESOURCE_GRANTED_ROLES: Final[tuple[str, ...]] = (
    "roles/bigquery.dataEditor",
    "roles/bigquery.dataViewer",
    "roles/pubsub.publisher",
    "roles/pubsub.subscriber",
    "roles/run.invoker",
    "roles/secretmanager.secretAccessor",
)

# The deployer's unconditioned project-level roles: one admin role per service whose resources
# the main program declares, and no IAM-admin role. Deliberately absent:
# roles/iam.serviceAccountAdmin (it sets service accounts' IAM policies, so the deployer could let
# anyone impersonate it), roles/iam.workloadIdentityPoolAdmin (it could loosen its own trust), an
# unconditioned roles/resourcemanager.projectIamAdmin (it could make itself owner).
# serviceAccountCreator/Deleter manage the runtime accounts without touching their policies.
DEPLOYER_PROJECT_ROLES: Final[tuple[str, ...]] = (
    "roles/artifactregistry.admin",
    "roles/bigquery.dataOwner",
    "roles/iam.serviceAccountCreator",
    "roles/iam.serviceAccountDeleter",
    "roles/iam.serviceAccountUser",
    "roles/monitoring.editor",
    "roles/pubsub.admin",
    "roles/run.admin",
    "roles/secretmanager.admin",
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
