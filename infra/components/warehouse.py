"""Warehouse: the `events` table and the `flights_current` view, in the bootstrap's dataset.

The dataset itself is created by the bootstrap (infra/bootstrap/__main__.py), by a human with
owner rights, with an explicit access list and `protect`: creating or updating a dataset is a way
to grant access to it that no IAM condition limits, so the deployer may do neither
(infra/grants.py, DATASET_ACCESS_PERMISSIONS). This component only names it.

The table's schema is generated from the shared contract's columns (`flightpipe.contract`, typed by
the BigQuery adapter's `bigquery_sql.events_schema`), the same code the
services validate messages with, so the warehouse cannot drift from what publishers send. It is
partitioned by `flight_date` (queries filter by day) and clustered by `carrier, origin` (the API's
filters). `flights_current` keeps the latest event of each flight: duplicates of an event (same
`event_id`, redelivered) and older states collapse to one row, ordered by `event_time` then
`publish_time`. The BigQuery adapter reads these names; they are part of the contract.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import pulumi
import pulumi_gcp as gcp

from components import Component
from flightpipe.warehouse.bigquery_sql import current_view_sql, events_schema, table_ref

TABLE_ID: Final = "events"
VIEW_ID: Final = "flights_current"
PARTITION_FIELD: Final = "flight_date"
CLUSTERING: Final[tuple[str, ...]] = ("carrier", "origin")

# What a Pub/Sub BigQuery subscription with `write_metadata` writes besides the contract's own
# `message_id` and `publish_time`; the table must have these columns or every write fails.
PUBSUB_METADATA_COLUMNS: Final[tuple[dict[str, str], ...]] = (
    {
        "name": "subscription_name",
        "type": "STRING",
        "mode": "NULLABLE",
        "description": "Pub/Sub subscription that wrote the row (BigQuery subscription only)",
    },
    {
        "name": "attributes",
        "type": "JSON",
        "mode": "NULLABLE",
        "description": "Pub/Sub message attributes (BigQuery subscription only)",
    },
)


def table_schema(*, with_pubsub_metadata: bool) -> list[dict[str, Any]]:
    """The `events` schema: the contract's columns, plus Pub/Sub's metadata columns if asked."""
    schema: list[dict[str, Any]] = list(events_schema())
    for column in schema:
        if column["name"] == "ingest_time":
            # The subscriber sets it; a native BigQuery subscription cannot, so BigQuery does.
            column["defaultValueExpression"] = "CURRENT_TIMESTAMP()"
    if with_pubsub_metadata:
        schema.extend(dict(c) for c in PUBSUB_METADATA_COLUMNS)
    return schema


def current_state_sql(project: str, dataset: str) -> str:
    """The `flights_current` view: the SQL the BigQuery adapter reads through, from one place.

    The same function builds the view here and in the adapter's tests, where it is transpiled
    to DuckDB and checked against the DuckDB adapter's results.
    """
    return current_view_sql(table_ref(project, dataset, TABLE_ID))


@dataclass(frozen=True)
class WarehouseArgs:
    project: str
    dataset_id: str  # the bootstrap's dataset (flightpipe.settings' default name)
    deletion_protection: bool
    with_pubsub_metadata: bool
    labels: dict[str, str]


class Warehouse(Component[WarehouseArgs]):
    """The events table and the current-state view, in the bootstrap's dataset."""

    def build(self, name: str, args: WarehouseArgs) -> Mapping[str, Any]:
        child = self.child
        self.dataset_id: pulumi.Output[str] = pulumi.Output.from_input(args.dataset_id)
        self.table = gcp.bigquery.Table(
            f"{name}-events",
            project=args.project,
            dataset_id=self.dataset_id,
            table_id=TABLE_ID,
            description="Every flight event received (append-only; duplicates possible)",
            schema=json.dumps(table_schema(with_pubsub_metadata=args.with_pubsub_metadata)),
            time_partitioning={"type": "DAY", "field": PARTITION_FIELD},
            clusterings=list(CLUSTERING),
            deletion_protection=args.deletion_protection,
            labels=args.labels,
            opts=child,
        )
        self.view = gcp.bigquery.Table(
            f"{name}-current",
            project=args.project,
            dataset_id=self.dataset_id,
            table_id=VIEW_ID,
            description="The latest event of each flight",
            view={
                "query": current_state_sql(args.project, args.dataset_id),
                "use_legacy_sql": False,
            },
            deletion_protection=args.deletion_protection,
            labels=args.labels,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.table]),
        )
        # `project.dataset.table`, the form Pub/Sub's BigQuery subscription takes.
        self.table_ref: pulumi.Output[str] = pulumi.Output.concat(
            args.project, ".", self.dataset_id, ".", self.table.table_id
        )
        return {"dataset": self.dataset_id, "table": self.table.table_id, "view": VIEW_ID}
