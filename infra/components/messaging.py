"""Messaging: the flights topic, its subscription, and the dead-letter path.

The source subscription is either a pull subscription (ingest mode `subscriber`: the Cloud Run
subscriber pulls it) or Pub/Sub's native BigQuery subscription (`bigquery-subscription`: Pub/Sub
writes each message into the `events` table itself). Both carry the same delivery contract: ack
deadline, exponential retry, retention, and a dead-letter policy after `max_delivery_attempts` to a
dead-letter topic whose own pull subscription keeps failed messages for inspection
(`flightpipe dlq list`).

Dead-lettering is done by the Pub/Sub service agent, not by the subscriber: it must be allowed to
publish to the dead-letter topic and to subscribe (ack) on the source subscription, or failed
messages are silently redelivered forever. Both roles are granted at project level (the project
holds only flightpipe): Pub/Sub resources cannot be named in an IAM condition, and a topic's or a
subscription's own policy would need the deployer to hold its setIamPolicy (infra/grants.py,
PROJECT_GRANTED_ROLES, says why and what it costs). In BigQuery-subscription mode the agent also
writes the table, so it gets the table writer custom role (infra/grants.py
TABLE_WRITER_PERMISSIONS), conditioned on the dataset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grants
import pulumi
import pulumi_gcp as gcp
from config import Delivery, IngestMode

from components import Component
from components.grants_on import dataset_grant, project_role


@dataclass(frozen=True)
class MessagingArgs:
    project: str
    topic: str
    subscription: str
    dead_letter_topic: str
    dead_letter_subscription: str
    delivery: Delivery
    ingest_mode: IngestMode
    labels: dict[str, str]
    # Only for `bigquery-subscription`: where Pub/Sub writes (`project.dataset.table`).
    table_ref: pulumi.Input[str] | None = None
    dataset_id: pulumi.Input[str] | None = None


class Messaging(Component[MessagingArgs]):
    """Topic, source subscription, dead-letter topic and its inspection subscription."""

    def build(self, name: str, args: MessagingArgs) -> Mapping[str, Any]:
        delivery = args.delivery

        def topic(suffix: str, topic_name: str, retention: str | None) -> gcp.pubsub.Topic:
            return gcp.pubsub.Topic(
                f"{name}-{suffix}",
                project=args.project,
                name=topic_name,
                message_retention_duration=retention,
                labels=args.labels,
                opts=self.child,
            )

        self.topic = topic("topic", args.topic, delivery.message_retention)
        # No retention on the dead-letter topic: its inspection subscription keeps what arrives.
        self.dead_letter_topic = topic("dlq", args.dead_letter_topic, None)
        self.dead_letter_subscription = gcp.pubsub.Subscription(
            f"{name}-dlq-inspect",
            project=args.project,
            name=args.dead_letter_subscription,
            topic=self.dead_letter_topic.id,
            ack_deadline_seconds=60,
            message_retention_duration="604800s",  # the maximum: time to look before it is gone
            retain_acked_messages=True,
            expiration_policy={"ttl": ""},  # never expire, even when nobody reads it for 31 days
            labels=args.labels,
            opts=self.child,
        )
        self.service_agent = gcp.projects.ServiceIdentity(
            f"{name}-agent", project=args.project, service="pubsub.googleapis.com", opts=self.child
        )
        # The agent's member string, e.g. serviceAccount:service-123@gcp-sa-pubsub.iam...
        agent_member = self.service_agent.member
        # Project level (infra/grants.py): dead-lettering publishes to the dead-letter topic and
        # acks on the source subscription what it dead-letters.
        self.agent_publisher, self.agent_subscriber = (
            project_role(f"{name}-agent-{grant}", args.project, role, agent_member, self.child)
            for grant, role in (
                ("dlq-publisher", "roles/pubsub.publisher"),
                ("subscriber", "roles/pubsub.subscriber"),
            )
        )

        subscription_opts = pulumi.ResourceOptions(parent=self, depends_on=[self.agent_publisher])
        bigquery_config: gcp.pubsub.SubscriptionBigqueryConfigArgsDict | None = None
        self.agent_data_editor: gcp.projects.IAMMember | None = None
        if args.ingest_mode == "bigquery-subscription":
            if args.table_ref is None or args.dataset_id is None:
                raise ValueError("bigquery-subscription mode needs table_ref and dataset_id")
            # Project level, conditioned on the dataset (components/grants_on.py says why).
            self.agent_data_editor = dataset_grant(
                f"{name}-agent-data-editor",
                grants.table_writer_role(args.project),
                agent_member,
                (args.project, args.dataset_id),
                self.child,
            )
            # Pub/Sub checks the table's permissions when the subscription is created.
            subscription_opts = pulumi.ResourceOptions(
                parent=self, depends_on=[self.agent_publisher, self.agent_data_editor]
            )
            bigquery_config = {
                "table": args.table_ref,
                # Message JSON fields map to the table's columns by name (the contract's);
                # write_metadata fills message_id and publish_time, as the subscriber does.
                "use_table_schema": True,
                "write_metadata": True,
                "drop_unknown_fields": True,
            }
        self.subscription = gcp.pubsub.Subscription(
            f"{name}-subscription",
            project=args.project,
            name=args.subscription,
            topic=self.topic.id,
            ack_deadline_seconds=delivery.ack_deadline_seconds,
            message_retention_duration=delivery.message_retention,
            expiration_policy={"ttl": ""},
            retry_policy={"minimum_backoff": "10s", "maximum_backoff": "600s"},
            dead_letter_policy={
                "dead_letter_topic": self.dead_letter_topic.id,
                "max_delivery_attempts": delivery.max_delivery_attempts,
            },
            bigquery_config=bigquery_config,
            labels=args.labels,
            opts=subscription_opts,
        )
        return {
            "topic": self.topic.name,
            "subscription": self.subscription.name,
            "dead_letter_topic": self.dead_letter_topic.name,
        }
