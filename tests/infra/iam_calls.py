"""The table: every call each identity makes, the permission it needs and the resource it acts on.

Three parts:
- `STATIC_CALLS`: the runtime accounts, Google's service agents, the CI steps (state, KMS, image
  push, token minting, the post-deploy test and its rollback) and the previewer's reads.
- `RESOURCE_TYPES`: per resource type the main program declares, what `pulumi up` calls for it
  (create on the parent, get/update/delete on the resource; for an IAM member, the policy's
  get/setIamPolicy). The deployer's calls are generated from the recorded graph, so a new
  resource type the table does not know fails the simulation.
- `RPC_PERMISSIONS`: the RPC methods the services' clients really send (recorded against the
  Pub/Sub emulator and the fake BigQuery endpoint by tests/integration/test_rpc_permissions.py),
  mapped to the permission Google checks for each and to the identity that sends it in the cloud.

Permission names are Google's (a test asserts each exists in a predefined role of
tests/infra/data/gcp-iam-roles.json). Which permission a method needs: Pub/Sub's "Access control"
page (https://cloud.google.com/pubsub/docs/access-control, "Required permissions": acknowledge,
modifyAckDeadline, pull, streamingPull -> pubsub.subscriptions.consume on the subscription;
publish -> pubsub.topics.publish on the topic; subscriptions.create -> pubsub.subscriptions.create
on the project and pubsub.topics.attachSubscription on the topic). BigQuery (tabledata.insertAll
-> bigquery.tables.updateData; jobs.query -> bigquery.jobs.create on the project and
bigquery.tables.getData on each table read) follows BigQuery's access-control page
(https://cloud.google.com/bigquery/docs/access-control); the other CRUD names follow each service's
`<service>.<resource>.<verb>` permissions as the role dataset lists them.
Scopes: `project`, `dataset:<id>`, `table:<dataset>/<table>`, `topic:<name>`,
`subscription:<name>`, `secret:<id>`, `run-service:<name>`, `run-workerpool:<name>`,
`repository:<id>`, `bucket:<name>`, `kms-key:<ring>/<key>`, `service-account:<email>`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Call:
    # api, subscriber, pubsub-agent, uptime-agent, deployer, previewer, post-deploy-test, gitlab-*
    identity: str
    permission: str
    scope: str  # a template over the stack's names, e.g. "topic:{dead_letter_topic}"
    step: str  # which code or CLI step makes the call
    mode: str | None = None  # only in this ingest mode
    grants: tuple[str, ...] | None = None  # roles a setIamPolicy call adds (for conditions)


SUBSCRIBER: Final = "subscriber"
BQ_SUBSCRIPTION: Final = "bigquery-subscription"

STATIC_CALLS: Final[tuple[Call, ...]] = (
    # --- API (Cloud Run service, flightpipe-api) ---------------------------------------------
    Call("api", "bigquery.jobs.create", "project", "BigQueryWarehouse queries: jobs.query"),
    Call(
        "api",
        "bigquery.tables.getData",
        "table:{dataset}/{view}",
        "queries read the latest-state view",
    ),
    Call(
        "api",
        "bigquery.tables.getData",
        "table:{dataset}/{table}",
        "the view's base table; flight events, freshness",
    ),
    Call(
        "api",
        "secretmanager.versions.access",
        "secret:{api_keys_secret}",
        "Cloud Run resolves FLIGHTPIPE_API_KEYS at instance start",
    ),
    Call(
        "api",
        "monitoring.timeSeries.create",
        "project",
        "Managed Prometheus sidecar writes /metrics",
    ),
    Call("api", "cloudtrace.traces.patch", "project", "FLIGHTPIPE_TRACE_EXPORTER=gcp spans"),
    # --- subscriber (Cloud Run worker pool) ----------------------------------------------------
    Call(
        "subscriber",
        "pubsub.subscriptions.consume",
        "subscription:{subscription}",
        "Pull / StreamingPull / Acknowledge / ModifyAckDeadline",
        SUBSCRIBER,
    ),
    Call(
        "subscriber",
        "pubsub.topics.publish",
        "topic:{dead_letter_topic}",
        "invalid messages straight to the dead-letter topic",
        SUBSCRIBER,
    ),
    Call(
        "subscriber",
        "bigquery.tables.updateData",
        "table:{dataset}/{table}",
        "BigQueryWarehouse.write: tabledata.insertAll",
        SUBSCRIBER,
    ),
    Call(
        "subscriber",
        "monitoring.timeSeries.create",
        "project",
        "Managed Prometheus sidecar",
        SUBSCRIBER,
    ),
    Call("subscriber", "cloudtrace.traces.patch", "project", "trace spans", SUBSCRIBER),
    # --- Pub/Sub service agent -----------------------------------------------------------------
    Call(
        "pubsub-agent",
        "pubsub.topics.publish",
        "topic:{dead_letter_topic}",
        "dead-lettering after maxDeliveryAttempts",
    ),
    Call(
        "pubsub-agent",
        "pubsub.subscriptions.consume",
        "subscription:{subscription}",
        "acks what it dead-letters",
    ),
    Call(
        "pubsub-agent",
        "bigquery.tables.updateData",
        "table:{dataset}/{table}",
        "BigQuery subscription writes rows",
        BQ_SUBSCRIPTION,
    ),
    Call(
        "pubsub-agent",
        "bigquery.tables.get",
        "table:{dataset}/{table}",
        "BigQuery subscription reads the table schema",
        BQ_SUBSCRIPTION,
    ),
    # --- Cloud Monitoring notification agent (uptime checks' OIDC tokens) ----------------------
    Call(
        "uptime-agent",
        "run.routes.invoke",
        "run-service:{api_service}",
        "uptime check calls the IAM-protected API",
    ),
    # --- GitLab jobs through Workload Identity Federation --------------------------------------
    Call(
        "gitlab-deploy",
        "iam.serviceAccounts.getAccessToken",
        "service-account:{deployer_sa}",
        "STS token -> generateAccessToken (gcp_wif_login.sh)",
    ),
    Call(
        "gitlab-preview",
        "iam.serviceAccounts.getAccessToken",
        "service-account:{previewer_sa}",
        "STS token -> generateAccessToken (MR preview)",
    ),
    # --- deployer: CLI steps of deploy-dev / deploy-prod ----------------------------------------
    Call(
        "deployer",
        "storage.objects.list",
        "bucket:{state_bucket}",
        "pulumi login / stack select: list stacks, check locks",
    ),
    Call("deployer", "storage.objects.get", "bucket:{state_bucket}", "read the checkpoint"),
    Call(
        "deployer",
        "storage.objects.create",
        "bucket:{state_bucket}",
        "write checkpoint, history, backups, the update lock",
    ),
    Call("deployer", "storage.objects.delete", "bucket:{state_bucket}", "release the update lock"),
    Call(
        "deployer",
        "cloudkms.cryptoKeyVersions.useToDecrypt",
        "kms-key:{kms_key}",
        "gcpkms secrets provider: decrypt the stack's data key",
    ),
    Call(
        "deployer",
        "cloudkms.cryptoKeyVersions.useToEncrypt",
        "kms-key:{kms_key}",
        "gcpkms secrets provider: encrypt a new data key",
    ),
    Call(
        "deployer", "resourcemanager.projects.get", "project", "invoke gcp:organizations/getProject"
    ),
    Call(
        "deployer",
        "bigquery.tables.getData",
        "table:{dataset}/{table}",
        "tables.insert of the view: its creator must be able to query the table it reads",
    ),
    # --- deployer: `make preflight` before `pulumi up` (scripts/preflight.py) ------------------
    Call("deployer", "storage.buckets.get", "bucket:{state_bucket}", "preflight: state bucket"),
    Call("deployer", "cloudkms.cryptoKeys.get", "kms-key:{kms_key}", "preflight: the stack key"),
    Call(
        "deployer",
        "iam.googleapis.com/workloadIdentityPoolProviders.get",
        "project",
        "preflight: the WIF provider",
    ),
    Call("deployer", "serviceusage.services.list", "project", "preflight: enabled APIs"),
    Call(
        "deployer",
        "monitoring.notificationChannels.get",
        "project",
        "preflight: the alert policies' channels",
    ),
    Call(
        "deployer",
        "artifactregistry.repositories.uploadArtifacts",
        "repository:{repository}",
        "docker-build pushes both images",
    ),
    Call(
        "deployer",
        "artifactregistry.repositories.downloadArtifacts",
        "repository:{repository}",
        "push checks existing layers",
    ),
    Call(
        "deployer",
        "run.services.get",
        "run-service:{api_service}",
        "stack_outputs.sh: serving revision",
    ),
    # --- post-deploy test and rollback (run as the deployer) ----------------------------------
    Call(
        "post-deploy-test",
        "iam.serviceAccounts.getOpenIdToken",
        "service-account:{deployer_sa}",
        "cloud_run.py id-token: generateIdToken for the API URL",
    ),
    Call(
        "post-deploy-test",
        "secretmanager.versions.access",
        "secret:{e2e_key_secret}",
        "read the plain e2e API key",
    ),
    Call(
        "post-deploy-test",
        "pubsub.topics.publish",
        "topic:{topic}",
        "tests/e2e publishes a unique event",
    ),
    Call(
        "post-deploy-test",
        "run.routes.invoke",
        "run-service:{api_service}",
        "GET the API with the ID token",
    ),
    Call(
        "post-deploy-test",
        "run.services.update",
        "run-service:{api_service}",
        "rollback: cloud_run.py shift-traffic",
    ),
    Call(
        "post-deploy-test",
        "iam.serviceAccounts.actAs",
        "service-account:{api_sa}",
        "rollback updates a service that runs as the API account",
    ),
    # --- previewer: merge-request `pulumi preview` (read-only) ---------------------------------
    Call("previewer", "storage.objects.list", "bucket:{state_bucket}", "stack select, lock check"),
    Call("previewer", "storage.objects.get", "bucket:{state_bucket}", "read the checkpoint"),
    Call(
        "previewer",
        "cloudkms.cryptoKeyVersions.useToDecrypt",
        "kms-key:{kms_key}",
        "decrypt the stack's data key",
    ),
    Call(
        "previewer",
        "resourcemanager.projects.get",
        "project",
        "invoke gcp:organizations/getProject",
    ),
)


@dataclass(frozen=True)
class ResourceType:
    """What `pulumi up` calls for one resource type (`get` also serves a refresh)."""

    create: tuple[str, ...]
    get: tuple[str, ...]
    update: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()
    iam_set: tuple[str, ...] = ()  # setIamPolicy of the scope an IAM member resource edits


def _crud(prefix: str, *, update: bool = True) -> ResourceType:
    return ResourceType(
        create=(f"{prefix}.create",),
        get=(f"{prefix}.get",),
        update=(f"{prefix}.update",) if update else (),
        delete=(f"{prefix}.delete",),
    )


def _iam(prefix: str) -> ResourceType:
    return ResourceType(
        create=(), get=(f"{prefix}.getIamPolicy",), iam_set=(f"{prefix}.setIamPolicy",)
    )


RESOURCE_TYPES: Final[dict[str, ResourceType]] = {
    # components/monitoring/ready.py: MetricReady polls metricDescriptors.get; no Google resource.
    "pulumi-python:dynamic:Resource": ResourceType(
        create=("monitoring.metricDescriptors.get",), get=()
    ),
    "gcp:projects/service:Service": ResourceType(
        create=("serviceusage.services.enable",), get=("serviceusage.services.get",)
    ),
    # services.generateServiceIdentity: Google's reference page (service-usage v1beta1) names
    # OAuth scopes but no IAM permission; serviceusage.services.use is an assumption (held by
    # serviceUsageAdmin). Not verifiable here.
    "gcp:projects/serviceIdentity:ServiceIdentity": ResourceType(
        create=("serviceusage.services.use",), get=()
    ),
    "gcp:serviceaccount/account:Account": ResourceType(
        # No update: display-name edits would need serviceAccountAdmin, which also sets account
        # policies; the program never changes them (a change fails `pulumi up` with a 403).
        create=("iam.serviceAccounts.create",),
        get=("iam.serviceAccounts.get",),
        delete=("iam.serviceAccounts.delete",),
    ),
    "gcp:pubsub/topic:Topic": _crud("pubsub.topics"),
    "gcp:pubsub/subscription:Subscription": ResourceType(
        create=("pubsub.subscriptions.create", "pubsub.topics.attachSubscription"),
        get=("pubsub.subscriptions.get",),
        update=("pubsub.subscriptions.update",),
        delete=("pubsub.subscriptions.delete",),
    ),
    "gcp:bigquery/dataset:Dataset": _crud("bigquery.datasets"),
    "gcp:bigquery/table:Table": _crud("bigquery.tables"),
    "gcp:secretmanager/secret:Secret": _crud("secretmanager.secrets"),
    "gcp:secretmanager/secretVersion:SecretVersion": ResourceType(
        create=("secretmanager.versions.add",),
        get=("secretmanager.versions.get", "secretmanager.versions.access"),
        delete=("secretmanager.versions.destroy",),
    ),
    "gcp:artifactregistry/repository:Repository": _crud("artifactregistry.repositories"),
    "gcp:cloudrunv2/service:Service": _crud("run.services"),
    "gcp:cloudrunv2/workerPool:WorkerPool": _crud("run.workerpools"),
    "gcp:monitoring/alertPolicy:AlertPolicy": _crud("monitoring.alertPolicies"),
    "gcp:monitoring/customService:CustomService": _crud("monitoring.services"),
    "gcp:monitoring/slo:Slo": _crud("monitoring.slos"),
    "gcp:monitoring/dashboard:Dashboard": _crud("monitoring.dashboards"),
    "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig": _crud("monitoring.uptimeCheckConfigs"),
    "gcp:monitoring/notificationChannel:NotificationChannel": _crud(
        "monitoring.notificationChannels"
    ),
    "docker-build:index:Image": ResourceType(create=(), get=()),  # the push: STATIC_CALLS
    "gcp:projects/iAMMember:IAMMember": _iam("resourcemanager.projects"),
    "gcp:pubsub/topicIAMMember:TopicIAMMember": _iam("pubsub.topics"),
    "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember": _iam("pubsub.subscriptions"),
    "gcp:bigquery/datasetIamMember:DatasetIamMember": _iam("bigquery.datasets"),
    "gcp:secretmanager/secretIamMember:SecretIamMember": _iam("secretmanager.secrets"),
    "gcp:cloudrunv2/serviceIamMember:ServiceIamMember": _iam("run.services"),
}

# RPC method (as the client sends it) -> (permission, scope template, identity in the cloud).
# Methods only `flightpipe serve` / tests send against the emulator (topology creation) are in
# LOCAL_ONLY_RPCS: in the cloud the Pulumi program creates those resources.
RPC_PERMISSIONS: Final[dict[str, tuple[str, str, str]]] = {
    "/google.pubsub.v1.Publisher/Publish": (
        "pubsub.topics.publish",
        "topic:{dead_letter_topic}",
        "subscriber",
    ),
    "/google.pubsub.v1.Subscriber/Pull": (
        "pubsub.subscriptions.consume",
        "subscription:{subscription}",
        "subscriber",
    ),
    "/google.pubsub.v1.Subscriber/StreamingPull": (
        "pubsub.subscriptions.consume",
        "subscription:{subscription}",
        "subscriber",
    ),
    "/google.pubsub.v1.Subscriber/Acknowledge": (
        "pubsub.subscriptions.consume",
        "subscription:{subscription}",
        "subscriber",
    ),
    "/google.pubsub.v1.Subscriber/ModifyAckDeadline": (
        "pubsub.subscriptions.consume",
        "subscription:{subscription}",
        "subscriber",
    ),
    "bigquery.tabledata.insertAll": (
        "bigquery.tables.updateData",
        "table:{dataset}/{table}",
        "subscriber",
    ),
    "bigquery.jobs.query": ("bigquery.jobs.create", "project", "api"),
}
LOCAL_ONLY_RPCS: Final[dict[str, str]] = {
    "/google.pubsub.v1.Publisher/CreateTopic": "topology of `flightpipe serve` / tests",
    "/google.pubsub.v1.Publisher/GetTopic": "topology check (Pulumi in the cloud)",
    "/google.pubsub.v1.Publisher/DeleteTopic": "test clean-up",
    "/google.pubsub.v1.Subscriber/CreateSubscription": "topology (Pulumi in the cloud)",
    "/google.pubsub.v1.Subscriber/GetSubscription": "topology check (Pulumi in the cloud)",
    "/google.pubsub.v1.Subscriber/DeleteSubscription": "test clean-up",
}
