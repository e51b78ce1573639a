"""Policies over everything the Pulumi program declares, for dev and prod, in both ingest modes.

Each test reads the recorded resource graph (see conftest.py) and states a rule that must hold for
every resource of a kind, not an echo of one configured value: messaging, IAM, the warehouse,
labels, outputs and configuration. The Cloud Run resources' rules are tests/infra/test_cloud_run.py.
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
from flightpipe.warehouse.bigquery_sql import events_schema
from tests.infra.program import INFRA, PROJECT_NUMBER, Graph, graph_for, run_stack
from tests.infra.queries import (
    METRIC_WRITER,
    PROJECT_IAM,
    RUN_SERVICE,
    SUBSCRIPTION,
    SUBSCRIPTION_IAM,
    TABLE,
    TOPIC,
    TOPIC_IAM,
    WORKER_POOL,
    app_env,
    cloud_run,
    grant_scope,
    iam_grants,
    limited_to,
    pubsub_agent,
    runtime_members,
)

PRIMITIVE = {"roles/owner", "roles/editor", "roles/viewer"}
PUBLIC = {"allUsers", "allAuthenticatedUsers"}
# The Cloud Monitoring service agent that signs uptime checks' OIDC tokens.
UPTIME_AGENT = (
    f"serviceAccount:service-{PROJECT_NUMBER}"
    "@gcp-sa-monitoring-notification.iam.gserviceaccount.com"
)


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
    agent = pubsub_agent(graph)
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
    grants = iam_grants(graph)
    assert grants
    for grant in grants:
        members = {grant.inputs.get("member"), *grant.inputs.get("members", [])}
        assert not members & PUBLIC, f"{grant.name} grants {grant.inputs['role']} publicly"


def test_no_primitive_roles_and_no_authoritative_iam(graph: Graph) -> None:
    for grant in iam_grants(graph):
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
    runtime = set(runtime_members(graph).values())
    for grant in graph.of_type(PROJECT_IAM):
        if grant.inputs["member"] in runtime:
            assert grant.inputs["role"] in allowed or limited_to(grant), grant.name


def test_runtime_accounts_get_exactly_their_grants(graph: Graph) -> None:
    members = runtime_members(graph)
    granted = {
        (grant_scope(g), g.inputs["role"], g.inputs["member"])
        for g in iam_grants(graph)
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
    invokers = [g for g in iam_grants(graph) if g.inputs["role"] == "roles/run.invoker"]
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
        if g.inputs["member"] == pubsub_agent(graph) and limited_to(g)
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
        assert [(g.inputs["role"], limited_to(g)) for g in agent_editors] == [
            (writer, f"dataset:{graph.exports['dataset']}")
        ]
        # Its only data grant is that one, limited to the dataset; the rest is Pub/Sub's.
        assert {
            g.inputs["role"]
            for g in graph.of_type(PROJECT_IAM)
            if g.inputs["member"] == pubsub_agent(graph) and not limited_to(g)
        } == {"roles/pubsub.publisher", "roles/pubsub.subscriber"}


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
    protectable = [*graph.of_type(TABLE), *cloud_run(graph)]
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
    for resource in cloud_run(graph):
        for env in app_env(resource).values():
            ref = env.get("valueSource", {}).get("secretKeyRef", {})
            assert ref.get("secret") != plain, resource.name
    readers = {
        g.inputs["member"]
        for g in graph.of_type("gcp:secretmanager/secretIamMember:SecretIamMember")
        if g.inputs["secretId"] == plain
    }
    assert not readers & set(runtime_members(graph).values())
