"""Policies over everything the Pulumi program declares, for dev and prod, in both ingest modes.

Each test reads the recorded resource graph (see conftest.py) and states a rule that must hold for
every resource of a kind, not an echo of one configured value.

Why one module of ~550 lines: every policy reads the same recorded resource graph; a file per
resource kind would scatter the rules that span kinds (labels, names, dependencies).
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from typing import Any

import duckdb
import grants
import pytest
import sqlglot
import yaml
from sqlglot import exp

from flightpipe.contract import COLUMN_NAMES
from flightpipe.settings import ENV_VARS, load_settings
from flightpipe.warehouse.bigquery_sql import events_schema
from tests.infra.iam_model import resource_limit
from tests.infra.program import INFRA, PROJECT_NUMBER, Graph, graph_for, run_stack

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
PRIMITIVE = {"roles/owner", "roles/editor", "roles/viewer"}
PUBLIC = {"allUsers", "allAuthenticatedUsers"}
METRIC_WRITER = "roles/monitoring.metricWriter"
# The Cloud Monitoring service agent that signs uptime checks' OIDC tokens.
UPTIME_AGENT = (
    f"serviceAccount:service-{PROJECT_NUMBER}"
    "@gcp-sa-monitoring-notification.iam.gserviceaccount.com"
)


def _iam(graph: Graph) -> list[Any]:
    return [r for r in graph.resources if "iam" in r.type.lower() and "role" in r.inputs]


def _limited_to(grant: Any) -> str | None:
    """The resource a project-level grant's IAM condition limits it to (`dataset:<id>`, ...)."""
    return resource_limit((grant.inputs.get("condition") or {}).get("expression"))


def _where(grant: Any) -> str:
    """Where a grant applies: its IAM member type, or `project on <resource>` when limited."""
    limited = _limited_to(grant)
    return f"project on {limited}" if limited else str(grant.type)


def _agent_member(graph: Graph) -> str:
    """The Pub/Sub service agent's member."""
    (agent,) = [a for a in graph.of_type(AGENT) if a.inputs["service"] == "pubsub.googleapis.com"]
    return str(agent.outputs["member"])


def _runtime_accounts(graph: Graph) -> dict[str, str]:
    """Account id -> email of the bootstrap's runtime accounts (infra/grants.py)."""
    project = graph.config["gcp:project"]
    return {
        i: grants.service_account_email(project, i) for i in grants.RUNTIME_ACCOUNT_IDS.values()
    }


def _runtime_members(graph: Graph) -> dict[str, str]:
    """Account id -> member, for the runtime accounts this stack grants anything to."""
    granted = {g.inputs["member"] for g in _iam(graph)}
    members = {i: f"serviceAccount:{e}" for i, e in _runtime_accounts(graph).items()}
    return {i: m for i, m in members.items() if m in granted}


def _cloud_run(graph: Graph) -> list[Any]:
    return graph.of_type(RUN_SERVICE, WORKER_POOL)


def _container(resource: Any) -> dict[str, Any]:
    """The application container (the one that is not the metrics collector)."""
    (container,) = [
        c for c in resource.inputs["template"]["containers"] if c["name"] != "collector"
    ]
    return dict(container)


# --- Messaging -----------------------------------------------------------------------------


def test_every_source_subscription_dead_letters_after_five_attempts(graph: Graph) -> None:
    dead_letter_topics = {r.outputs["__id"] for r in graph.of_type(TOPIC) if "dlq" in r.name}
    sources = [
        s for s in graph.of_type(SUBSCRIPTION) if s.inputs["topic"] not in dead_letter_topics
    ]
    assert sources, "no subscription on the source topic"
    for sub in sources:
        policy = sub.inputs.get("deadLetterPolicy")
        assert policy, f"{sub.name} has no dead-letter policy"
        assert policy["deadLetterTopic"] in dead_letter_topics
        assert policy["maxDeliveryAttempts"] == 5
        assert sub.inputs["retryPolicy"]["minimumBackoff"]
        assert sub.inputs["retryPolicy"]["maximumBackoff"]
        assert 10 <= sub.inputs["ackDeadlineSeconds"] <= 600
        assert sub.inputs["messageRetentionDuration"]
        assert sub.inputs["expirationPolicy"] == {"ttl": ""}


