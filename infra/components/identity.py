"""Identity: the runtime accounts' grants, each only what its service uses.

The accounts themselves are the bootstrap's (infra/bootstrap/__main__.py, ids in
infra/grants.py RUNTIME_ACCOUNT_IDS): the deployer may act as exactly those two, so it holds no
project-wide serviceAccountUser, and creates or deletes no account. Every grant here is
project-level and goes through the deployer's conditioned projectIamAdmin (infra/grants.py):

- subscriber: `pubsub.subscriber` and `pubsub.publisher` (it pulls its subscription and
  dead-letters messages that fail the contract straight away), unconditioned because Pub/Sub
  resources cannot be named in an IAM condition (the project holds only flightpipe's topics and
  subscriptions); the table writer custom role (infra/grants.py: dataEditor would let the
  deployer, who may grant it to itself, create datasets) conditioned on the dataset. In
  `bigquery-subscription` mode Pub/Sub writes the table and the subscriber's account is granted
  nothing.
- api: `bigquery.dataViewer` conditioned on the dataset and `bigquery.jobUser` (a query is a
  job, and jobs only exist at project level).
Both: `monitoring.metricWriter`, for the collector sidecar that writes the service's metrics (it
writes time series only and reads nothing). Tracing to Cloud Trace adds `cloudtrace.agent`, which
reads no data. No keys are ever created: Cloud Run hands each revision its account's short-lived
tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import grants
import pulumi
import pulumi_gcp as gcp
from config import IngestMode

from components import Component
from components.grants_on import dataset_grant, project_role


@dataclass(frozen=True)
class RuntimeAccount:
    """A service account the bootstrap created, as the main program refers to it."""

    email: str

    @property
    def member(self) -> str:
        return f"serviceAccount:{self.email}"


@dataclass(frozen=True)
class IdentityArgs:
    project: str
    ingest_mode: IngestMode
    dataset_id: pulumi.Input[str]
    trace_to_cloud_trace: bool


class Identity(Component[IdentityArgs]):
    """The runtime accounts' project-level grants."""

    def build(self, name: str, args: IdentityArgs) -> Mapping[str, Any]:
        self.grants: list[pulumi.Resource] = []

        def account(short: str) -> RuntimeAccount:
            ids = grants.RUNTIME_ACCOUNT_IDS
            return RuntimeAccount(grants.service_account_email(args.project, ids[short]))

        def granted(grant: str, role: str, member: str) -> gcp.projects.IAMMember:
            return project_role(f"{name}-{grant}", args.project, role, member, self.child)

        def on_dataset(grant: str, role: str, member: str) -> gcp.projects.IAMMember:
            dataset = (args.project, args.dataset_id)
            return dataset_grant(f"{name}-{grant}", role, member, dataset, self.child)

        self.api = account("api")
        self.grants += [
            on_dataset("api-data-viewer", "roles/bigquery.dataViewer", self.api.member),
            granted("api-job-user", "roles/bigquery.jobUser", self.api.member),
        ]
        accounts = [("api", self.api)]

        self.subscriber: RuntimeAccount | None = None
        if args.ingest_mode == "subscriber":
            self.subscriber = account("subscriber")
            member = self.subscriber.member
            self.grants += [
                granted("subscriber-subscription", "roles/pubsub.subscriber", member),
                granted("subscriber-dlq-publisher", "roles/pubsub.publisher", member),
                on_dataset(
                    "subscriber-data-editor", grants.table_writer_role(args.project), member
                ),
            ]
            accounts.append(("subscriber", self.subscriber))

        # Project level is the only level these roles exist at: time series belong to the
        # project's metrics scope, with no narrower resource to grant on; metricWriter writes time
        # series and metric descriptors and reads descriptors, it cannot read any time series, so
        # it exposes no data. The trace agent role only writes spans.
        project_roles = [("metric-writer", "roles/monitoring.metricWriter")]
        if args.trace_to_cloud_trace:
            project_roles.append(("trace", "roles/cloudtrace.agent"))
        for suffix, role in project_roles:
            for short, acct in accounts:
                self.grants.append(granted(f"{short}-{suffix}", role, acct.member))
        return {short: acct.email for short, acct in accounts}
