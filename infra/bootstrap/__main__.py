"""flightpipe's bootstrap: what CI needs before it can run the main program, and who may do what.

Run once per GCP project by a human with owner rights (docs/deploying.md), never by CI: nothing
here is reachable by an identity CI can impersonate, so CI can never widen its own trust.

- State bucket `<project>-pulumi-state` for the main program's stacks (`pulumi login gs://...`):
  object versioning (every checkpoint recoverable), uniform bucket-level access (IAM only, no
  ACLs) and public access prevention enforced.
- KMS key `flightpipe-pulumi/stack-secrets`: the stacks' secrets provider (`gcpkms://...`), so CI
  needs no passphrase and decrypting a secret needs an IAM grant on the key.
- Workload Identity Federation pool `gitlab` and provider `gitlab-oidc` for GitLab's ID tokens
  (trust.py says which job maps to which identity).
- The deployer (what `pulumi up` and the post-deploy test run as) and, where merge-request
  previews are on, the read-only previewer. Their roles come from infra/grants.py.
- What the deployer must not be able to make or reshape, because doing so is a grant no IAM
  condition limits: the runtime service accounts (the deployer may act as these two and no other
  account) and the BigQuery dataset (its access list; creating one makes its creator OWNER).
  The main program refers to both by name (infra/grants.py says why, with Google's sources).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

import pulumi
import pulumi_gcp as gcp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # infra/: grants.py is shared

import bootstrap_config
import bootstrap_names
import grants
from bootstrap_names import KEY, KEY_RING, POOL, PROVIDER
from trust import DEPLOY, PREVIEW, principal_set

cfg = bootstrap_config.load()
project = cfg.project

apis = [
    gcp.projects.Service(
        f"api-{api.split('.')[0]}",
        project=project,
        service=api,
        disable_on_destroy=False,
    )
    for api in bootstrap_names.APIS
]
after_apis = pulumi.ResourceOptions(depends_on=apis)
# Losing the state bucket or the key loses every stack: deleting them takes a human who first
# removes `protect` on purpose.
kept = pulumi.ResourceOptions(depends_on=apis, protect=True)

state = gcp.storage.Bucket(
    "state",
    project=project,
    name=cfg.state_bucket,
    location=cfg.state_location,
    uniform_bucket_level_access=True,
    public_access_prevention="enforced",
    versioning={"enabled": True},
    # Old checkpoints are kept for recovery, but not forever.
    lifecycle_rules=[
        {
            "action": {"type": "Delete"},
            "condition": {"num_newer_versions": 50, "with_state": "ARCHIVED"},
        }
    ],
    force_destroy=False,
    labels={"app": "flightpipe", "managed-by": "pulumi", "env": cfg.env},
    opts=kept,
)
key_ring = gcp.kms.KeyRing(
    "secrets-ring", project=project, name=KEY_RING, location=cfg.kms_location, opts=kept
)
key = gcp.kms.CryptoKey(
    "secrets-key",
    name=KEY,
    key_ring=key_ring.id,
    purpose="ENCRYPT_DECRYPT",
    rotation_period="7776000s",  # 90 days; older versions still decrypt what they encrypted
    labels={"app": "flightpipe", "managed-by": "pulumi", "env": cfg.env},
    opts=kept,
)
# Pulumi's form: gcpkms://projects/<p>/locations/<l>/keyRings/<r>/cryptoKeys/<k>
# (https://www.pulumi.com/docs/iac/cli/commands/pulumi_stack_init/).
secrets_provider = pulumi.Output.concat(
    "gcpkms://projects/",
    project,
    "/locations/",
    cfg.kms_location,
    "/keyRings/",
    key_ring.name,
    "/cryptoKeys/",
    key.name,
)

pool = gcp.iam.WorkloadIdentityPool(
    "gitlab-pool",
    project=project,
    workload_identity_pool_id=POOL,
    display_name="GitLab CI",
    description="OIDC ID tokens of the flightpipe GitLab project's pipelines",
    opts=after_apis,
)
provider = gcp.iam.WorkloadIdentityPoolProvider(
    "gitlab-provider",
    project=project,
    workload_identity_pool_id=pool.workload_identity_pool_id,
    workload_identity_pool_provider_id=PROVIDER,
    display_name="GitLab OIDC",
    attribute_mapping=cfg.trust.attribute_mapping,
    attribute_condition=cfg.trust.attribute_condition,
    # No `allowed_audiences`: STS then accepts only the provider's own full resource name as
    # `aud`, which no other relying party shares (the issuer URL would be every GitLab
    # audience's default). IAM v1 WorkloadIdentityPoolProvider.Oidc.allowedAudiences: "If this
    # list is empty, the OIDC token audience must be equal to the full canonical resource name
    # of the WorkloadIdentityPoolProvider, with or without the HTTPS prefix"
    # (https://cloud.google.com/iam/docs/reference/rest/v1/projects.locations.workloadIdentityPools.providers).
    oidc={"issuer_uri": cfg.gitlab_issuer_uri},
    opts=after_apis,
)
# The `aud` jobs request (`id_tokens:`, .gitlab-ci.yml): `//iam.googleapis.com/$GCP_WIF_PROVIDER`.
wif_audience = pulumi.Output.concat("//iam.googleapis.com/", provider.name)


def ci_account(short: str, display: str, access: str) -> gcp.serviceaccount.Account:
    """A service account that tokens mapped to `access` (and only those) may impersonate."""
    account = gcp.serviceaccount.Account(
        short,
        project=project,
        account_id=bootstrap_names.ci_account_id(short),
        display_name=display,
        opts=after_apis,
    )
    gcp.serviceaccount.IAMMember(
        f"{short}-wif",
        service_account_id=account.name,
        role="roles/iam.workloadIdentityUser",
        member=pool.name.apply(lambda name: principal_set(name, access)),
    )
    return account


def project_roles(short: str, member: pulumi.Input[str], roles: tuple[str, ...]) -> None:
    for role in roles:
        gcp.projects.IAMMember(
            f"{short}-{role.removeprefix('roles/').replace('.', '-')}",
            project=project,
            role=role,
            member=member,
            opts=after_apis,
        )


def state_and_key_roles(
    member: pulumi.Input[str], on_state: tuple[str, str], on_key: tuple[str, str]
) -> None:
    """Roles on the state bucket and the secrets key, each given as (resource name, role)."""
    gcp.storage.BucketIAMMember(on_state[0], bucket=state.name, role=on_state[1], member=member)
    gcp.kms.CryptoKeyIAMMember(on_key[0], crypto_key_id=key.id, role=on_key[1], member=member)


def deployer_role_on(
    name: str,
    role: pulumi.Input[str],
    condition: tuple[str, str, pulumi.Input[str]],
    opts: pulumi.ResourceOptions = after_apis,
) -> None:
    """A project-level role of the deployer limited by an IAM condition (title, description,
    expression)."""
    title, description, expression = condition
    gcp.projects.IAMMember(
        name,
        project=project,
        role=role,
        member=deployer.member,
        condition={"title": title, "description": description, "expression": expression},
        opts=opts,
    )


def custom_role(
    name: str, role_id: str, title: str, description: str, permissions: Iterable[str]
) -> gcp.projects.IAMCustomRole:
    """A GA project custom role; only an owner (this program) may create or edit one.

    pulumi-gcp's IAMCustomRole: role_id, title, permissions, stage; its `name` is
    projects/<project>/roles/<role_id>.
    """
    return gcp.projects.IAMCustomRole(
        name,
        project=project,
        role_id=role_id,
        title=title,
        description=description,
        permissions=list(permissions),
        stage="GA",
        opts=after_apis,
    )


deployer = ci_account("deployer", "flightpipe deployer (GitLab main / prod via WIF)", DEPLOY)
project_roles("deployer", deployer.member, grants.DEPLOYER_PROJECT_ROLES)
# In place of the service admin roles (each holds its resource type's setIamPolicy, so it could
# grant any role on a topic, dataset, secret, service or repository): the lifecycle permissions
# of the program's resource types and no setIamPolicy at all: every grant of the main program is
# project-level, through the conditioned projectIamAdmin below (infra/grants.py says why).
deployer_role = custom_role(
    "deployer-role",
    grants.DEPLOYER_CUSTOM_ROLE_ID,
    "flightpipe deployer",
    "Manage flightpipe's resources; sets no IAM policy (infra/grants.py)",
    grants.DEPLOYER_CUSTOM_ROLE_PERMISSIONS,
)
gcp.projects.IAMMember(
    "deployer-custom-role",
    project=project,
    role=pulumi.Output.from_input(deployer_role.role_id).apply(
        lambda role_id: grants.custom_role_name(project, role_id)
    ),
    member=deployer.member,
    opts=after_apis,
)
# The role the main program writes the events table with (infra/grants.py says why not
# bigquery.dataEditor). The deployer may grant it but not edit it.
table_writer_role = custom_role(
    "table-writer-role",
    grants.TABLE_WRITER_ROLE_ID,
    "flightpipe table writer",
    "Insert rows into flightpipe's tables (infra/grants.py)",
    grants.TABLE_WRITER_PERMISSIONS,
)
deployer_role_on(
    "deployer-project-iam-limited",
    grants.DEPLOYER_CONDITIONED_ROLE,
    (
        "only-flightpipe-project-grants",
        "Only the project-level roles the main program grants (infra/grants.py)",
        grants.grant_limit_condition(grants.granted_roles(project)),
    ),
)
# The payloads the deployer reads (pulumi-gcp's SecretVersion reads each version back; the
# post-deploy test reads the plain e2e key), one conditioned binding per secret: its custom role
# holds no secretmanager.versions.access, so every other secret of the project stays closed to it.
# (after the APIs: the lookup is Cloud Resource Manager's projects.get; an invoke waits only for
# its own depends_on, pulumi InvokeOutputOptions)
project_number = gcp.organizations.get_project_output(
    project_id=project, opts=pulumi.InvokeOutputOptions(depends_on=list(apis))
).number


def secret_condition(secret_id: str) -> pulumi.Output[str]:
    """The IAM condition limiting a project-level grant to `secret_id` and its versions."""

    def expression(number: str) -> str:
        names = grants.secret_resource_names(project, number, secret_id)
        return grants.resource_condition("secretmanager.googleapis.com", *names)

    return project_number.apply(expression)


for secret_id in grants.DEPLOYER_READ_SECRET_IDS:
    deployer_role_on(
        f"deployer-reads-{secret_id}",
        grants.DEPLOYER_SECRET_ROLE,
        (
            f"only-{secret_id}",
            f"{grants.DEPLOYER_SECRET_ROLE} on {secret_id} and its versions",
            secret_condition(secret_id),
        ),
    )
# `pulumi login gs://...` + checkpoints, history, backups and update locks: objects only; the
# bucket's own policy and settings stay the human's.
state_and_key_roles(
    deployer.member,
    ("deployer-state", "roles/storage.objectUser"),
    ("deployer-secrets-key", "roles/cloudkms.cryptoKeyEncrypterDecrypter"),
)
# `make preflight`, which the deploy jobs run before `pulumi up` (scripts/preflight.py), reads the
# bucket's and the key's metadata and the WIF provider: read-only roles, on those resources only
# where the resource has its own policy.
state_and_key_roles(
    deployer.member,
    ("deployer-state-read", "roles/storage.bucketViewer"),
    ("deployer-key-read", "roles/cloudkms.viewer"),
)
gcp.projects.IAMMember(
    "deployer-wif-read",
    project=project,
    role="roles/iam.workloadIdentityPoolViewer",
    member=deployer.member,
    opts=after_apis,
)
# The post-deploy test calls the IAM-protected API with an ID token the deployer mints for
# itself (iamcredentials generateIdToken needs iam.serviceAccounts.getOpenIdToken on the account).
gcp.serviceaccount.IAMMember(
    "deployer-self-id-token",
    service_account_id=deployer.name,
    role=grants.DEPLOYER_SELF_ROLE,
    member=deployer.member,
)

# The runtime accounts: made here so the deployer can act as exactly these (and run the Cloud Run
# revisions and the rollback as them), with no project-wide serviceAccountUser that would let it
# act as every account of the project (infra/grants.py, RUNTIME_ACCOUNT_IDS).
runtime_accounts = {
    short: gcp.serviceaccount.Account(
        f"runtime-{short}",
        project=project,
        account_id=account_id,
        display_name=grants.RUNTIME_ACCOUNT_NAMES[short],
        opts=after_apis,
    )
    for short, account_id in grants.RUNTIME_ACCOUNT_IDS.items()
}
for short, runtime_account in runtime_accounts.items():
    gcp.serviceaccount.IAMMember(
        f"deployer-acts-as-{short}",
        service_account_id=runtime_account.name,
        role=grants.DEPLOYER_RUNTIME_ACCOUNT_ROLE,
        member=deployer.member,
    )

# The warehouse dataset, the main program's tables live in it. Here, not in the main program:
# creating a dataset, or updating its `access` list, grants access to it outside IAM's
# modifiedGrantsByRole limit (infra/grants.py, DATASET_ACCESS_PERMISSIONS, with BigQuery's
# sources), so the deployer holds neither. `accesses` is given explicitly, so BigQuery adds no
# default entry (no creator OWNER, no projectReaders/projectWriters): the project's owners keep
# OWNER ("the BigQuery API requires at least one owner on the dataset": terraform-google-bigquery's
# v4.0 upgrade notes, whose default is also the projectOwners special group; not checked against
# the API here) and everyone else reads it through the main program's conditioned project-level
# grants. `protect`: no change here (a new location, say) can replace or delete
# the dataset and its data; `delete_contents_on_destroy=False`: even an unprotected destroy
# refuses a dataset that still holds tables.
dataset = gcp.bigquery.Dataset(
    "warehouse-dataset",
    project=project,
    dataset_id=cfg.dataset_id,
    location=cfg.dataset_location,
    description="flightpipe: flight events and their current state",
    labels={"app": "flightpipe", "managed-by": "pulumi", "env": cfg.env},
    accesses=[{"role": "OWNER", "special_group": "projectOwners"}],
    delete_contents_on_destroy=False,
    opts=kept,
)
# Creating the main program's view (`tables.insert` with a query) needs the creator to be able to
# query the tables the view reads: bigquery.tables.getData ("Create authorized views",
# https://cloud.google.com/bigquery/docs/authorized-views, "Required permissions"). Read-only, on
# this dataset only (a conditioned project grant, like the secrets above).
deployer_role_on(
    "deployer-reads-dataset",
    grants.DEPLOYER_DATASET_ROLE,
    (
        f"only-{cfg.dataset_id}",
        f"{grants.DEPLOYER_DATASET_ROLE} on dataset {cfg.dataset_id} and its tables",
        grants.resource_condition(
            "bigquery.googleapis.com", f"projects/{project}/datasets/{cfg.dataset_id}"
        ),
    ),
    pulumi.ResourceOptions(depends_on=[dataset]),
)

previewer: gcp.serviceaccount.Account | None = None
if cfg.trust.merge_request_previews:
    previewer = ci_account(
        "previewer", "flightpipe previewer (GitLab merge requests via WIF)", PREVIEW
    )
    project_roles("previewer", previewer.member, grants.PREVIEWER_PROJECT_ROLES)
    # A preview reads the checkpoint and takes no lock (pulumi/pulumi pkg/backend/diy/backend.go:
    # Preview, unlike Update, never calls Lock); it decrypts the stack's data key, never encrypts.
    state_and_key_roles(
        previewer.member,
        ("previewer-state", "roles/storage.objectViewer"),
        ("previewer-secrets-key", "roles/cloudkms.cryptoKeyDecrypter"),
    )

# What GitLab needs (Settings > CI/CD > Variables, scoped to this environment) and the main
# program's config (`flightpipe:deployerServiceAccount`).
pulumi.export("state_url", pulumi.Output.concat("gs://", state.name))
pulumi.export("secrets_provider", secrets_provider)
pulumi.export("wif_provider", provider.name)
pulumi.export("wif_audience", wif_audience)
pulumi.export("deployer_service_account", deployer.email)
pulumi.export("previewer_service_account", previewer.email if previewer else None)
pulumi.export("dataset", dataset.dataset_id)
pulumi.export("runtime_service_accounts", {short: a.email for short, a in runtime_accounts.items()})
