"""Bring a DuckDB data dir written by an earlier release up to the current contract.

At start-up the writer compares each table's stored columns with `contract.COLUMNS` under the
contract's evolution rules (`contract.evolve`): added nullable columns are added (stored rows
read them as null) and required columns made nullable lose their NOT NULL, in one transaction;
a removed, retyped or newly required column stops the start with one line naming each, before
anything is changed. Reads and writes name their columns, so an added column's place at the end
of the table does not matter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

import duckdb

from flightpipe import contract
from flightpipe.warehouse.duckdb_sql import TYPES
from flightpipe.warehouse.port import WarehouseError

TABLES: Final[tuple[str, ...]] = ("events", "flights")
# The catalog spells some types in full (TIMESTAMPTZ is `TIMESTAMP WITH TIME ZONE`): compare
# DuckDB's own rendering of each DDL type.
_KINDS: Final[Mapping[str, contract.Kind]] = {
    str(duckdb.sqltype(ddl)): kind for kind, ddl in TYPES.items()
}


class IncompatibleStore(WarehouseError):
    """The data dir holds columns the current contract cannot follow (nothing was changed)."""


def stored_columns(
    conn: duckdb.DuckDBPyConnection, table: str
) -> tuple[list[contract.Column], dict[str, str]]:
    """A table's columns as the contract describes them, and the reason for each unknown type."""
    rows = conn.execute(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = 'main' AND table_name = $table ORDER BY ordinal_position",
        {"table": table},
    ).fetchall()
    columns: list[contract.Column] = []
    unknown: dict[str, str] = {}
    for name, data_type, nullable in rows:
        kind = _KINDS.get(data_type)
        if kind is None:
            unknown[name] = f"column {name} has type {data_type}, which the contract never uses"
        else:
            columns.append(contract.Column(name, kind, nullable == "YES", ""))
    return columns, unknown


def plan(conn: duckdb.DuckDBPyConnection, tables: Iterable[str] = TABLES) -> list[str]:
    """The ALTER statements that bring `tables` to the contract; IncompatibleStore if refused."""
    statements: list[str] = []
    refused: list[str] = []
    for table in tables:
        stored, unknown = stored_columns(conn, table)
        # A column of an unknown type is refused once, not also as a column to add.
        change = contract.evolve(stored, [c for c in contract.COLUMNS if c.name not in unknown])
        refused.extend(f"{table}: {reason}" for reason in (*unknown.values(), *change.refused))
        statements.extend(
            f"ALTER TABLE {table} ADD COLUMN {c.name} {TYPES[c.kind]}" for c in change.added
        )
        statements.extend(
            f"ALTER TABLE {table} ALTER COLUMN {c.name} DROP NOT NULL" for c in change.relaxed
        )
    if refused:
        raise IncompatibleStore(
            "the data dir does not follow the current contract (" + "; ".join(refused) + ")"
        )
    return statements


def upgrade(conn: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply `plan` in one transaction (all or nothing); return the statements run.

    A refused store closes `conn` before IncompatibleStore propagates: the opening adapter is
    unusable, and an open connection would keep DuckDB's file lock for the life of the process.
    """
    try:
        statements = plan(conn)
    except IncompatibleStore:
        conn.close()
        raise
    if statements:
        conn.execute("BEGIN TRANSACTION")
        try:
            for statement in statements:
                conn.execute(statement)
            conn.execute("COMMIT")
        except duckdb.Error:
            conn.execute("ROLLBACK")
            raise
    return statements
