"""Policies over the Cloud Run resources the program declares (the API service, the subscriber
worker pool), for dev and prod, in both ingest modes: identity, images, probes and scaling, the
metrics collector sidecar, and the environment the services read.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flightpipe.settings import ENV_VARS, load_settings
from tests.infra.program import INFRA, Graph
from tests.infra.queries import (
    ACCOUNT,
    METRIC_WRITER,
    PROJECT_IAM,
    RUN_SERVICE,
    SUBSCRIPTION,
    WORKER_POOL,
    app_container,
    app_env,
    cloud_run,
    runtime_accounts,
)


def test_each_cloud_run_resource_runs_as_its_own_account(graph: Graph) -> None:
    emails = set(runtime_accounts(graph).values())
    assert not graph.of_type(ACCOUNT)  # the bootstrap's (infra/grants.py RUNTIME_ACCOUNT_IDS)
    accounts = [r.inputs["template"]["serviceAccount"] for r in cloud_run(graph)]
    assert len(set(accounts)) == len(accounts)
    assert set(accounts) <= emails
    assert not [a for a in accounts if a.startswith("flightpipe-deployer")]


def test_each_cloud_run_resource_runs_a_pushed_image_by_digest(graph: Graph) -> None:
    pushed = {r.outputs["ref"] for r in graph.of_type("docker-build:index:Image")}
    for image in graph.of_type("docker-build:index:Image"):
        assert image.inputs["push"] is True
        assert image.inputs["dockerfile"]["location"].endswith("/services/Dockerfile")
        # The image's target is a stage of that Dockerfile named after its service.
        dockerfile = (INFRA.parent / "services" / "Dockerfile").read_text()
        assert f" AS {image.inputs['target']}\n" in dockerfile  # a target named as its service
    for resource in cloud_run(graph):
        image = app_container(resource)["image"]
        assert "@sha256:" in image and image in pushed, image


def test_api_service_has_probes_boost_and_scaling_bounds(graph: Graph) -> None:
    api = graph.one(RUN_SERVICE)
    template = api.inputs["template"]
    container = app_container(api)
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["startupCpuBoost"] is True
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}
    scaling = template["scaling"]
    assert 0 <= scaling["minInstanceCount"] <= scaling["maxInstanceCount"]
    assert template["maxInstanceRequestConcurrency"] >= 1
    assert api.inputs["ingress"].startswith("INGRESS_TRAFFIC_")


def test_each_cloud_run_resource_ships_its_metrics_through_a_pinned_collector(graph: Graph) -> None:
    resources = cloud_run(graph)
    assert len(resources) == (2 if graph.exports["ingest_mode"] == "subscriber" else 1)
    writers = {
        g.inputs["member"] for g in graph.of_type(PROJECT_IAM) if g.inputs["role"] == METRIC_WRITER
    }
    members = {e: f"serviceAccount:{e}" for e in runtime_accounts(graph).values()}
    for resource in resources:
        containers = resource.inputs["template"]["containers"]
        (collector,) = [c for c in containers if c["name"] == "collector"]
        # Pinned by digest (components/collector.py names the source of the digest).
        assert re.fullmatch(r"[^@\s]+:[\w.]+@sha256:[0-9a-f]{64}", collector["image"])
        assert collector["args"] == ["--config=env:OTELCOL_CONFIG"]
        app = app_container(resource)
        # Started after the app, so the first scrape finds /metrics.
        assert collector["dependsOns"] == [app["name"]]
        assert "ports" not in collector  # only the app takes requests
        # The sidecar's account writes the series.
        assert members[resource.inputs["template"]["serviceAccount"]] in writers, resource.name


def test_collectors_label_series_with_the_resource_they_run_in(graph: Graph) -> None:
    # What the dashboards and alerts filter on (components/monitoring.py) is what the collector's
    # resource processor sets: location, cluster and namespace = the Cloud Run resource's name.
    for resource in cloud_run(graph):
        (collector,) = [
            c for c in resource.inputs["template"]["containers"] if c["name"] == "collector"
        ]
        (env,) = collector["envs"]
        config = json.loads(env["value"])
        attrs = {a["key"]: a["value"] for a in config["processors"]["resource"]["attributes"]}
        assert attrs == {
            "location": resource.inputs["location"],
            "cluster": "__run__",
            "namespace": resource.inputs["name"],
        }
        (job,) = config["receivers"]["prometheus"]["config"]["scrape_configs"]
        assert job["job_name"] == resource.inputs["name"]
        assert config["exporters"] == {
            "googlemanagedprometheus": {"project": graph.config["gcp:project"]}
        }
        assert "PORT" not in app_env(resource)


def test_every_container_of_the_api_instance_has_the_api_cpu_allocation(graph: Graph) -> None:
    # cpu_idle is per container, and a container that sets `resources` without it gets false
    # (pulumi-gcp v8.41.1 ServiceTemplateContainerResourcesArgs.cpu_idle): the collector would
    # keep CPU allocated between requests while the API container says request-driven.
    api = graph.one(RUN_SERVICE)
    values = {
        c["name"]: c["resources"].get("cpuIdle") for c in api.inputs["template"]["containers"]
    }
    assert values[app_container(api)["name"]] is True
    assert set(values.values()) == {True}, values


_SET_WHERE = re.compile(
    r'set\(attributes\["([^"]+)"\], attributes\["([^"]+)"\]\) where attributes\["\2"\] != nil'
)


def _instance_label(config: dict[str, Any], resource: dict[str, str]) -> str:
    """`instance` as the collector writes it: the transform's statements over `resource`.

    Only the statement shape the program uses is understood (anything else fails the test).
    """
    attrs = dict(resource)
    (group,) = config["processors"]["transform"]["metric_statements"]
    assert group["context"] == "resource"
    for statement in group["statements"]:
        match = _SET_WHERE.fullmatch(statement)
        assert match, statement
        target, source = match.groups()
        if attrs.get(source) is not None:
            attrs[target] = attrs[source]
    return attrs["service.instance.id"]


def test_two_instances_of_a_cloud_run_resource_write_different_series(graph: Graph) -> None:
    """What each instance's collector has before its transform, by platform.

    The prometheus receiver sets service.instance.id to the scrape target, the same on every
    instance, and turns the app's `target_info` labels into resource attributes
    (open-telemetry/opentelemetry-specification compatibility/prometheus_and_openmetrics.md).
    The gcp detector adds the metadata server's instance id as faas.id on a Cloud Run service
    (K_CONFIGURATION set) and nothing on a worker pool at this collector's version
    (components/collector.py cites the detector's and contrib's source).
    """
    for resource in cloud_run(graph):
        (collector,) = [
            c for c in resource.inputs["template"]["containers"] if c["name"] == "collector"
        ]
        config = json.loads(collector["envs"][0]["value"])
        (job,) = config["receivers"]["prometheus"]["config"]["scrape_configs"]
        (target,) = job["static_configs"][0]["targets"]
        labels = set()
        for n in (1, 2):
            seen = {"service.instance.id": target, "service_instance_id": f"app-{n}"}
            if resource.type == RUN_SERVICE:
                seen["faas.id"] = f"metadata-{n}"
            labels.add(_instance_label(config, seen))
        assert len(labels) == 2, (resource.name, labels)


def test_the_project_is_never_read_before_its_apis_are_enabled() -> None:
    # get_project reads the Resource Manager API, which a fresh project has not enabled yet: the
    # one call (the project number in the API key secret's condition) must wait for resources
    # made after the APIs (the mocks do not see invoke options, so the source is read).
    calls = []
    for path in INFRA.rglob("*.py"):
        text = path.read_text()
        for match in re.finditer(r"get_project(_output)?\(", text):
            calls.append((path.name, text[match.start() : match.start() + 300]))
    assert calls, "the program reads the project number somewhere"
    for where, call in calls:
        assert "InvokeOutputOptions(depends_on=" in call, where


def test_subscriber_worker_pool_always_has_an_instance(graph: Graph) -> None:
    for pool in graph.of_type(WORKER_POOL):
        assert pool.inputs["scaling"]["manualInstanceCount"] >= 1


def test_injected_env_names_are_exactly_names_the_services_read(graph: Graph) -> None:
    for resource in cloud_run(graph):
        names = set(app_env(resource))
        assert names <= set(ENV_VARS), names - set(ENV_VARS)
        assert "PORT" not in names  # Cloud Run sets it


def test_injected_env_loads_into_settings_and_names_the_real_resources(graph: Graph) -> None:
    required = {"FLIGHTPIPE_WAREHOUSE", "GOOGLE_CLOUD_PROJECT", "FLIGHTPIPE_DATASET"}
    for resource in cloud_run(graph):
        env = app_env(resource)
        assert required <= set(env)
        plain = {k: str(v["value"]) for k, v in env.items() if "value" in v}
        settings = load_settings(plain)  # raises ConfigError on a bad or contradictory value
        assert settings.warehouse == "bigquery"
        assert settings.google_cloud_project == graph.config["gcp:project"]
        assert settings.dataset == graph.exports["dataset"]
    api = graph.one(RUN_SERVICE)
    # The API serves as many requests at once as Cloud Run may send one instance.
    api_env = {k: str(v["value"]) for k, v in app_env(api).items() if "value" in v}
    concurrency = api.inputs["template"]["maxInstanceRequestConcurrency"]
    assert load_settings(api_env).http_threads == concurrency
    api_keys = app_env(api)["FLIGHTPIPE_API_KEYS"]
    assert api_keys["valueSource"]["secretKeyRef"]["secret"] == graph.exports["api_keys_secret"]
    for pool in graph.of_type(WORKER_POOL):
        env = {k: str(v["value"]) for k, v in app_env(pool).items()}
        settings = load_settings(env)
        assert settings.broker == "pubsub"
        assert settings.topic == graph.exports["topic"]
        assert settings.subscription == graph.exports["subscription"]
        assert settings.dead_letter_topic == graph.exports["dead_letter_topic"]
        source = graph.one(SUBSCRIPTION, "messaging-subscription")
        assert settings.ack_deadline_seconds == source.inputs["ackDeadlineSeconds"]
        max_attempts = source.inputs["deadLetterPolicy"]["maxDeliveryAttempts"]
        assert settings.max_delivery_attempts == max_attempts