def test_every_dead_letter_topic_has_an_inspection_subscription(graph: Graph) -> None:
    for sub in graph.of_type(SUBSCRIPTION):
        if policy := sub.inputs.get("deadLetterPolicy"):
            readers = [
                s
                for s in graph.of_type(SUBSCRIPTION)
                if s.inputs["topic"] == policy["deadLetterTopic"]
            ]
            assert readers, f"nothing reads the dead letters of {sub.name}"


def test_pubsub_service_agent_may_dead_letter_every_subscription(graph: Graph) -> None:
    """Publisher (to the dead-letter topic) and subscriber (ack on the source subscription), at
    project level: Pub/Sub resources cannot be named in an IAM condition (infra/grants.py)."""
    agent = _agent_member(graph)
    assert any(s.inputs.get("deadLetterPolicy") for s in graph.of_type(SUBSCRIPTION))
    held = {
        g.inputs["role"]
        for g in graph.of_type(PROJECT_IAM)
        if g.inputs["member"] == agent and not g.inputs.get("condition")
    }
    assert {"roles/pubsub.publisher", "roles/pubsub.subscriber"} <= held
    # Subscriptions are created after the agent may publish, or dead letters would be lost.
    assert not graph.of_type(TOPIC_IAM, SUBSCRIPTION_IAM)


# --- IAM -----------------------------------------------------------------------------------


def test_no_iam_member_is_public(graph: Graph) -> None:
    grants = _iam(graph)
    assert grants
    for grant in grants:
        members = {grant.inputs.get("member"), *grant.inputs.get("members", [])}
        assert not members & PUBLIC, f"{grant.name} grants {grant.inputs['role']} publicly"


def test_no_primitive_roles_and_no_authoritative_iam(graph: Graph) -> None:
    for grant in _iam(graph):
        assert grant.inputs["role"] not in PRIMITIVE, grant.name
        # Bindings and policies would silently remove grants made outside this program.
        assert "Binding" not in grant.type and "Policy" not in grant.type, grant.type


def test_no_service_account_keys(graph: Graph) -> None:
    assert not [r for r in graph.resources if r.type == "gcp:serviceaccount/key:Key"]


def test_runtime_accounts_hold_no_project_wide_data_roles(graph: Graph) -> None:
    # Project level only for roles that exist nowhere else and read no data: jobs (the API's
    # queries), trace spans and metric time series are project-scoped writes.
    allowed = {"roles/bigquery.jobUser", "roles/cloudtrace.agent", METRIC_WRITER}
    # Pub/Sub's roles too, the trade-off infra/grants.py states: Pub/Sub resources cannot be
    # named in an IAM condition, and the project holds only flightpipe's topics.
    allowed |= {"roles/pubsub.publisher", "roles/pubsub.subscriber"}
    # Data roles sit at project level too, but only with an IAM condition on one resource.
    runtime = set(_runtime_members(graph).values())
    for grant in graph.of_type(PROJECT_IAM):
        if grant.inputs["member"] in runtime:
            assert grant.inputs["role"] in allowed or _limited_to(grant), grant.name


