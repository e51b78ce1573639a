"""The BigQuery table follows the contract's evolution in place; a replacement cannot drop it.

`pulumi up` sends the `events` table's new schema to the provider, which decides per change
whether it updates the table in place or replaces it. The stand-in below is that decision as
terraform-provider-google states it, with pulumi-gcp's replacement order and the provider's
deletion protection; the tests put the program's real schema and protection through it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from flightpipe.contract import COLUMNS, Column, evolve
from flightpipe.schemas import latest_release, released_columns
from flightpipe.warehouse.bigquery_sql import TYPES
from tests.infra.program import INGEST_MODES, Graph, Recorded, graph_for

TABLE = "gcp:bigquery/table:Table"
SUBSCRIBER_TYPES = ("gcp:cloudrunv2/workerPool:WorkerPool", "gcp:cloudrunv2/service:Service")
# resourceBigQueryTableSchemaIsChangeable and friends,
# hashicorp/terraform-provider-google google/services/bigquery/resource_bigquery_table.go
# (read at commit 00b984c6987304290117e54f87cdfd38f2be0685; the 6.x line pulumi-gcp 8 bundles).
_SAME_TYPES = ({"INTEGER", "INT64"}, {"FLOAT", "FLOAT64"}, {"BOOLEAN", "BOOL"})


def _type_eq(old: str, new: str) -> bool:
    """bigQueryTableTypeEq: case-insensitive, with the legacy/standard SQL aliases equal."""
    a, b = old.upper(), new.upper()
    return a == b or any(a in s and b in s for s in _SAME_TYPES)


def _mode(field: dict[str, Any]) -> str:
    """bigQueryTableNormalizeMode: no mode is NULLABLE."""
    return str(field.get("mode") or "NULLABLE").upper()


def _field_changeable(old: dict[str, Any], new: dict[str, Any]) -> bool:
    if old.get("name") != new.get("name"):
        return False
    if old.get("type") and new.get("type") and not _type_eq(old["type"], new["type"]):
        return False
    # bigQueryTableModeIsForceNew: only REQUIRED -> NULLABLE changes in place.
    if _mode(old) != _mode(new) and (_mode(old), _mode(new)) != ("REQUIRED", "NULLABLE"):
        return False
    if "fields" in old or "fields" in new:
        return schema_is_changeable(old.get("fields", []), new.get("fields", []), top_level=False)
    return True  # description, policyTags, defaultValueExpression: changeable


def schema_is_changeable(
    old: list[dict[str, Any]], new: list[dict[str, Any]], *, top_level: bool = True
) -> bool:
    """resourceBigQueryTableSchemaIsChangeable for a native (not external) table.

    An added REQUIRED column forces a new table; a top-level column may be dropped in place
    (resourceBigQueryTableColumnDrop runs `ALTER TABLE ... DROP COLUMN`) but not while columns
    are also added ("user intention can be ambiguous (e.g. column renaming)").
    """
    before = {f["name"]: f for f in old}
    after = {f["name"]: f for f in new}
    if any(_mode(f) == "REQUIRED" for name, f in after.items() if name not in before):
        return False
    dropped = [name for name in before if name not in after]
    if dropped and not top_level:
        return False
    kept = [name for name in before if name in after]
    if not all(_field_changeable(before[name], after[name]) for name in kept):
        return False
    return not dropped or len(after) == len(kept)


class ProviderError(Exception):
    """What `pulumi up` reports when the provider refuses a step."""


def apply_schema(state: dict[str, Any], new_schema: list[dict[str, Any]]) -> str:
    """One `pulumi up` of the table's schema against `state`; returns "update" or "replace".

    A ForceNew diff is a replacement, and pulumi-gcp replaces `google_bigquery_table` delete
    first (pulumi/pulumi-gcp provider/resources.go: `"google_bigquery_table":
    {DeleteBeforeReplace: true}`); the delete is refused while `deletion_protection` is true in
    state (resourceBigQueryTableDelete: "cannot destroy table %v without setting
    deletion_protection=false and running `terraform apply`"), so the rows stay.
    """
    if schema_is_changeable(state["schema"], new_schema):
        state["schema"] = new_schema
        return "update"
    if state["deletion_protection"]:
        raise ProviderError(
            f"cannot destroy table {state['id']} without setting deletion_protection=false "
            "and running `terraform apply`"
        )
    state.update(schema=new_schema, rows=0)
    return "replace"


def _bigquery(columns: list[Column] | tuple[Column, ...]) -> list[dict[str, Any]]:
    """Columns as the program's schema fields (bigquery_sql.events_schema's mapping)."""
    return [
        {"name": c.name, "type": TYPES[c.kind], "mode": "NULLABLE" if c.nullable else "REQUIRED"}
        for c in columns
    ]


def _events(graph: Graph) -> Recorded:
    return next(t for t in graph.of_type(TABLE) if t.inputs["tableId"] == "events")


def _deployed(graph: Graph, columns: list[Column] | tuple[Column, ...]) -> dict[str, Any]:
    """The events table as a stack deployed from `columns` left it, with rows in it."""
    schema = json.loads(_events(graph).inputs["schema"])
    names = {c.name for c in COLUMNS}
    metadata = [f for f in schema if f["name"] not in names]  # Pub/Sub's, if that mode writes
    return {
        "id": "projects/p/datasets/flightpipe/tables/events",
        "schema": _bigquery(columns) + metadata,
        "deletion_protection": _events(graph).inputs["deletionProtection"],
        "rows": 1_000,
    }


def test_the_released_table_takes_the_current_schema_in_place(graph: Graph) -> None:
    state = _deployed(graph, released_columns(latest_release()))
    assert apply_schema(state, json.loads(_events(graph).inputs["schema"])) == "update"
    assert state["rows"] == 1_000


def test_an_added_optional_field_is_an_in_place_update(graph: Graph) -> None:
    state = _deployed(graph, COLUMNS)
    gate = Column("gate", "string", True, "")
    assert evolve(COLUMNS, [*COLUMNS, gate]).refused == ()
    assert apply_schema(state, _deployed(graph, [*COLUMNS, gate])["schema"]) == "update"
    assert state["rows"] == 1_000


def _with(name: str, kind: str | None = None, nullable: bool | None = None) -> list[Column]:
    """The contract with one column changed."""
    return [
        Column(c.name, kind or c.kind, c.nullable if nullable is None else nullable, "")  # type: ignore[arg-type]
        if c.name == name
        else c
        for c in COLUMNS
    ]


@pytest.mark.parametrize("mode", INGEST_MODES)
@pytest.mark.parametrize(
    "change",
    [
        _with("distance_mi", kind="string"),
        [*COLUMNS, Column("gate", "string", False, "")],
        _with("tail_number", nullable=False),
    ],
    ids=["retyped", "added-required", "made-required"],
)
def test_a_refused_change_would_replace_the_table_and_protection_stops_it(
    mode: str, change: list[Column]
) -> None:
    graph = graph_for("prod", mode)  # dev stacks may be destroyed: no protection there
    assert evolve(COLUMNS, change).refused != ()  # the contract test refuses it first
    state = _deployed(graph, COLUMNS)
    assert state["deletion_protection"] is True
    with pytest.raises(ProviderError, match=r"^cannot destroy table .* deletion_protection=false"):
        apply_schema(state, _deployed(graph, change)["schema"])
    assert state["rows"] == 1_000 and state["schema"] == _deployed(graph, COLUMNS)["schema"]


def test_a_removed_field_would_be_dropped_in_place_so_the_contract_refuses_it(
    graph: Graph,
) -> None:
    # The provider drops a removed top-level column with ALTER TABLE DROP COLUMN, no
    # replacement and no protection: only the contract's rule keeps its data.
    without = [c for c in COLUMNS if c.name != "distance_mi"]
    state = _deployed(graph, COLUMNS)
    assert apply_schema(state, _deployed(graph, without)["schema"]) == "update"
    assert evolve(COLUMNS, without).refused == (
        "column distance_mi removed (its stored values would be dropped)",
    )


def test_the_stand_in_follows_the_providers_mode_and_type_rules() -> None:
    base = [{"name": "a", "type": "INTEGER", "mode": "REQUIRED"}]
    assert schema_is_changeable(base, [{"name": "a", "type": "INT64", "mode": "NULLABLE"}])
    assert not schema_is_changeable(base, [{"name": "a", "type": "STRING", "mode": "REQUIRED"}])
    assert not schema_is_changeable(
        [{"name": "a", "type": "STRING"}], [{"name": "a", "type": "STRING", "mode": "REQUIRED"}]
    )
    # Dropping and adding together is ForceNew (it may be a rename).
    assert not schema_is_changeable(base, [{"name": "b", "type": "INTEGER"}])


def test_what_writes_the_table_is_updated_after_the_table_has_its_schema(graph: Graph) -> None:
    # The engine updates the table first: the subscriber revision (insertAll would reject a
    # field the table lacks, "no such field") or, in the other ingest mode, the BigQuery
    # subscription (which writes with the table's schema).
    events = _events(graph)
    if graph.exports["ingest_mode"] == "subscriber":
        writers = [r for r in graph.of_type(*SUBSCRIBER_TYPES) if "subscriber" in r.name]
    else:
        writers = [
            r
            for r in graph.of_type("gcp:pubsub/subscription:Subscription")
            if r.inputs.get("bigqueryConfig")
        ]
    assert writers
    for resource in writers:
        assert events in graph.depends_on(resource), resource.name
