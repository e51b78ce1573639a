"""Dialect-neutral SQL fragments of the read queries, shared by the DuckDB and BigQuery adapters.

Both adapters build their WHERE, ORDER BY, keyset and GROUP BY clauses here so they cannot drift
apart. Values are never formatted into the text: each fragment names its parameters (`$name` for
DuckDB, `@name` for BigQuery, chosen by `mark`) and returns them as `Bound` values with the
contract's `Kind` of their column (each adapter maps it to its own type). Identifiers come only
from the allow-lists below and in `port` (`FILTERS`, `SORT_FIELDS`, `STATISTICS`).

`render_rows` is the one definition of the export formats (CSV records, NDJSON lines) that
`Warehouse.export_flights` yields; an adapter that renders in SQL (DuckDB) is tested against it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, get_type_hints

import msgspec

from flightpipe.contract import COLUMN_NAMES, COLUMNS, Kind
from flightpipe.warehouse.port import (
    FILTERS,
    GROUP_BY_FIELDS,
    NULLABLE_SORT_FIELDS,
    SORT_FIELDS,
    STATISTICS,
    DelayStats,
    FlightFilter,
    GroupBy,
    PageKey,
    Selection,
    Sort,
    WarehouseError,
)

# Each warehouse column's kind (the contract's), by name.
KINDS: Final[Mapping[str, Kind]] = {c.name: c.kind for c in COLUMNS}
# (FlightFilter attribute, column, operator, kind of the value), from the port's declarations.
_WHERE: Final = tuple((name, f.column, f.op, KINDS[f.column]) for name, f in FILTERS.items())
_SORTABLE: Final = frozenset(SORT_FIELDS)
_COLUMN_SET: Final = frozenset(COLUMN_NAMES)
# Group keys as SQL expressions valid in both dialects: a column itself, or one computed here
# (EXTRACT on a timestamp is UTC in both).
_COMPUTED_GROUPS: Final = {"hour": "EXTRACT(HOUR FROM scheduled_departure)"}
GROUP_EXPRESSIONS: Final[dict[str, str]] = {
    f: f if f in _COLUMN_SET else _COMPUTED_GROUPS[f] for f in GROUP_BY_FIELDS
}
# The statistics that are counts (integers); the others are floats or NULL.
_COUNTS: Final = frozenset(n for n, t in get_type_hints(DelayStats).items() if t is int)
ExportFormat = Literal["csv", "ndjson"]
_json: Final = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class Bound:
    """A named parameter and the kind of its column (DuckDB infers the type from the value)."""

    name: str
    kind: Kind
    value: Any


def where(flt: FlightFilter, mark: str) -> tuple[list[str], list[Bound]]:
    """The filter's predicates (to AND together) and their parameters."""
    clauses: list[str] = []
    bound: list[Bound] = []
    for attribute, column, op, kind in _WHERE:
        value = getattr(flt, attribute)
        if value is not None:
            clauses.append(f"{column} {op} {mark}{attribute}")
            bound.append(Bound(attribute, kind, value))
    return clauses, bound


def check_sort(sort: Sort) -> None:
    """Refuse a sort column outside the allow-list."""
    if sort.field not in _SORTABLE:
        raise WarehouseError(f"cannot sort by {sort.field!r}")


def order_by(sort: Sort) -> str:
    """`ORDER BY` text: the sort column (NULLs last either way), then flight_id."""
    check_sort(sort)
    direction = " DESC" if sort.descending else ""
    nulls = " NULLS LAST" if sort.field in NULLABLE_SORT_FIELDS else ""
    return f"ORDER BY {sort.field}{direction}{nulls}, flight_id{direction}"


def after_clause(sort: Sort, after: PageKey, mark: str) -> tuple[str, list[Bound]]:
    """The keyset predicate: rows strictly after `after` in the `order_by(sort)` order."""
    check_sort(sort)
    col, value, last_id = sort.field, after[0], after[1]
    cmp = "<" if sort.descending else ">"
    id_bound = Bound("after_flight_id", "string", last_id)
    id_after = f"flight_id {cmp} {mark}after_flight_id"
    if value is None:
        if col not in NULLABLE_SORT_FIELDS:
            raise WarehouseError(f"{col} is never NULL")
        return f"({col} IS NULL AND {id_after})", [id_bound]
    bound = [Bound("after_value", KINDS[col], value), id_bound]
    v = f"{mark}after_value"
    clause = f"{col} {cmp} {v} OR ({col} = {v} AND {id_after})"
    if col in NULLABLE_SORT_FIELDS:
        clause = f"{col} IS NULL OR {clause}"
    return f"({clause})", bound


def page_where(selection: Selection, mark: str) -> tuple[list[str], list[Bound]]:
    """A selection's predicates (to AND together): its filter's, then the keyset one if any."""
    clauses, bound = where(selection.filter, mark)
    if selection.after is not None:
        clause, more = after_clause(selection.sort, selection.after, mark)
        clauses.append(clause)
        bound += more
    return clauses, bound


def checked_columns(columns: Sequence[str] | None) -> Sequence[str]:
    """Every warehouse column, or the subset asked for (in that order) once allowed."""
    if columns is None:
        return COLUMN_NAMES
    unknown = [c for c in columns if c not in _COLUMN_SET]
    if unknown or not columns:
        raise WarehouseError(f"unknown or no columns: {unknown!r}")
    return columns


def select_columns(columns: Sequence[str] | None) -> str:
    """The SELECT list: every warehouse column, or the allowed subset asked for, in that order."""
    return ", ".join(checked_columns(columns))


def group_fields(group_by: GroupBy | Sequence[GroupBy]) -> tuple[str, ...]:
    """The group keys as a tuple, checked against GROUP_BY_FIELDS (no repeats)."""
    fields: tuple[str, ...] = (group_by,) if isinstance(group_by, str) else tuple(group_by)
    if not fields or len(set(fields)) != len(fields):
        raise WarehouseError(f"cannot group by {group_by!r}")
    for name in fields:
        if name not in GROUP_EXPRESSIONS:
            raise WarehouseError(f"cannot group by {name!r}")
    return fields


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def delay_stats_row(row: dict[str, Any], fields: Sequence[str]) -> DelayStats:
    """One result row of either adapter's statistics query as `DelayStats`.

    Columns: the group fields, then one per statistic, named as in `STATISTICS`. The hour comes
    back as an integer (BigQuery INT64, DuckDB BIGINT); averages may be decimals.
    """
    key = {f: int(row[f]) if f == "hour" and row[f] is not None else row[f] for f in fields}
    values: dict[str, Any] = {
        n: int(row[n]) if n in _COUNTS else _float(row[n]) for n in STATISTICS
    }
    return DelayStats(key=key, **values)


def render_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: ExportFormat) -> bytes:
    """Rows (only `columns`, in that order) as NDJSON lines or CSV records without a header.

    Values as msgspec encodes them (RFC 3339 UTC times ending in `Z`, fractional seconds only
    when non-zero); CSV per Python's csv module (minimal quoting, CRLF), empty for NULL.
    """
    if fmt == "ndjson":
        return _json.encode_lines([{c: r[c] for c in columns} for r in rows])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for row in msgspec.to_builtins(rows):
        writer.writerow(["" if row[c] is None else row[c] for c in columns])
    return out.getvalue().encode()