def test_runtime_accounts_get_exactly_their_grants(graph: Graph) -> None:
    members = _runtime_members(graph)
    granted = {
        (_where(g), g.inputs["role"], g.inputs["member"])
        for g in _iam(graph)
        if g.inputs["member"] in members.values() and g.inputs["role"] != "roles/cloudtrace.agent"
    }
    api = members["flightpipe-api"]
    dataset = f"project on dataset:{graph.exports['dataset']}"
    expected = {
        (dataset, "roles/bigquery.dataViewer", api),
        (PROJECT_IAM, "roles/bigquery.jobUser", api),
        (PROJECT_IAM, METRIC_WRITER, api),
        (
            f"project on secret:{graph.exports['api_keys_secret']}",
            "roles/secretmanager.secretAccessor",
            api,
        ),
    }
    if graph.exports["ingest_mode"] == "subscriber":
        sub = members["flightpipe-subscriber"]
        expected |= {
            (PROJECT_IAM, "roles/pubsub.subscriber", sub),
            (PROJECT_IAM, "roles/pubsub.publisher", sub),
            (dataset, grants.table_writer_role(graph.config["gcp:project"]), sub),
            (PROJECT_IAM, METRIC_WRITER, sub),
        }
    else:
        assert "flightpipe-subscriber" not in members
    assert granted == expected


def test_api_is_invoked_only_by_the_analyst_group_and_the_uptime_check_agent(
    graph: Graph,
) -> None:
    invokers = [g for g in _iam(graph) if g.inputs["role"] == "roles/run.invoker"]
    members = sorted(g.inputs["member"] for g in invokers)
    assert members == sorted([graph.config["flightpipe:analystGroup"], UPTIME_AGENT])
    # At project level (infra/grants.py): the project's only Cloud Run service is the API.
    assert len(graph.of_type(RUN_SERVICE)) == 1
    for grant in invokers:
        assert grant.type == PROJECT_IAM, grant.type


def test_uptime_check_authenticates_as_the_agent_granted_invoker(graph: Graph) -> None:
    check = graph.one("gcp:monitoring/uptimeCheckConfig:UptimeCheckConfig")
    assert check.inputs["httpCheck"]["serviceAgentAuthentication"] == {"type": "OIDC_TOKEN"}
    assert check.inputs["monitoredResource"]["labels"]["host"] in graph.exports["api_url"]


def test_ingest_modes_write_the_table_through_exactly_one_path(graph: Graph) -> None:
    (source,) = [s for s in graph.of_type(SUBSCRIPTION) if s.inputs.get("deadLetterPolicy")]
    agent_editors = [
        g
        for g in graph.of_type(PROJECT_IAM)
        if g.inputs["member"] == _agent_member(graph) and _limited_to(g)
    ]
    if graph.exports["ingest_mode"] == "subscriber":
        assert "bigqueryConfig" not in source.inputs  # a pull subscription
        assert len(graph.of_type(WORKER_POOL)) == 1
        assert not agent_editors
    else:
        config = source.inputs["bigqueryConfig"]
        project = graph.config["gcp:project"]
        assert config["table"] == f"{project}.{graph.exports['dataset']}.{graph.exports['table']}"
        assert config["useTableSchema"] and config["writeMetadata"]
        assert not graph.of_type(WORKER_POOL)
        writer = grants.table_writer_role(project)
        assert [(g.inputs["role"], _limited_to(g)) for g in agent_editors] == [
            (writer, f"dataset:{graph.exports['dataset']}")
        ]
        # Its only data grant is that one, limited to the dataset; the rest is Pub/Sub's.
        assert {
            g.inputs["role"]
            for g in graph.of_type(PROJECT_IAM)
            if g.inputs["member"] == _agent_member(graph) and not _limited_to(g)
        } == {"roles/pubsub.publisher", "roles/pubsub.subscriber"}


# --- Cloud Run -----------------------------------------------------------------------------


def test_each_cloud_run_resource_runs_as_its_own_account(graph: Graph) -> None:
    emails = set(_runtime_accounts(graph).values())
    assert not graph.of_type(ACCOUNT)  # the bootstrap's (infra/grants.py RUNTIME_ACCOUNT_IDS)
    accounts = [r.inputs["template"]["serviceAccount"] for r in _cloud_run(graph)]
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
    for resource in _cloud_run(graph):
        image = _container(resource)["image"]
        assert "@sha256:" in image and image in pushed, image


