"""Contract tests of the warehouse port: every adapter in WAREHOUSES passes all of them.

BigQuery cannot run here; its SQL is proven on DuckDB in tests/integration (sqlglot) and its
requests against a local fake endpoint in tests/unit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest

from flightpipe.contract import COLUMN_NAMES, FlightEvent
from flightpipe.warehouse import Envelope, FlightFilter, Warehouse, WarehouseUnavailable
from flightpipe.warehouse.duckdb import DuckDBWarehouse
from flightpipe.warehouse.port import Selection, Sort
from flightpipe.warehouse.query import ExportFormat, render_rows
from tests.factories import make_event

# Port contract cases: `make test-integration` selects only their emulator-backed ones.
pytestmark = pytest.mark.contract

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
WAREHOUSES: dict[str, Callable[[Path], Warehouse]] = {
    "duckdb": lambda tmp: DuckDBWarehouse(tmp / "w.duckdb"),
}
# How each adapter loses its warehouse while the process lives on: DuckDB's connection closed
# under it, as after a fatal error invalidates the database.
CUT_OFF: dict[str, Callable[[Warehouse], None]] = {
    "duckdb": lambda w: cast(DuckDBWarehouse, w)._conn.close(),
}


@pytest.fixture(params=sorted(WAREHOUSES))
def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    instance = WAREHOUSES[request.param](tmp_path)
    yield instance
    instance.close()


def env(event, message_id: str = "m", publish_time: dt.datetime = NOW) -> Envelope:  # type: ignore[no-untyped-def]
    return Envelope(event, message_id, publish_time)


def test_a_written_event_is_the_flights_current_state(warehouse: Warehouse) -> None:
    event = make_event()
    assert warehouse.write([env(event, "m1")]) == 1
    row = warehouse.get_flight(event.flight_id)
    assert row is not None
    for name in ("event_id", "carrier", "flight_number", "scheduled_departure", "arr_delay_min"):
        assert row[name] == getattr(event, name)
    assert row["message_id"] == "m1" and row["publish_time"] == NOW
    assert row["ingest_time"] >= NOW


def test_writing_the_same_event_twice_stores_it_once(warehouse: Warehouse) -> None:
    event = make_event()
    assert warehouse.write([env(event), env(event)]) == 1
    assert warehouse.write([env(event, "redelivered")]) == 0
    assert len(warehouse.list_flights(Selection(FlightFilter(), 10))) == 1


def test_a_newer_event_replaces_the_state_and_an_older_one_never_does(warehouse: Warehouse) -> None:
    first = make_event(status="departed", arr_delay_min=None, actual_arrival=None)
    t0 = first.event_time
    newer = make_event(
        flight_number=first.flight_number, status="arrived", event_time=t0 + dt.timedelta(hours=1)
    )
    older = make_event(
        flight_number=first.flight_number, status="scheduled", event_time=t0 - dt.timedelta(hours=1)
    )
    assert newer.flight_id == older.flight_id == first.flight_id
    warehouse.write([env(first)])
    warehouse.write([env(newer)])
    warehouse.write([env(older)])  # arrives last, observed first
    row = warehouse.get_flight(first.flight_id)
    assert row is not None and row["status"] == "arrived"


def test_within_one_batch_the_latest_event_time_wins(warehouse: Warehouse) -> None:
    a = make_event(status="departed")
    b = make_event(
        flight_number=a.flight_number, status="arrived", event_time=a.event_time + dt.timedelta(1)
    )
    warehouse.write([env(b), env(a)])
    row = warehouse.get_flight(a.flight_id)
    assert row is not None and row["status"] == "arrived"


def test_an_event_time_tie_is_broken_by_publish_time(warehouse: Warehouse) -> None:
    a = make_event(status="departed")
    b = make_event(flight_number=a.flight_number, status="diverted", event_time=a.event_time)
    warehouse.write([env(b, publish_time=NOW + dt.timedelta(seconds=1))])
    warehouse.write([env(a, publish_time=NOW)])
    row = warehouse.get_flight(a.flight_id)
    assert row is not None and row["status"] == "diverted"


def test_unknown_flight_is_none(warehouse: Warehouse) -> None:
    assert warehouse.get_flight("2013-01-01-ZZ1-ZZZ") is None


@pytest.mark.parametrize("flight_id", ["2013-13-45-UA1-EWR", "not-a-date-UA1-EWR", ""])
def test_an_id_that_starts_with_no_date_finds_nothing(warehouse: Warehouse, flight_id: str) -> None:
    # The adapters look a flight up through its id's date (`contract.flight_id_date`).
    warehouse.write([env(make_event())])
    assert warehouse.get_flight(flight_id) is None
    assert warehouse.flight_events(flight_id) == []


def test_listing_filters_and_orders_by_departure_then_flight_id(warehouse: Warehouse) -> None:
    day = dt.date(2013, 3, 1)
    events = [
        make_event(carrier="AA", origin="JFK", flight_date=day),
        make_event(carrier="UA", origin="EWR", flight_date=day),
        make_event(carrier="UA", origin="EWR", flight_date=day, status="cancelled"),
        make_event(carrier="UA", origin="LGA", flight_date=dt.date(2013, 3, 2)),
    ]
    warehouse.write([env(e) for e in events])
    ua = warehouse.list_flights(
        Selection(FlightFilter(carrier="UA", date_from=day, date_to=day), 10)
    )
    assert {r["flight_id"] for r in ua} == {events[1].flight_id, events[2].flight_id}
    cancelled = warehouse.list_flights(Selection(FlightFilter(status="cancelled"), 10))
    assert [r["flight_id"] for r in cancelled] == [events[2].flight_id]
    everything = warehouse.list_flights(Selection(FlightFilter(), 10))
    keys = [(r["scheduled_departure"], r["flight_id"]) for r in everything]
    assert keys == sorted(keys)


def test_keyset_pages_cover_every_flight_once(warehouse: Warehouse) -> None:
    same_time = dt.datetime(2013, 5, 5, 12, 0, tzinfo=dt.UTC)
    events = [make_event() for _ in range(23)]
    # Ties on scheduled_departure must still page correctly (flight_id breaks them).
    events += [make_event(scheduled_departure=same_time) for _ in range(7)]
    warehouse.write([env(e) for e in events])
    seen: list[str] = []
    after = None
    while True:
        page = warehouse.list_flights(Selection(FlightFilter(), 4, after))
        if not page:
            break
        seen += [r["flight_id"] for r in page]
        after = (page[-1]["scheduled_departure"], page[-1]["flight_id"])
    assert sorted(seen) == sorted(e.flight_id for e in events)
    assert len(seen) == len(set(seen))


def _export_rows() -> list[FlightEvent]:
    """Flights with NULLs, fractional seconds, ties and every tail number the contract admits."""
    tails = ("N14228", "9V SKA", "N123.4", "c-gxyz", None)
    tie = dt.datetime(2013, 5, 5, 12, 0, tzinfo=dt.UTC)
    events = [make_event(tail_number=t) for t in tails]
    events += [make_event(scheduled_departure=tie) for _ in range(4)]
    events.append(
        make_event(
            status="departed",
            arr_delay_min=None,
            actual_arrival=None,
            air_time_min=None,
            event_time=tie + dt.timedelta(microseconds=20_000),
        )
    )
    return events


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
@pytest.mark.parametrize(
    "sort", [Sort(), Sort("arr_delay_min", descending=True), Sort("flight_number")]
)
def test_an_export_renders_the_listing_in_chunks_exactly_as_render_rows(
    warehouse: Warehouse, fmt: ExportFormat, sort: Sort
) -> None:
    warehouse.write(
        [env(e, f"m{i}", NOW + dt.timedelta(microseconds=i)) for i, e in enumerate(_export_rows())]
    )
    rows = warehouse.list_flights(Selection(FlightFilter(), 100, sort=sort))
    for columns in (list(COLUMN_NAMES), ["tail_number"], ["arr_delay_min", "flight_id"]):
        expected = render_rows(rows, columns, fmt)
        pieces = list(
            warehouse.export_flights(
                Selection(FlightFilter(), 100, None, sort, columns), fmt=fmt, chunk=3
            )
        )
        assert b"".join(pieces) == expected, columns
        assert [len(p.splitlines()) for p in pieces] == [3, 3, 3, 1]


def test_an_export_keeps_filters_limit_and_keyset_start(warehouse: Warehouse) -> None:
    warehouse.write([env(e) for e in _export_rows()])
    arrived = FlightFilter(status="arrived")
    rows = warehouse.list_flights(Selection(arrived, 100))
    after = (rows[1]["scheduled_departure"], rows[1]["flight_id"])
    piece = b"".join(warehouse.export_flights(Selection(arrived, 3, after, columns=["flight_id"])))
    assert piece.decode().split() == [r["flight_id"] for r in rows[2:5]]


def test_an_export_is_one_snapshot_while_writes_commit(warehouse: Warehouse) -> None:
    events = [make_event(carrier="DL", flight_number=i + 1) for i in range(6)]
    warehouse.write([env(e) for e in events])
    tails = Selection(FlightFilter(), 100, columns=["tail_number"])
    export = warehouse.export_flights(tails, chunk=2)
    first = next(export)
    newer = [make_event(carrier="DL", flight_number=i + 1, tail_number="N9") for i in range(6)]
    warehouse.write([env(e, "later", NOW + dt.timedelta(1)) for e in newer])
    assert (first + b"".join(export)).split() == [b"N14228"] * 6
    again = b"".join(warehouse.export_flights(tails))
    assert again.split() == [b"N9"] * 6


def test_delay_stats_per_group(warehouse: Warehouse) -> None:
    events = [
        make_event(carrier="AA", dep_delay_min=10, arr_delay_min=20),
        make_event(carrier="AA", dep_delay_min=0, arr_delay_min=-5),
        make_event(
            carrier="AA",
            status="cancelled",
            dep_delay_min=None,
            arr_delay_min=None,
            actual_departure=None,
            actual_arrival=None,
        ),
        make_event(carrier="B6", dep_delay_min=30, arr_delay_min=15),
    ]
    warehouse.write([env(e) for e in events])
    stats = {s.key["carrier"]: s for s in warehouse.delay_stats(FlightFilter(), "carrier")}
    aa, b6 = stats["AA"], stats["B6"]
    assert (aa.flights, aa.cancelled) == (3, 1)
    assert aa.avg_dep_delay_min == pytest.approx(5.0)
    assert aa.avg_arr_delay_min == pytest.approx(7.5)
    assert aa.on_time_rate == pytest.approx(0.5)  # 20 is late, -5 on time; the null is ignored
    assert b6.on_time_rate == pytest.approx(1.0)  # exactly 15 minutes counts as on time
    assert list(stats) == sorted(stats)


def test_delay_stats_respect_filters(warehouse: Warehouse) -> None:
    warehouse.write([env(make_event(origin="JFK")), env(make_event(origin="EWR"))])
    stats = warehouse.delay_stats(FlightFilter(origin="JFK"), "origin")
    assert [s.key for s in stats] == [{"origin": "JFK"}]


def test_newest_publish_time_is_the_watermark(warehouse: Warehouse) -> None:
    assert warehouse.newest_publish_time() is None
    later = NOW + dt.timedelta(minutes=5)
    warehouse.write([env(make_event(), publish_time=NOW), env(make_event(), publish_time=later)])
    assert warehouse.newest_publish_time() == later


def test_ping_answers_while_the_warehouse_does_and_raises_unavailable_once_it_cannot(
    warehouse: Warehouse, request: pytest.FixtureRequest
) -> None:
    warehouse.ping()
    CUT_OFF[request.node.callspec.params["warehouse"]](warehouse)
    with pytest.raises(WarehouseUnavailable):
        warehouse.ping()


def test_count_events_counts_each_distinct_event_once(warehouse: Warehouse) -> None:
    first, second = make_event(), make_event()
    assert warehouse.count_events() == 0
    warehouse.write([env(first, "m1"), env(second, "m2")])
    warehouse.write([env(first, "m3")])  # a redelivery
    assert warehouse.count_events() == 2
