"""BigQuery adapter SQL, transpiled by sqlglot and run on DuckDB, answers like DuckDBWarehouse.

The same events go (a) through `DuckDBWarehouse.write`, batch by batch, and (b) into an `events`
table holding every row insertAll could store (duplicates included) with the `flights_current`
view built from the BigQuery view SQL. Every read the BigQuery adapter makes is then run on (b)
and compared with the DuckDB adapter's answer on (a).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
import sqlglot

from flightpipe.contract import COLUMN_NAMES
from flightpipe.warehouse import DelayStats, Envelope, FlightFilter
from flightpipe.warehouse import bigquery_sql as q
from flightpipe.warehouse.bigquery import _row
from flightpipe.warehouse.duckdb import DuckDBWarehouse, columns_ddl
from flightpipe.warehouse.port import GROUP_BY_FIELDS, SORT_FIELDS, STATISTICS, Selection, Sort
from flightpipe.warehouse.query import delay_stats_row
from tests.factories import make_event

pytestmark = pytest.mark.integration

EVENTS = q.table_ref(None, "ds", q.EVENTS_TABLE)
VIEW = q.table_ref(None, "ds", q.CURRENT_VIEW)
T0 = dt.datetime(2013, 1, 1, 12, 0, tzinfo=dt.UTC)
COMPARED = [c for c in COLUMN_NAMES if c != "ingest_time"]  # set at write time by each engine


def _flight(carrier: str, number: int, origin: str, day: int, **kw: Any) -> dict[str, Any]:
    date = dt.date(2013, 1, day)
    return {
        "carrier": carrier,
        "flight_number": number,
        "origin": origin,
        "flight_date": date,
        "scheduled_departure": kw.pop(
            "departure", dt.datetime.combine(date, dt.time(10, 0), dt.UTC)
        ),
        **kw,
    }


def _batches() -> list[list[Envelope]]:
    """Arrival order of the messages, in subscriber batches; each case names what it exercises."""
    n = iter(range(1, 10_000))

    def env(event_kwargs: dict[str, Any], *, event_id: str | None = None) -> Envelope:
        i = next(n)
        event = make_event(**event_kwargs, **({"event_id": event_id} if event_id else {}))
        return Envelope(event, f"msg-{i}", T0 + dt.timedelta(seconds=i))

    ua = _flight("UA", 1545, "EWR", 1, dest="IAH")
    aa = _flight("AA", 100, "JFK", 1, dest="MIA")
    dl = _flight("DL", 200, "LGA", 2, dest="ATL")
    b6 = _flight("B6", 400, "JFK", 3, dest="BOS")
    same_time = dt.datetime(2013, 1, 2, 9, 0, tzinfo=dt.UTC)
    ua2 = _flight("UA", 300, "EWR", 2, dest="ORD", departure=same_time)
    aa2 = _flight("AA", 301, "EWR", 2, dest="ORD", departure=same_time)  # keyset tie on time
    cancelled = {"status": "cancelled", "actual_departure": None, "dep_delay_min": None}
    cancelled |= {"actual_arrival": None, "arr_delay_min": None, "air_time_min": None}
    departed = {"status": "departed", "actual_arrival": None, "arr_delay_min": None}
    return [
        [
            env(ua | {"status": "scheduled", "event_time": T0, "dep_delay_min": None}),
            env(aa | {"status": "scheduled", "event_time": T0}),
            env(dl | {"event_time": T0, "arr_delay_min": 30}, event_id="dl-arrived"),
            env(ua2 | {"event_time": T0, "arr_delay_min": -5}),
            env(aa2 | {"event_time": T0, "arr_delay_min": 15}),
        ],
        [
            env(ua | {"status": "arrived", "event_time": T0 + dt.timedelta(hours=5)}),
            env(aa | {"event_time": T0 + dt.timedelta(hours=1)} | cancelled),
            env(b6 | {"event_time": T0} | departed),
        ],
        [
            # An older state arriving late must not replace the newer one.
            env(ua | {"event_time": T0 + dt.timedelta(hours=2)} | departed),
            # A re-published duplicate (same event_id, new message) counts once, as first seen.
            env(dl | {"event_time": T0, "arr_delay_min": 30}, event_id="dl-arrived"),
            # Same event_time as the stored state, published later: it wins the tie.
            env(ua2 | {"event_time": T0, "arr_delay_min": 40}),
        ],
    ]


def _transpile(sql: str) -> str:
    return sqlglot.transpile(sql, read="bigquery", write="duckdb")[0]


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, DuckDBWarehouse]]:
    """(DuckDB running the BigQuery SQL, DuckDBWarehouse) over the same arrivals."""
    adapter = DuckDBWarehouse(Path(tmp_path_factory.mktemp("duckdb")) / "warehouse.duckdb")
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE SCHEMA ds")
    con.execute(f"CREATE TABLE ds.events ({columns_ddl()})")
    ingest = dt.datetime.now(dt.UTC).isoformat()
    for batch in _batches():
        adapter.write(batch)
        rows = [_row(e, ingest) for e in batch]  # exactly what insertAll would send
        placeholders = ", ".join("?" for _ in COLUMN_NAMES)
        con.executemany(
            f"INSERT INTO ds.events ({', '.join(COLUMN_NAMES)}) VALUES ({placeholders})",
            [[r.get(c) for c in COLUMN_NAMES] for r in rows],
        )
    con.execute(f"CREATE VIEW ds.flights_current AS {_transpile(q.current_view_sql(EVENTS))}")
    yield con, adapter
    con.close()
    adapter.close()


def _run(con: Any, query: q.Query) -> list[dict[str, Any]]:
    cur = con.execute(_transpile(query.sql), {p.name: p.value for p in query.params})
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{c: r[c] for c in COMPARED} for r in rows]


FILTERS = [
    FlightFilter(),
    FlightFilter(min_dep_delay=0, max_arr_delay=20),
    FlightFilter(date_from=dt.date(2013, 1, 2)),
    FlightFilter(date_to=dt.date(2013, 1, 1)),
    FlightFilter(carrier="UA"),
    FlightFilter(origin="JFK", dest="BOS"),
    FlightFilter(status="arrived", date_from=dt.date(2013, 1, 1), date_to=dt.date(2013, 1, 2)),
    FlightFilter(carrier="ZZ"),
    FlightFilter(flight_number=300, tail_number="N14228"),
    FlightFilter(min_arr_delay=16, max_dep_delay=100),
]
SORTS = [Sort(f, d) for f in SORT_FIELDS for d in (False, True)]


def test_the_scenario_exercises_late_older_events_duplicates_and_ties(
    engines: tuple[Any, DuckDBWarehouse],
) -> None:
    con, adapter = engines
    stored = _run(con, q.Query(f"SELECT count(*) AS n FROM {EVENTS}"))[0]["n"]
    assert stored == 11  # the duplicate is stored twice, as insertAll may do

    ua = _run(con, q.get_flight(VIEW, "2013-01-01-UA1545-EWR"))
    ua2 = _run(con, q.get_flight(VIEW, "2013-01-02-UA300-EWR"))
    dl = _run(con, q.get_flight(VIEW, "2013-01-02-DL200-LGA"))
    assert [r["status"] for r in ua] == ["arrived"]
    assert [r["arr_delay_min"] for r in ua2] == [40]
    assert [(r["event_id"], r["message_id"]) for r in dl] == [("dl-arrived", "msg-3")]
    assert adapter.get_flight("2013-01-01-UA1545-EWR") is not None


@pytest.mark.parametrize("flt", FILTERS, ids=repr)
def test_list_flights_pages_equal_the_duckdb_adapter(
    engines: tuple[Any, DuckDBWarehouse], flt: FlightFilter
) -> None:
    con, adapter = engines
    after = None
    pages = 0
    while True:
        selection = Selection(flt, 2, after)
        expected = adapter.list_flights(selection)
        got = _run(con, q.list_flights(VIEW, selection))
        assert _strip(got) == _strip(expected)
        pages += 1
        if len(got) < 2:
            break
        after = (got[-1]["scheduled_departure"], got[-1]["flight_id"])
    assert pages >= 1


@pytest.mark.parametrize(
    "sort", SORTS, ids=lambda s: f"{s.field}-{'desc' if s.descending else 'asc'}"
)
def test_sorted_pages_with_chosen_columns_equal_the_duckdb_adapter(
    engines: tuple[Any, DuckDBWarehouse], sort: Sort
) -> None:
    con, adapter = engines
    columns = ["flight_id", sort.field] if sort.field != "flight_id" else ["flight_id"]
    after = None
    seen: list[str] = []
    while True:
        selection = Selection(FlightFilter(), 2, after, sort, columns)
        expected = adapter.list_flights(selection)
        got = _run(con, q.list_flights(VIEW, selection))
        assert got == expected
        assert all(list(r) == columns for r in got)
        seen += [r["flight_id"] for r in got]
        if len(got) < 2:
            break
        after = (got[-1][sort.field], got[-1]["flight_id"])
    assert len(seen) == len(set(seen)) == 6  # every flight once, NULLs included


@pytest.mark.parametrize(
    "flight_id",
    ["2013-01-01-UA1545-EWR", "2013-01-02-DL200-LGA", "2013-01-09-XX1-AAA", "2013-99-99-XX1-AAA"],
)
def test_flight_events_equal_the_duckdb_adapter(
    engines: tuple[Any, DuckDBWarehouse], flight_id: str
) -> None:
    con, adapter = engines
    got = _run(con, q.flight_events(EVENTS, flight_id))
    assert _strip(got) == _strip(adapter.flight_events(flight_id))


def test_flight_events_count_a_duplicate_once_in_event_time_order(
    engines: tuple[Any, DuckDBWarehouse],
) -> None:
    con, _ = engines
    ua = _run(con, q.flight_events(EVENTS, "2013-01-01-UA1545-EWR"))
    assert [r["status"] for r in ua] == ["scheduled", "departed", "arrived"]
    dl = _run(con, q.flight_events(EVENTS, "2013-01-02-DL200-LGA"))
    assert [(r["event_id"], r["message_id"]) for r in dl] == [("dl-arrived", "msg-3")]


@pytest.mark.parametrize(
    "flight_id", ["2013-01-01-UA1545-EWR", "2013-01-01-AA100-JFK", "2013-01-09-XX1-AAA"]
)
def test_get_flight_equals_the_duckdb_adapter(
    engines: tuple[Any, DuckDBWarehouse], flight_id: str
) -> None:
    con, adapter = engines
    expected = adapter.get_flight(flight_id)
    got = _run(con, q.get_flight(VIEW, flight_id))
    assert _strip(got) == ([] if expected is None else _strip([expected]))


def _stats(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> list[DelayStats]:
    """Rows as DelayStats whose floats compare approximately (the engines' sums may differ)."""

    def num(v: Any) -> Any:
        return pytest.approx(v) if isinstance(v, float) else v

    out = []
    for r in rows:
        s = delay_stats_row(r, fields)
        out.append(dataclasses.replace(s, **{n: num(getattr(s, n)) for n in STATISTICS}))
    return out


GROUPINGS = [(f,) for f in GROUP_BY_FIELDS] + [("carrier", "origin"), ("origin", "hour")]


@pytest.mark.parametrize("fields", GROUPINGS, ids=",".join)
@pytest.mark.parametrize("flt", FILTERS[:5], ids=repr)
def test_delay_stats_equal_the_duckdb_adapter(
    engines: tuple[Any, DuckDBWarehouse], fields: Any, flt: FlightFilter
) -> None:
    con, adapter = engines
    got = _stats(_run(con, q.delay_stats(VIEW, flt, fields)), fields)
    assert adapter.delay_stats(flt, fields) == got


def test_percentiles_interpolate_over_the_non_null_delays(
    engines: tuple[Any, DuckDBWarehouse],
) -> None:
    con, _ = engines
    (ewr,) = _stats(
        _run(con, q.delay_stats(VIEW, FlightFilter(date_from=dt.date(2013, 1, 2)), "origin")),
        ("origin",),
    )[:1]
    # EWR on 2 Jan: UA300 arrived 40 late, AA301 15 late: median 27.5, p90 15 + 0.9 * 25.
    assert ewr.key == {"origin": "EWR"}
    assert ewr.median_arr_delay_min == pytest.approx(27.5)
    assert ewr.p90_arr_delay_min == pytest.approx(37.5)


def test_on_time_rate_counts_only_flights_with_an_arrival_delay(
    engines: tuple[Any, DuckDBWarehouse],
) -> None:
    con, _ = engines
    rows = _run(con, q.delay_stats(VIEW, FlightFilter(date_from=dt.date(2013, 1, 2)), "dest"))
    by_dest = {r["dest"]: r for r in rows}
    # ORD: UA300 arrived 40 min late (latest state), AA301 exactly 15 min late (on time).
    assert float(by_dest["ORD"]["on_time_rate"]) == 0.5
    # BOS: B6400 has departed only, so no arrival delay: no on-time rate at all.
    assert by_dest["BOS"]["on_time_rate"] is None


def test_newest_publish_time_equals_the_duckdb_adapter(
    engines: tuple[Any, DuckDBWarehouse],
) -> None:
    con, adapter = engines
    (row,) = _run(con, q.newest_publish_time(EVENTS))
    assert q.as_utc(row["t"]) == adapter.newest_publish_time() == T0 + dt.timedelta(seconds=11)


def test_ping_query_runs(engines: tuple[Any, DuckDBWarehouse]) -> None:
    assert _run(engines[0], q.PING) == [{"ok": 1}]


def test_count_events_counts_each_event_once_like_the_duckdb_adapter(
    engines: tuple[Any, DuckDBWarehouse],
) -> None:
    con, adapter = engines
    (stored,) = con.execute("SELECT count(*) FROM ds.events").fetchone()
    (row,) = _run(con, q.count_events(EVENTS))
    assert row["n"] == adapter.count_events() > 0
    assert stored > row["n"]  # the arrivals include redeliveries, stored twice by insertAll