def test_api_service_has_probes_boost_and_scaling_bounds(graph: Graph) -> None:
    api = graph.one(RUN_SERVICE)
    template = api.inputs["template"]
    container = _container(api)
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["startupCpuBoost"] is True
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}
    scaling = template["scaling"]
    assert 0 <= scaling["minInstanceCount"] <= scaling["maxInstanceCount"]
    assert template["maxInstanceRequestConcurrency"] >= 1
    assert api.inputs["ingress"].startswith("INGRESS_TRAFFIC_")


def test_each_cloud_run_resource_ships_its_metrics_through_a_pinned_collector(graph: Graph) -> None:
    resources = _cloud_run(graph)
    assert len(resources) == (2 if graph.exports["ingest_mode"] == "subscriber" else 1)
    writers = {
        g.inputs["member"] for g in graph.of_type(PROJECT_IAM) if g.inputs["role"] == METRIC_WRITER
    }
    members = {e: f"serviceAccount:{e}" for e in _runtime_accounts(graph).values()}
    for resource in resources:
        containers = resource.inputs["template"]["containers"]
        (collector,) = [c for c in containers if c["name"] == "collector"]
        # Pinned by digest (components/collector.py names the source of the digest).
        assert re.fullmatch(r"[^@\s]+:[\w.]+@sha256:[0-9a-f]{64}", collector["image"])
        assert collector["args"] == ["--config=env:OTELCOL_CONFIG"]
        app = _container(resource)
        # Started after the app, so the first scrape finds /metrics.
        assert collector["dependsOns"] == [app["name"]]
        assert "ports" not in collector  # only the app takes requests
        # The sidecar's account writes the series.
        assert members[resource.inputs["template"]["serviceAccount"]] in writers, resource.name


def test_collectors_label_series_with_the_resource_they_run_in(graph: Graph) -> None:
    # What the dashboards and alerts filter on (components/monitoring.py) is what the collector's
    # resource processor sets: location, cluster and namespace = the Cloud Run resource's name.
    for resource in _cloud_run(graph):
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
        assert "PORT" not in _env(resource)


def test_every_container_of_the_api_instance_has_the_api_cpu_allocation(graph: Graph) -> None:
    # cpu_idle is per container, and a container that sets `resources` without it gets false
    # (pulumi-gcp v8.41.1 ServiceTemplateContainerResourcesArgs.cpu_idle): the collector would
    # keep CPU allocated between requests while the API container says request-driven.
    api = graph.one(RUN_SERVICE)
    values = {
        c["name"]: c["resources"].get("cpuIdle") for c in api.inputs["template"]["containers"]
    }
    assert values[_container(api)["name"]] is True
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
    for resource in _cloud_run(graph):
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


def _env(resource: Any) -> dict[str, Any]:
    return {e["name"]: e for e in _container(resource).get("envs", [])}


def test_injected_env_names_are_exactly_names_the_services_read(graph: Graph) -> None:
    for resource in _cloud_run(graph):
        names = set(_env(resource))
        assert names <= set(ENV_VARS), names - set(ENV_VARS)
        assert "PORT" not in names  # Cloud Run sets it


def test_injected_env_loads_into_settings_and_names_the_real_resources(graph: Graph) -> None:
    required = {"FLIGHTPIPE_WAREHOUSE", "GOOGLE_CLOUD_PROJECT", "FLIGHTPIPE_DATASET"}
    for resource in _cloud_run(graph):
        env = _env(resource)
        assert required <= set(env)
        plain = {k: str(v["value"]) for k, v in env.items() if "value" in v}
        settings = load_settings(plain)  # raises ConfigError on a bad or contradictory value
        assert settings.warehouse == "bigquery"
        assert settings.google_cloud_project == graph.config["gcp:project"]
        assert settings.dataset == graph.exports["dataset"]
    api = graph.one(RUN_SERVICE)
    # The API serves as many requests at once as Cloud Run may send one instance.
    api_env = {k: str(v["value"]) for k, v in _env(api).items() if "value" in v}
    concurrency = api.inputs["template"]["maxInstanceRequestConcurrency"]
    assert load_settings(api_env).http_threads == concurrency
    api_keys = _env(api)["FLIGHTPIPE_API_KEYS"]
    assert api_keys["valueSource"]["secretKeyRef"]["secret"] == graph.exports["api_keys_secret"]
    for pool in graph.of_type(WORKER_POOL):
        env = {k: str(v["value"]) for k, v in _env(pool).items()}
        settings = load_settings(env)
        assert settings.broker == "pubsub"
        assert settings.topic == graph.exports["topic"]
        assert settings.subscription == graph.exports["subscription"]
        assert settings.dead_letter_topic == graph.exports["dead_letter_topic"]
        source = graph.one(SUBSCRIPTION, "messaging-subscription")
        assert settings.ack_deadline_seconds == source.inputs["ackDeadlineSeconds"]
        max_attempts = source.inputs["deadLetterPolicy"]["maxDeliveryAttempts"]
        assert settings.max_delivery_attempts == max_attempts


