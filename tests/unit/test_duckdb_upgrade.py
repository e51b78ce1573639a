"""A DuckDB data dir whose tables an earlier contract shaped is brought up to the current one.

Earlier shapes are made by altering a store the current code wrote (a dropped column is a store
from before that column was added), then the adapter opens it as `flightpipe serve` does.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import pytest

from flightpipe.warehouse import WarehouseError
from flightpipe.warehouse.duckdb import DuckDBWarehouse
from flightpipe.warehouse.duckdb_upgrade import IncompatibleStore, stored_columns
from tests.factories import envelopes, make_event

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _store(path: Path, *alters: str) -> str:
    """A store with one flight written by the current code, then reshaped by `alters`."""
    event = make_event()
    warehouse = DuckDBWarehouse(path)
    warehouse.write(envelopes([event], NOW))
    warehouse.close()
    with duckdb.connect(str(path)) as conn:
        for statement in alters:
            conn.execute(statement)
    return event.flight_id


def _columns(path: Path, table: str) -> list[tuple[str, str, bool]]:
    with duckdb.connect(str(path), read_only=True) as conn:
        return [(c.name, c.kind, c.nullable) for c in stored_columns(conn, table)[0]]


def test_a_store_without_an_added_optional_column_gains_it_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "w.duckdb"
    old_id = _store(
        path,
        "ALTER TABLE events DROP COLUMN distance_mi",
        "ALTER TABLE flights DROP COLUMN distance_mi",
    )
    warehouse = DuckDBWarehouse(path)
    try:
        old = warehouse.get_flight(old_id)
        assert old is not None and old["distance_mi"] is None and old["air_time_min"] == 227
        new = make_event(distance_mi=733)
        assert warehouse.write(envelopes([new], NOW)) == 1
        stored = warehouse.get_flight(new.flight_id)
        assert stored is not None and stored["distance_mi"] == 733
        assert [e["distance_mi"] for e in warehouse.flight_events(old_id)] == [None]
    finally:
        warehouse.close()
    for table in ("events", "flights"):
        assert ("distance_mi", "int", True) in _columns(path, table)


def test_a_required_column_made_optional_loses_its_not_null(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb"
    _store(path, "ALTER TABLE events ALTER COLUMN tail_number SET NOT NULL")
    DuckDBWarehouse(path).close()
    assert ("tail_number", "string", True) in _columns(path, "events")


@pytest.mark.parametrize(
    ("alters", "reason"),
    [
        (
            ["ALTER TABLE events ALTER COLUMN distance_mi TYPE VARCHAR"],
            "events: column distance_mi retyped from string to int",
        ),
        (
            ["ALTER TABLE flights ADD COLUMN gate VARCHAR"],
            "flights: column gate removed (its stored values would be dropped)",
        ),
        (
            ["ALTER TABLE events ALTER COLUMN air_time_min TYPE DOUBLE"],
            "events: column air_time_min has type DOUBLE, which the contract never uses",
        ),
    ],
    ids=["retyped", "removed", "unknown-type"],
)
def test_an_incompatible_store_is_refused_in_one_line_and_left_as_it_was(
    tmp_path: Path, alters: list[str], reason: str
) -> None:
    path = tmp_path / "w.duckdb"
    # The events table also lacks a column it could gain: nothing is changed when one is refused.
    _store(path, "ALTER TABLE events DROP COLUMN dest", *alters)
    before = {t: _columns(path, t) for t in ("events", "flights")}
    with pytest.raises(IncompatibleStore) as caught:
        DuckDBWarehouse(path)
    message = str(caught.value)
    assert "\n" not in message and reason in message
    assert message.startswith("the data dir does not follow the current contract (")
    assert isinstance(caught.value, WarehouseError)  # the CLI prints it as one line, exit 1
    assert {t: _columns(path, t) for t in ("events", "flights")} == before
    with duckdb.connect(str(path), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)


def test_a_read_only_open_changes_nothing(tmp_path: Path) -> None:
    # The API alone may open the file read-only (the writer upgrades it).
    path = tmp_path / "w.duckdb"
    _store(path, "ALTER TABLE events DROP COLUMN distance_mi")
    DuckDBWarehouse(path, read_only=True).close()
    assert "distance_mi" not in [name for name, _, _ in _columns(path, "events")]
