"""Identity: one service account per service, each granted only what it uses, on that resource.

- subscriber: `pubsub.subscriber` on its subscription, `pubsub.publisher` on the dead-letter topic
  (it dead-letters messages that fail the contract straight away), `bigquery.dataEditor` on the
  dataset; it does not exist in `bigquery-subscription` mode, where Pub/Sub writes the table.
Dataset grants are project-level grants with an IAM condition on the dataset
(components/grants_on.py: they go through the deployer's conditioned projectIamAdmin).
- api: `bigquery.dataViewer` on the dataset and `bigquery.jobUser` on the project (a query is a
  job, and jobs only exist at project level).
Both: `monitoring.metricWriter` on the project, for the Managed Service for Prometheus sidecar
that writes the service's metrics (it writes time series only and reads nothing). Tracing to Cloud
Trace adds `cloudtrace.agent`, which reads no data. No keys are ever created: Cloud Run hands each
revision its account's short-lived tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
from config import IngestMode

from components.grants_on import dataset_name, project_grant_on


@dataclass(frozen=True)
class IdentityArgs:
    project: str
    ingest_mode: IngestMode
    subscription: pulumi.Input[str]
    dead_letter_topic: pulumi.Input[str]
    dataset_id: pulumi.Input[str]
    trace_to_cloud_trace: bool


class Identity(pulumi.ComponentResource):
    """The runtime service accounts and their resource-level grants."""

    def __init__(
        self, name: str, args: IdentityArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("flightpipe:infra:Identity", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.grants: list[pulumi.Resource] = []

        self.api = gcp.serviceaccount.Account(
            f"{name}-api",
            project=args.project,
            account_id="flightpipe-api",
            display_name="flightpipe API (Cloud Run)",
            opts=child,
        )
        self.grants += [
            project_grant_on(
                f"{name}-api-data-viewer",
                project=args.project,
                role="roles/bigquery.dataViewer",
                member=self.api.member,
                service="bigquery.googleapis.com",
                resource_name=dataset_name(args.project, args.dataset_id),
                opts=child,
            ),
            gcp.projects.IAMMember(
                f"{name}-api-job-user",
                project=args.project,
                role="roles/bigquery.jobUser",
                member=self.api.member,
                opts=child,
            ),
        ]
        accounts = [("api", self.api)]

        self.subscriber: gcp.serviceaccount.Account | None = None
        if args.ingest_mode == "subscriber":
            self.subscriber = gcp.serviceaccount.Account(
                f"{name}-subscriber",
                project=args.project,
                account_id="flightpipe-subscriber",
                display_name="flightpipe subscriber (Cloud Run worker pool)",
                opts=child,
            )
            member = self.subscriber.member
            self.grants += [
                gcp.pubsub.SubscriptionIAMMember(
                    f"{name}-subscriber-subscription",
                    project=args.project,
                    subscription=args.subscription,
                    role="roles/pubsub.subscriber",
                    member=member,
                    opts=child,
                ),
                gcp.pubsub.TopicIAMMember(
                    f"{name}-subscriber-dlq-publisher",
                    project=args.project,
                    topic=args.dead_letter_topic,
                    role="roles/pubsub.publisher",
                    member=member,
                    opts=child,
                ),
                project_grant_on(
                    f"{name}-subscriber-data-editor",
                    project=args.project,
                    role="roles/bigquery.dataEditor",
                    member=member,
                    service="bigquery.googleapis.com",
                    resource_name=dataset_name(args.project, args.dataset_id),
                    opts=child,
                ),
            ]
            accounts.append(("subscriber", self.subscriber))

        # Project level is the only level these roles exist at. The Prometheus sidecar writes as
        # the revision's account: time series belong to the project's metrics scope, with no
        # narrower resource to grant on; metricWriter writes time series and metric descriptors
        # and reads descriptors, it cannot read any time series, so it exposes no data. The trace
        # agent role only writes spans.
        project_roles = [("metric-writer", "roles/monitoring.metricWriter")]
        if args.trace_to_cloud_trace:
            project_roles.append(("trace", "roles/cloudtrace.agent"))
        for suffix, role in project_roles:
            for short, account in accounts:
                self.grants.append(
                    gcp.projects.IAMMember(
                        f"{name}-{short}-{suffix}",
                        project=args.project,
                        role=role,
                        member=account.member,
                        opts=child,
                    )
                )
        self.register_outputs(
            {short: account.email for short, account in accounts},
        )