# --- Warehouse -----------------------------------------------------------------------------


def _events(graph: Graph) -> Any:
    return next(t for t in graph.of_type(TABLE) if t.inputs["tableId"] == "events")


def test_bigquery_schema_is_the_shared_contract(graph: Graph) -> None:
    schema = json.loads(_events(graph).inputs["schema"])
    contract = [{k: c[k] for k in ("name", "type", "mode")} for c in events_schema()]
    got = [{k: c[k] for k in ("name", "type", "mode")} for c in schema]
    assert got[: len(contract)] == contract
    extra = {c["name"] for c in got[len(contract) :]}
    if graph.exports["ingest_mode"] == "subscriber":
        assert not extra
    else:  # what write_metadata adds besides message_id and publish_time, all nullable
        assert extra == {"subscription_name", "attributes"}
        assert {c["mode"] for c in got[len(contract) :]} == {"NULLABLE"}


def test_events_table_is_partitioned_by_flight_date_and_clustered(graph: Graph) -> None:
    table = _events(graph)
    assert table.inputs["timePartitioning"] == {"type": "DAY", "field": "flight_date"}
    assert table.inputs["clusterings"] == ["carrier", "origin"]


def test_prod_protects_its_data_and_dev_can_be_destroyed(graph: Graph) -> None:
    protected = graph.stack == "prod"
    protectable = [*graph.of_type(TABLE), *_cloud_run(graph)]
    assert protectable
    for resource in protectable:
        assert resource.inputs["deletionProtection"] is protected, resource.name
    # The dataset is the bootstrap's, protected in every stack
    # (test_iam_simulation.py::test_the_dataset_is_the_bootstraps_...).
    assert not graph.of_type("gcp:bigquery/dataset:Dataset")


