"""DuckDB adapter details the port's contract tests do not see: reuse of parsed statements."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flightpipe.warehouse import FlightFilter, WarehouseUnavailable
from flightpipe.warehouse import duckdb as adapter
from flightpipe.warehouse.duckdb import DuckDBWarehouse
from flightpipe.warehouse.port import Selection
from tests.factories import envelopes, make_event

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[DuckDBWarehouse]:
    instance = DuckDBWarehouse(tmp_path / "w.duckdb")
    events = [make_event(carrier=c, origin=o) for c in ("UA", "AA", "B6") for o in ("EWR", "JFK")]
    instance.write(envelopes(events, NOW))
    yield instance
    instance.close()


def test_one_statement_text_answers_each_call_with_its_own_parameters(
    warehouse: DuckDBWarehouse,
) -> None:
    # Same filters shape, so the same SQL text and the same parsed statement every time.
    for carrier in ("UA", "AA", "B6", "UA"):
        for origin in ("EWR", "JFK"):
            rows = warehouse.list_flights(
                Selection(FlightFilter(carrier=carrier, origin=origin), 10)
            )
            assert [(r["carrier"], r["origin"]) for r in rows] == [(carrier, origin)]
    assert warehouse.list_flights(Selection(FlightFilter(carrier="DL", origin="EWR"), 10)) == []


def test_parsed_statements_are_reused_per_thread_and_bounded(
    warehouse: DuckDBWarehouse,
) -> None:
    cur = warehouse._cursor()
    first = warehouse._parsed(cur, "SELECT 1")
    assert warehouse._parsed(cur, "SELECT 1") is first
    for i in range(adapter._PARSED_PER_THREAD + 50):
        warehouse._parsed(cur, f"SELECT {i}")
    assert 0 < len(warehouse._local.statements) <= adapter._PARSED_PER_THREAD

    other: list[object] = []
    thread = threading.Thread(
        target=lambda: other.append(warehouse._parsed(warehouse._cursor(), "SELECT 1"))
    )
    thread.start()
    thread.join()
    assert other and other[0] is not first  # each thread parses for its own cursor


def test_a_thread_that_never_queried_sees_a_closed_warehouse_as_unavailable(
    tmp_path: Path,
) -> None:
    """`/readyz` on a fresh request thread after the warehouse closed must answer 503, not 500:
    the cursor a thread opens on first use is refused by the closed connection."""
    instance = DuckDBWarehouse(tmp_path / "w.duckdb")
    instance.close()
    raised: list[BaseException] = []

    def ping() -> None:
        try:
            instance.ping()
        except BaseException as exc:  # recorded for the assertion below
            raised.append(exc)

    thread = threading.Thread(target=ping)
    thread.start()
    thread.join()
    assert [type(e) for e in raised] == [WarehouseUnavailable]
