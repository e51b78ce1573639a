"""What the program's policy tests ask of a recorded graph (tests/infra/program.py): resource
types, the IAM grants and the resource a grant's condition limits it to, the runtime accounts,
and the application container of each Cloud Run resource.
"""

from __future__ import annotations

from typing import Any

import grants

from tests.infra.iam_model import resource_limit
from tests.infra.program import Graph

SUBSCRIPTION = "gcp:pubsub/subscription:Subscription"
TOPIC = "gcp:pubsub/topic:Topic"
TOPIC_IAM = "gcp:pubsub/topicIAMMember:TopicIAMMember"
SUBSCRIPTION_IAM = "gcp:pubsub/subscriptionIAMMember:SubscriptionIAMMember"
PROJECT_IAM = "gcp:projects/iAMMember:IAMMember"
ACCOUNT = "gcp:serviceaccount/account:Account"
AGENT = "gcp:projects/serviceIdentity:ServiceIdentity"
RUN_SERVICE = "gcp:cloudrunv2/service:Service"
WORKER_POOL = "gcp:cloudrunv2/workerPool:WorkerPool"
TABLE = "gcp:bigquery/table:Table"
METRIC_WRITER = "roles/monitoring.metricWriter"


def iam_grants(graph: Graph) -> list[Any]:
    return [r for r in graph.resources if "iam" in r.type.lower() and "role" in r.inputs]


def limited_to(grant: Any) -> str | None:
    """The resource a project-level grant's IAM condition limits it to (`dataset:<id>`, ...)."""
    return resource_limit((grant.inputs.get("condition") or {}).get("expression"))


def grant_scope(grant: Any) -> str:
    """Where a grant applies: its IAM member type, or `project on <resource>` when limited."""
    limited = limited_to(grant)
    return f"project on {limited}" if limited else str(grant.type)


def pubsub_agent(graph: Graph) -> str:
    """The Pub/Sub service agent's member."""
    (agent,) = [a for a in graph.of_type(AGENT) if a.inputs["service"] == "pubsub.googleapis.com"]
    return str(agent.outputs["member"])


def runtime_accounts(graph: Graph) -> dict[str, str]:
    """Account id -> email of the bootstrap's runtime accounts (infra/grants.py)."""
    project = graph.config["gcp:project"]
    return {
        i: grants.service_account_email(project, i) for i in grants.RUNTIME_ACCOUNT_IDS.values()
    }


def runtime_members(graph: Graph) -> dict[str, str]:
    """Account id -> member, for the runtime accounts this stack grants anything to."""
    granted = {g.inputs["member"] for g in iam_grants(graph)}
    members = {i: f"serviceAccount:{e}" for i, e in runtime_accounts(graph).items()}
    return {i: m for i, m in members.items() if m in granted}


def cloud_run(graph: Graph) -> list[Any]:
    return graph.of_type(RUN_SERVICE, WORKER_POOL)


def app_container(resource: Any) -> dict[str, Any]:
    """The application container (the one that is not the metrics collector)."""
    (container,) = [
        c for c in resource.inputs["template"]["containers"] if c["name"] != "collector"
    ]
    return dict(container)


def app_env(resource: Any) -> dict[str, Any]:
    return {e["name"]: e for e in app_container(resource).get("envs", [])}
