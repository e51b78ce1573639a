"""The BigQuery adapter's SQL, written once in BigQuery's dialect.

Every function returns a `Query`: the SQL text plus its named parameters (`@name`) as
(name, BigQuery type, value). Values are never formatted into the text; identifiers come from
allow-lists here or from `table_ref`, which validates project and dataset names. The same text is
transpiled with sqlglot and run on DuckDB by tests/integration/test_bigquery_sql_on_duckdb.py, so
its results are checked against the DuckDB adapter's.

Semantics (equal to `DuckDBWarehouse`): an event stored more than once (insertAll deduplicates only
on a best-effort basis) counts once, as its first arrival; a flight's current state is its event
with the latest `event_time`, then `publish_time`, then `event_id`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from flightpipe import contract
from flightpipe.contract import COLUMN_NAMES
from flightpipe.warehouse import query
from flightpipe.warehouse.port import (
    STATISTICS,
    FlightFilter,
    GroupBy,
    Selection,
    WarehouseError,
)

EVENTS_TABLE: Final = "events"
CURRENT_VIEW: Final = "flights_current"
COLUMNS: Final = ", ".join(COLUMN_NAMES)
# BigQuery's type for each kind of contract column (GoogleSQL data types; `TableFieldSchema.type`).
TYPES: Final[Mapping[contract.Kind, str]] = {
    "string": "STRING",
    "int": "INT64",
    "timestamp": "TIMESTAMP",
    "date": "DATE",
}
# The columns the statistics' aggregates read (the inner query of `delay_stats` passes them on).
_STATS_INPUTS: Final = tuple(
    c for c in COLUMN_NAMES if any(re.search(rf"\b{c}\b", s.sql) for s in STATISTICS.values())
)
# BigQuery project ids and dataset names (the subset flightpipe's settings can produce).
_PROJECT: Final = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_DATASET: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,1023}$")


@dataclass(frozen=True, slots=True)
class Param:
    """One named query parameter: `@name` in the SQL, with its BigQuery type."""

    name: str
    type: str
    value: Any


@dataclass(frozen=True, slots=True)
class Query:
    """SQL text in BigQuery's dialect and the parameters it binds."""

    sql: str
    params: tuple[Param, ...] = ()


def events_schema() -> list[dict[str, str]]:
    """The `events` table schema as REST `TableFieldSchema` objects (the Pulumi program's input)."""
    return [
        {
            "name": c.name,
            "type": TYPES[c.kind],
            "mode": "NULLABLE" if c.nullable else "REQUIRED",
            "description": c.description,
        }
        for c in contract.COLUMNS
    ]


def table_ref(project: str | None, dataset: str, table: str) -> str:
    """The quoted reference `project.dataset.table` (`dataset.table` when project is None)."""
    if project is not None and not _PROJECT.match(project):
        raise WarehouseError(f"not a BigQuery project id: {project!r}")
    if not _DATASET.match(dataset) or not _DATASET.match(table):
        raise WarehouseError(f"not a BigQuery dataset/table name: {dataset!r}.{table!r}")
    return f"`{project}.{dataset}.{table}`" if project else f"`{dataset}.{table}`"


def current_view_sql(events: str) -> str:
    """The `flights_current` view over the `events` table reference `events`.

    `flight_date` is part of both window partitions although `flight_id` determines it (the id
    starts with the date): BigQuery pushes a filter through a window function only on the
    window's partition columns, so this lets date filters on the view prune table partitions.
    """
    return (
        f"SELECT {COLUMNS} FROM (\n"
        f"  SELECT {COLUMNS} FROM {events}\n"
        "  QUALIFY ROW_NUMBER() OVER (\n"
        "    PARTITION BY flight_date, flight_id, event_id ORDER BY publish_time, message_id\n"
        "  ) = 1\n"
        ")\n"
        "QUALIFY ROW_NUMBER() OVER (\n"
        "  PARTITION BY flight_date, flight_id\n"
        "  ORDER BY event_time DESC, publish_time DESC, event_id DESC\n"
        ") = 1"
    )


def _params(bound: list[query.Bound]) -> list[Param]:
    return [Param(b.name, TYPES[b.kind], b.value) for b in bound]


