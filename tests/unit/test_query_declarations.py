"""Each filter and each statistic is declared once, in the warehouse port, and reaches every layer.

A filter is a field of `FlightFilter` (`port.FILTERS`: column, operator, description, example); a
statistic is a field of `DelayStats` (`port.STATISTICS`: description, SQL). These tests go over
every declared one, so a filter or statistic added there is checked here at once: it must reach
the query builder of both dialects, the API's parser and the OpenAPI document (filters), both
adapters' statistics queries and the API's response schema (statistics). Column types come from
the contract's kinds, mapped once per technology.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import typing
from pathlib import Path
from typing import Any, get_args

import msgspec
import pytest
from flightpipe_api import schemas
from flightpipe_api.openapi import build_spec
from flightpipe_api.params import FlightsQuery, StatsQuery, parse_query
from flightpipe_api.tokens import decode_page_token, encode_page_token
from werkzeug.datastructures import MultiDict

from flightpipe import contract
from flightpipe.warehouse import FlightFilter, bigquery_sql, duckdb_sql, query
from flightpipe.warehouse.duckdb import DuckDBWarehouse
from flightpipe.warehouse.port import FILTERS, SORT_FIELDS, STATISTICS, DelayStats, Selection, Sort
from tests.factories import envelopes, make_event

KINDS = query.KINDS
HINTS = typing.get_type_hints(contract.FlightEvent, include_extras=True)


def _without_none(t: Any) -> Any:
    """`X | None` -> X (an Annotated type's arguments never hold NoneType)."""
    args = get_args(t)
    return next(a for a in args if a is not type(None)) if type(None) in args else t


def _parameters(spec: dict[str, Any], path: str) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in spec["paths"][path]["get"]["parameters"]}


@pytest.mark.parametrize("name", list(FILTERS))
def test_every_filter_reaches_both_dialects_the_parser_and_the_openapi_document(
    name: str,
) -> None:
    spec = FILTERS[name]
    # The parser: the example, as a query string, becomes that FlightFilter field.
    for cls in (FlightsQuery, StatsQuery):
        flt = parse_query(MultiDict([(name, str(spec.example))]), cls).flight_filter()
        value = getattr(flt, name)
        assert value is not None and str(value) == str(spec.example)
        assert dataclasses.replace(flt, **{name: None}) == FlightFilter()
    # The query builder: `column op :name`, bound with the column's kind, in both dialects.
    clauses, bound = query.where(flt, "$")
    assert clauses == [f"{spec.column} {spec.op} ${name}"]
    assert [(b.name, b.kind, b.value) for b in bound] == [(name, KINDS[spec.column], value)]
    page, params = duckdb_sql.page(Selection(flt, 10))
    assert f"WHERE {spec.column} {spec.op} ${name} " in page and params[name] == value
    bq = bigquery_sql.list_flights("`ds.v`", Selection(flt, 10))
    assert f"WHERE {spec.column} {spec.op} @{name} " in bq.sql
    expected = bigquery_sql.Param(name, bigquery_sql.TYPES[KINDS[spec.column]], value)
    assert expected in bq.params
    # The OpenAPI document: documented, with its example and exactly its column's contract rule.
    document = build_spec()
    rule = {
        k: v
        for k, v in msgspec.json.schema(_without_none(HINTS[spec.column])).items()
        if k != "description"
    }
    for path in ("/v1/flights", "/v1/stats/delays"):
        parameter = _parameters(document, path)[name]
        assert parameter["description"].startswith(spec.description)
        assert parameter["example"] == spec.example
        assert parameter["schema"] == rule


def test_the_filters_are_the_flight_filter_fields_in_order() -> None:
    names = tuple(f.name for f in dataclasses.fields(FlightFilter))
    assert tuple(FILTERS) == names
    assert FlightsQuery.__struct_fields__[: len(names)] == names
    assert StatsQuery.__struct_fields__[: len(names)] == names
    # Each field's Python type is its column's (the contract's kind, as the API types it).
    hints = typing.get_type_hints(FlightFilter)
    for name, spec in FILTERS.items():
        assert hints[name] == schemas._PYTHON[KINDS[spec.column]] | None, name


def test_every_statistic_reaches_both_adapters_and_the_response_schema(tmp_path: Path) -> None:
    assert tuple(STATISTICS) == tuple(
        f.name for f in dataclasses.fields(DelayStats) if f.name != "key"
    )
    # DuckDB: every statistic comes back, with a value for a group that has delays.
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    events = [make_event(), make_event(dep_delay_min=30, arr_delay_min=40)]
    warehouse.write(envelopes(events, dt.datetime(2026, 1, 1, tzinfo=dt.UTC)))
    (stats,) = warehouse.delay_stats(FlightFilter(), "carrier")
    warehouse.close()
    assert all(getattr(stats, name) is not None for name in STATISTICS)
    # BigQuery: every statistic is a column of the query, under its own name.
    sql = bigquery_sql.delay_stats("`ds.v`", FlightFilter(), "carrier").sql
    for name, stat in STATISTICS.items():
        assert f" AS {name}" in sql
        assert (stat.sql in sql) if stat.percentile is None else ("PERCENTILE_CONT" in sql)
    # The API: every statistic is a documented field of a statistics row, in the port's order.
    assert tuple(STATISTICS) == schemas.STATS_COLUMNS
    _, components = msgspec.json.schema_components([schemas.DelayStatsRow])
    row = components["DelayStatsRow"]["properties"]
    for name, stat in STATISTICS.items():
        assert row[name]["description"] == stat.description


def test_every_kind_has_a_type_in_each_technology() -> None:
    kinds = set(get_args(contract.Kind))
    assert set(duckdb_sql.TYPES) == kinds
    assert set(bigquery_sql.TYPES) == kinds
    assert set(schemas._PYTHON) == kinds


@pytest.mark.parametrize("field", SORT_FIELDS)
def test_a_page_token_round_trips_the_sort_value_of_every_sort_column(field: str) -> None:
    row = msgspec.structs.asdict(make_event())
    sort = Sort(field, descending=True)
    token = encode_page_token((row[field], row["flight_id"]), sort)
    value, flight_id = decode_page_token(token, sort)
    assert (value, flight_id) == (row[field], row["flight_id"])
    assert isinstance(value, dt.date | int | str)
