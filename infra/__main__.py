"""flightpipe on Google Cloud: wires the components together and exports the stack outputs.

Configuration is read in `config.py` only; each concern is one component in `components/`.
"""

from __future__ import annotations

from pathlib import Path

import config
import environment
import pulumi
from components.identity import Identity, IdentityArgs
from components.messaging import Messaging, MessagingArgs
from components.monitoring import Monitoring, MonitoringArgs
from components.registry import Registry, RegistryArgs
from components.runtime import Runtime, RuntimeArgs
from components.services import ProjectServices, ProjectServicesArgs
from components.warehouse import Warehouse, WarehouseArgs

from flightpipe.settings import Settings

cfg = config.load()
names = Settings()  # the services' default resource names are the names created here
labels = cfg.labels
REPO_ROOT = Path(__file__).resolve().parent.parent

services = ProjectServices("services", ProjectServicesArgs(project=cfg.project))
after_apis = pulumi.ResourceOptions(depends_on=[services])

warehouse = Warehouse(
    "warehouse",
    WarehouseArgs(
        project=cfg.project,
        dataset_id=names.dataset,  # created by the bootstrap (components/warehouse.py)
        deletion_protection=cfg.deletion_protection,
        with_pubsub_metadata=cfg.ingest_mode == "bigquery-subscription",
        labels=labels,
    ),
    after_apis,
)
messaging = Messaging(
    "messaging",
    MessagingArgs(
        project=cfg.project,
        topic=names.topic,
        subscription=names.subscription,
        dead_letter_topic=names.dead_letter_topic,
        dead_letter_subscription=names.dead_letter_subscription,
        delivery=cfg.delivery,
        ingest_mode=cfg.ingest_mode,
        labels=labels,
        table_ref=warehouse.table_ref,
        dataset_id=warehouse.dataset_id,
    ),
    after_apis,
)
identity = Identity(
    "identity",
    IdentityArgs(
        project=cfg.project,
        ingest_mode=cfg.ingest_mode,
        dataset_id=warehouse.dataset_id,
        trace_to_cloud_trace=cfg.trace_exporter == "gcp",
    ),
    after_apis,
)
registry = Registry(
    "registry",
    RegistryArgs(
        project=cfg.project,
        region=cfg.region,
        repository_id="flightpipe",
        image_tag=cfg.image_tag,
        keep_count=cfg.artifact_keep_count,
        builder=cfg.buildx_builder,
        context=REPO_ROOT,
        labels=labels,
    ),
    after_apis,
)
shared = environment.SharedNames(
    topic=messaging.topic.name,
    subscription=messaging.subscription.name,
    dead_letter_topic=messaging.dead_letter_topic.name,
    dataset=warehouse.dataset_id,
)
runtime = Runtime(
    "runtime",
    RuntimeArgs(
        project=cfg.project,
        region=cfg.region,
        ingest_mode=cfg.ingest_mode,
        api_image=registry.images["api"].ref,
        subscriber_image=registry.images["subscriber"].ref,
        api_service_account=identity.api.email,
        api_service_account_member=identity.api.member,
        subscriber_service_account=identity.subscriber.email if identity.subscriber else None,
        api_env=environment.api_env(cfg, shared),
        subscriber_env=environment.subscriber_env(cfg, shared),
        analyst_group=cfg.analyst_group,
        ingress=cfg.api_ingress,
        sizing=cfg.sizing,
        deletion_protection=cfg.deletion_protection,
        labels=labels,
        api_keys_secret=cfg.api_keys_secret,
        # A revision that starts before its grants exist crash-loops on permission errors.
        depends_on=(identity, warehouse, messaging),
    ),
    after_apis,
)
monitoring = Monitoring(
    "monitoring",
    MonitoringArgs(
        project=cfg.project,
        env=cfg.env,
        api_service_name=runtime.api.name,
        api_host=runtime.api_url,
        api_location=cfg.region,
        subscription_name=messaging.subscription.name,
        dead_letter_topic_name=messaging.dead_letter_topic.name,
        dead_letter_subscription_name=messaging.dead_letter_subscription.name,
        notification_channels=list(cfg.notification_channels),
        labels=labels,
        subscriber_service_name=runtime.subscriber.name if runtime.subscriber else None,
        has_subscriber=cfg.ingest_mode == "subscriber",
    ),
    after_apis,
)

pulumi.export("ingest_mode", cfg.ingest_mode)
pulumi.export("api_url", runtime.api_url)
pulumi.export("api_service", runtime.api.name)
pulumi.export("topic", messaging.topic.name)
pulumi.export("subscription", messaging.subscription.name)
pulumi.export("dead_letter_topic", messaging.dead_letter_topic.name)
pulumi.export("dead_letter_subscription", messaging.dead_letter_subscription.name)
pulumi.export("dataset", warehouse.dataset_id)
pulumi.export("table", warehouse.table.table_id)
pulumi.export("view", warehouse.view.table_id)
pulumi.export("api_image", registry.images["api"].ref)
pulumi.export("subscriber_image", registry.images["subscriber"].ref)
pulumi.export("api_image_digest", registry.images["api"].digest)
pulumi.export("subscriber_image_digest", registry.images["subscriber"].digest)
pulumi.export("api_keys_secret", runtime.api_keys_secret_id)
# The plain key the post-deploy test sends (None when an existing apiKeysSecret is configured).
pulumi.export("e2e_api_key_secret", runtime.e2e_api_key_secret_id)
pulumi.export("dashboard_id", monitoring.dashboard_id)