def _where_sql(clauses: list[str]) -> str:
    return f" WHERE {' AND '.join(clauses)}" if clauses else ""


def list_flights(view: str, selection: Selection) -> Query:
    """The current states `selection` picks, ordered by (sort field, flight_id)."""
    clauses, bound = query.page_where(selection, "@")
    params = (*_params(bound), Param("limit", TYPES["int"], selection.limit))
    sql = (
        f"SELECT {query.select_columns(selection.columns)} FROM {view}{_where_sql(clauses)}"
        f" {query.order_by(selection.sort)} LIMIT @limit"
    )
    return Query(sql, params)


# One flight by its id, and by the id's date (`contract.flight_id_date`; None matches no row):
# `flight_date` partitions the events table and is a window partition column of the view
# (`current_view_sql`), so BigQuery prunes the scan to one partition instead of every day's.
_BY_ID: Final = "flight_id = @flight_id AND flight_date = @flight_date"


def _id_params(flight_id: str) -> tuple[Param, Param]:
    return (
        Param("flight_id", TYPES["string"], flight_id),
        Param("flight_date", TYPES["date"], contract.flight_id_date(flight_id)),
    )


def get_flight(view: str, flight_id: str) -> Query:
    """The current state of one flight (pruned to its date's partition: `_BY_ID`)."""
    return Query(f"SELECT {COLUMNS} FROM {view} WHERE {_BY_ID}", _id_params(flight_id))


def flight_events(events: str, flight_id: str) -> Query:
    """Every distinct event of one flight (first arrival of a duplicate), in event-time order."""
    return Query(
        f"SELECT {COLUMNS} FROM {events} WHERE {_BY_ID}"
        " QUALIFY ROW_NUMBER() OVER ("
        "PARTITION BY event_id ORDER BY publish_time, message_id) = 1"
        " ORDER BY event_time, publish_time, event_id",
        _id_params(flight_id),
    )


def delay_stats(view: str, flt: FlightFilter, group_by: GroupBy | Sequence[GroupBy]) -> Query:
    """Per-group `STATISTICS` over current states: the group fields, then one column each.

    BigQuery has PERCENTILE_CONT only as an analytic function, so the inner query computes each
    percentile per group (one window each) next to the columns the aggregates read, and the
    outer one aggregates and takes any value of the percentiles.
    """
    fields = query.group_fields(group_by)
    clauses, bound = query.where(flt, "@")
    keys = ", ".join(f"{query.GROUP_EXPRESSIONS[f]} AS {f}" for f in fields)
    names = ", ".join(fields)
    window = f"OVER (PARTITION BY {', '.join(query.GROUP_EXPRESSIONS[f] for f in fields)})"
    inner = [keys, *(c for c in _STATS_INPUTS if c not in fields)]
    outer = [names]
    for name, stat in STATISTICS.items():
        if stat.percentile is None:
            outer.append(f"{stat.sql} AS {name}")
        else:
            column, fraction = stat.percentile
            inner.append(f"PERCENTILE_CONT({column}, {fraction}) {window} AS {name}")
            outer.append(f"ANY_VALUE({name}) AS {name}")
    sql = (
        f"SELECT {', '.join(outer)}"
        f" FROM (SELECT {', '.join(inner)} FROM {view}{_where_sql(clauses)})"
        f" GROUP BY {names} ORDER BY {names}"
    )
    return Query(sql, tuple(_params(bound)))


def newest_publish_time(events: str) -> Query:
    """The ingest watermark: the newest stored publish_time (NULL while empty)."""
    return Query(f"SELECT MAX(publish_time) AS t FROM {events}")


def count_events(events: str) -> Query:
    """Distinct stored events: insertAll's best-effort deduplication may store one twice."""
    return Query(f"SELECT COUNT(DISTINCT event_id) AS n FROM {events}")


PING: Final = Query("SELECT 1 AS ok")


def as_utc(value: Any) -> dt.datetime | None:
    """A TIMESTAMP result as an aware UTC datetime (None stays None)."""
    if not isinstance(value, dt.datetime):
        return None
    return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)
