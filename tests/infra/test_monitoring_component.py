"""The Monitoring component's plumbing: its uptime check and the grant that lets it call the API,
the labels and names of its children, their parent and dependencies, and its registered outputs.
"""

from __future__ import annotations

import json
from typing import Any

import pulumi
from components.monitoring import Monitoring

from tests.infra.monitoring import (
    AGENT,
    AGENT_MEMBER,
    COMPONENT,
    DASHBOARD,
    INVOKER,
    READY,
    UPTIME,
    declare,
    monitoring_args,
    of_type,
    run_component,
)

REQUIRED_LABELS = {"env": "dev", "app": "flightpipe", "managed-by": "pulumi"}


def test_uptime_check_probes_health_over_https(declared: list[Any]) -> None:
    (check,) = of_type(declared, UPTIME)
    http = check["httpCheck"]
    # Not /healthz: Cloud Run's front end reserves "some paths ending with z"
    # (https://cloud.google.com/run/docs/known-issues, "Reserved URL paths").
    assert http["path"] == "/health" and not http["path"].endswith("z")
    assert http["useSsl"] is True and http["validateSsl"] is True and http["port"] == 443
    assert check["monitoredResource"]["type"] == "uptime_url"
    assert check["monitoredResource"]["labels"]["host"] == "flightpipe-api-abc-ew.a.run.app"


def test_uptime_check_passes_cloud_run_iam_as_the_monitoring_service_agent() -> None:
    mocks, monitor = run_component()
    (check,) = of_type(mocks.resources, UPTIME)
    assert check["httpCheck"]["serviceAgentAuthentication"] == {"type": "OIDC_TOKEN"}
    assert "authInfo" not in check["httpCheck"]  # no password, no shared secret
    (grant,) = [r for r in mocks.resources if r.typ == INVOKER]
    assert grant.inputs == {
        "project": "p",
        "role": "roles/run.invoker",
        "member": AGENT_MEMBER,
    }
    # The agent is made to exist (ServiceIdentity) before the grant names it.
    (agent,) = [r for r in mocks.resources if r.typ == AGENT]
    assert agent.inputs["service"] == "monitoring.googleapis.com"
    (agent_urn,) = [u for u in monitor.resources if u.endswith("::mon-uptime-agent")]
    assert agent_urn in monitor.dependencies[grant.name]


def test_uptime_check_accepts_the_host_as_an_output() -> None:
    host = "flightpipe-api-xyz.a.run.app"
    resources = declare(lambda: monitoring_args(api_host=pulumi.Output.from_input(host)))
    (check,) = of_type(resources, UPTIME)
    assert check["monitoredResource"]["labels"]["host"] == host


def test_every_resource_carries_the_env_app_and_managed_by_labels(declared: list[Any]) -> None:
    for resource in declared:
        if resource.typ in {COMPONENT, INVOKER, AGENT, READY}:  # no Google resource: no labels
            continue
        if resource.typ == DASHBOARD:
            labels = json.loads(resource.inputs["dashboardJson"])["labels"]
        else:
            labels = resource.inputs["userLabels"]
        assert REQUIRED_LABELS.items() <= labels.items(), resource.name


def test_child_names_derive_from_the_component_name(declared: list[Any]) -> None:
    names = [r.name for r in declared if r.typ != COMPONENT]
    assert all(n.startswith("mon-") for n in names)
    assert len(names) == len(set(names))


def test_component_exposes_the_dashboard_id_and_full_slo_names() -> None:
    seen: dict[str, Any] = {}

    def check(component: Monitoring) -> pulumi.Output[Any]:
        outputs = {"dashboard": component.dashboard_id, **component.slo_names}
        return pulumi.Output.all(**outputs).apply(seen.update)

    run_component(check=check)
    assert seen["dashboard"] == "mon-dashboard_id"
    assert set(seen) == {"dashboard", "api_availability", "api_latency", "data_freshness"}
    assert seen["data_freshness"].endswith("/serviceLevelObjectives/data-freshness")


def test_children_are_parented_to_the_component_and_wait_for_its_dependencies() -> None:
    mocks, monitor = run_component(depends_on_apis=True)
    (component_urn,) = [u for u in monitor.outputs if u.endswith("::mon")]
    (apis_urn,) = [u for u in monitor.resources if u.endswith("::apis")]
    children = [r.name for r in mocks.resources if r.typ.startswith("gcp:") and r.name != "apis"]
    assert [r for r in mocks.resources if r.typ == INVOKER]
    assert len(children) > 1
    for name in children:
        assert monitor.parents[name] == component_urn, name
        assert apis_urn in monitor.dependencies[name], f"{name} may start before the API is on"


def test_component_registers_its_dashboard_id_slo_names_and_uptime_check_id() -> None:
    _, monitor = run_component()
    (outputs,) = [o for u, o in monitor.outputs.items() if u.endswith("::mon")]
    assert set(outputs) == {"dashboard_id", "slo_names", "uptime_check_id"}
    assert set(outputs["slo_names"]) == {"api_availability", "api_latency", "data_freshness"}