def _run_view(sql: str, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Run the BigQuery view SQL on DuckDB over an `events` table holding `rows`."""
    tree = sqlglot.parse_one(sql, read="bigquery")
    for table in tree.find_all(exp.Table):
        table.replace(exp.to_table("events"))
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE events (event_id VARCHAR, flight_id VARCHAR, event_time TIMESTAMP,"
        " publish_time TIMESTAMP, status VARCHAR,"
        " flight_date DATE DEFAULT DATE '2013-01-01', message_id VARCHAR DEFAULT 'm')"
    )
    con.executemany(
        "INSERT INTO events (event_id, flight_id, event_time, publish_time, status)"
        " VALUES (?, ?, ?, ?, ?)",
        rows,
    )
    query = tree.sql(dialect="duckdb").replace(", ".join(COLUMN_NAMES), "*")
    return con.execute(
        f"SELECT flight_id, event_id, status FROM ({query}) ORDER BY flight_id"
    ).fetchall()


def test_current_view_keeps_the_latest_event_of_each_flight() -> None:
    view = next(t for t in graph_for("dev", "subscriber").of_type(TABLE) if "view" in t.inputs)
    assert view.inputs["tableId"] == "flights_current"
    assert view.inputs["view"]["useLegacySql"] is False
    sql = view.inputs["view"]["query"]
    assert "`flightpipe-dev.flights.events`" in sql
    rows = [
        ("e1", "F1", "2013-01-01 05:00", "2013-01-01 05:00", "scheduled"),
        ("e2", "F1", "2013-01-01 06:00", "2013-01-01 06:00", "departed"),
        ("e2", "F1", "2013-01-01 06:00", "2013-01-01 06:05", "departed"),  # redelivered
        ("e3", "F2", "2013-01-01 07:00", "2013-01-01 07:00", "scheduled"),
        ("e4", "F2", "2013-01-01 07:00", "2013-01-01 07:01", "cancelled"),  # later publish wins
    ]
    assert _run_view(sql, rows) == [("F1", "e2", "departed"), ("F2", "e4", "cancelled")]


# --- Labels, outputs ------------------------------------------------------------


def _takes_labels(type_token: str) -> bool:
    package, module_path, cls_name = type_token.split(":")
    if package == "docker-build":
        module = importlib.import_module("pulumi_docker_build")
    elif package == "gcp":
        module = importlib.import_module(f"pulumi_gcp.{module_path.split('/')[0]}")
    else:
        return False
    cls = getattr(module, cls_name)
    return "labels" in inspect.signature(cls._internal_init).parameters


def test_every_resource_that_takes_labels_carries_env_app_managed_by(graph: Graph) -> None:
    labelled = [r for r in graph.resources if _takes_labels(r.type)]
    assert len(labelled) > 10
    want = {"env": graph.stack, "app": "flightpipe", "managed-by": "pulumi"}
    for resource in labelled:
        labels = resource.inputs.get("labels") or {}
        assert want.items() <= labels.items(), f"{resource.type} {resource.name}: {labels}"


def test_stack_exports_what_operators_and_ci_need(graph: Graph) -> None:
    for key in ("api_url", "topic", "subscription", "dataset", "table"):
        assert graph.exports[key]
    assert graph.exports["api_url"].startswith("https://")
    for key in ("api_image_digest", "subscriber_image_digest"):
        assert graph.exports[key].startswith("sha256:")


# --- Configuration -------------------------------------------------------------------------


def test_unknown_ingest_mode_is_refused_before_any_resource() -> None:
    with pytest.raises(ValueError, match="ingestMode"):
        run_stack("dev", ingestMode="kafka")


def test_every_config_key_the_program_reads_is_documented_in_pulumi_yaml() -> None:
    source = (INFRA / "config.py").read_text()
    read = set(re.findall(r'cfg\.(?:get|get_int|get_bool|get_object|require)\("(\w+)"\)', source))
    declared = yaml.safe_load((INFRA / "Pulumi.yaml").read_text())["config"]
    assert read == set(declared)
    for key, spec in declared.items():
        assert spec.get("description"), f"{key} has no description"
        assert spec.get("type") in {"string", "integer", "boolean", "array"}, key
    for stack in ("dev", "prod"):
        stack_keys = yaml.safe_load((INFRA / f"Pulumi.{stack}.yaml").read_text())["config"]
        unknown = {k for k in stack_keys if k.startswith("flightpipe:")} - {
            f"flightpipe:{k}" for k in declared
        }
        assert not unknown, f"Pulumi.{stack}.yaml sets undeclared keys {unknown}"


def test_the_plain_e2e_key_is_mounted_nowhere_and_no_runtime_account_reads_it(
    graph: Graph,
) -> None:
    plain = graph.exports["e2e_api_key_secret"]
    assert plain and plain != graph.exports["api_keys_secret"]
    for resource in _cloud_run(graph):
        for env in _env(resource).values():
            ref = env.get("valueSource", {}).get("secretKeyRef", {})
            assert ref.get("secret") != plain, resource.name
    readers = {
        g.inputs["member"]
        for g in graph.of_type("gcp:secretmanager/secretIamMember:SecretIamMember")
        if g.inputs["secretId"] == plain
    }
    assert not readers & set(_runtime_members(graph).values())
