"""The Monitoring component declared under Pulumi mocks, and the queries its policy tests share.

The component is declared under `pulumi.runtime.set_mocks` (pulumi/examples, testing-unit-py); the
mocks record every resource's inputs and play the provider for the outputs the component reads
back (an SLO's full name, an uptime check's id, the service agent's member, MetricReady's answer).
Self-contained: its own mocks, and `infra/` on `sys.path` the way `pulumi` runs the program.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pulumi
import pulumi_gcp as gcp
from google.protobuf.json_format import MessageToDict  # type: ignore[import-untyped]
from pulumi.runtime.mocks import MockMonitor

INFRA = Path(__file__).resolve().parents[2] / "infra"
if str(INFRA) not in sys.path:
    sys.path.insert(0, str(INFRA))

from components.monitoring import Monitoring, MonitoringArgs  # noqa: E402

POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
SLO = "gcp:monitoring/slo:Slo"
UPTIME = "gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig"
DASHBOARD = "gcp:monitoring/dashboard:Dashboard"
# Project level: a service's own policy would need the deployer to hold run.services.setIamPolicy
# (infra/grants.py, PROJECT_GRANTED_ROLES).
INVOKER = "gcp:projects/iAMMember:IAMMember"
AGENT = "gcp:projects/serviceIdentity:ServiceIdentity"
AGENT_MEMBER = "serviceAccount:service-42@gcp-sa-monitoring-notification.iam.gserviceaccount.com"
COMPONENT = "flightpipe:monitoring:Monitoring"
READY = "pulumi-python:dynamic:Resource"  # pulumi.dynamic.Resource's type (components/ready.py)


class RecordingMocks(pulumi.runtime.Mocks):
    """Records what the program declares; answers like the provider where the program reads back."""

    def __init__(self, received: bool = True) -> None:
        self.resources: list[pulumi.runtime.MockResourceArgs] = []
        self.received = received  # what MetricReady's provider answers (components/ready.py)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.resources.append(args)
        state = dict(args.inputs)
        if args.typ == READY:
            state["received"] = self.received
        if args.typ == SLO:
            service, slo_id = args.inputs["service"], args.inputs["sloId"]
            state["name"] = f"projects/p/services/{service}/serviceLevelObjectives/{slo_id}"
        if args.typ == UPTIME:
            state["uptimeCheckId"] = f"{args.name}-check-id"
        if args.typ == AGENT:  # what generateServiceIdentity answers for monitoring.googleapis.com
            state["member"] = AGENT_MEMBER
        return f"{args.name}_id", state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], None]:
        return {}, None


def monitoring_args(**overrides: Any) -> MonitoringArgs:
    base: dict[str, Any] = {
        "project": "p",
        "env": "dev",
        "api_service_name": "flightpipe-api",
        "api_host": "https://flightpipe-api-abc-ew.a.run.app/",
        "subscription_name": "projects/p/subscriptions/flight-events-sub",
        "dead_letter_topic_name": "flight-events-dlq",
        "api_location": "europe-west1",
        "dead_letter_subscription_name": "flight-events-dlq-sub",
        "subscriber_service_name": "flightpipe-subscriber",
        "notification_channels": ["projects/p/notificationChannels/123"],
    }
    return MonitoringArgs(**{**base, **overrides})


class RecordingMonitor(MockMonitor):
    """Also records each registration's parent and dependencies, and registered outputs."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.parents: dict[str, str] = {}
        self.dependencies: dict[str, set[str]] = {}
        self.outputs: dict[str, dict[str, Any]] = {}

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (the gRPC method's name)
        self.parents[request.name] = request.parent
        self.dependencies[request.name] = set(request.dependencies)
        return super().RegisterResource(request)  # type: ignore[no-untyped-call]

    def RegisterResourceOutputs(self, request: Any) -> Any:  # noqa: N802
        self.outputs[request.urn] = MessageToDict(request.outputs)
        return super().RegisterResourceOutputs(request)  # type: ignore[no-untyped-call]


def run_component(
    make_args: Callable[[], MonitoringArgs] = monitoring_args,
    check: Callable[[Monitoring], pulumi.Output[Any] | None] | None = None,
    depends_on_apis: bool = False,
    received: bool = True,
) -> tuple[RecordingMocks, RecordingMonitor]:
    """Run a program declaring one `Monitoring("mon", ...)` under recording mocks."""
    mocks = RecordingMocks(received)
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, preview=False, monitor=monitor)

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def program() -> pulumi.Output[Any] | None:
        opts = None
        if depends_on_apis:
            apis = gcp.projects.Service("apis", project="p", service="monitoring.googleapis.com")
            opts = pulumi.ResourceOptions(depends_on=[apis])
        component = Monitoring("mon", make_args(), opts)
        return check(component) if check else None

    program()
    return mocks, monitor


def declare(
    make_args: Callable[[], MonitoringArgs] = monitoring_args,
) -> list[pulumi.runtime.MockResourceArgs]:
    """Every resource a `Monitoring("mon", make_args())` declares."""
    return run_component(make_args)[0].resources


def of_type(resources: list[pulumi.runtime.MockResourceArgs], typ: str) -> list[dict[str, Any]]:
    return [r.inputs for r in resources if r.typ == typ]


def thresholds(policy: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for condition in policy["conditions"]:
        if "conditionThreshold" in condition:
            yield condition["conditionThreshold"]


def seconds(duration: str) -> int:
    assert duration.endswith("s"), duration
    return int(duration[:-1])


def policy_on(policies: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """The one policy with a condition on `metric`."""
    found = [p for p in policies if any(metric in t["filter"] for t in thresholds(p))]
    assert len(found) == 1, f"{len(found)} policies watch {metric}"
    return found[0]


def condition_on(policy: dict[str, Any], metric: str) -> dict[str, Any]:
    return next(t for t in thresholds(policy) if metric in t["filter"])


def dashboard_filters(dashboard: dict[str, Any]) -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("filter"), str):
                found.append(node["filter"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard)
    return found
