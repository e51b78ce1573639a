"""BigQueryWarehouse with the real google-cloud-bigquery client against a local fake endpoint.

The fake answers the two REST calls the adapter makes (tabledata.insertAll and jobs.query) and
records every request, so the tests assert what would reach BigQuery: insert ids, table names,
parameter names and types, the bytes-billed cap, the job timeout and the job-creation mode.

Why one module of ~540 lines: every test drives the one fake endpoint and the one adapter; they
are the BigQuery side of the warehouse contract and read best side by side.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from flightpipe.contract import COLUMN_NAMES
from flightpipe.warehouse import Envelope, FlightFilter, WarehouseError, WarehouseUnavailable
from flightpipe.warehouse.bigquery import BigQueryWarehouse, RowErrors
from flightpipe.warehouse.port import STATISTICS, Selection
from tests import rpc_log
from tests.factories import make_event

PROJECT = "flightpipe-test"
DATASET = "flights"
INSERT_PATH = f"/bigquery/v2/projects/{PROJECT}/datasets/{DATASET}/tables/events/insertAll"
QUERY_PATH = f"/bigquery/v2/projects/{PROJECT}/queries"
PUBLISHED = dt.datetime(2013, 1, 1, 15, 0, tzinfo=dt.UTC)
# The statistics as BigQuery types their columns (COUNT: INTEGER; AVG, PERCENTILE_CONT: FLOAT).
STATS_SCHEMA = [(n, "INTEGER" if n in ("flights", "cancelled") else "FLOAT") for n in STATISTICS]


@dataclass
class Recorded:
    method: str
    path: str
    body: dict[str, Any]


@dataclass
class FakeBigQuery:
    """Scripted answers per path (consumed in order, then a default) and the requests seen."""

    requests: list[Recorded] = field(default_factory=list)
    script: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)
    query_rows: list[dict[str, Any]] = field(default_factory=list)
    query_schema: list[dict[str, str]] = field(default_factory=list)
    delay_seconds: float = 0.0  # answer insertAll this late (a hanging BigQuery)

    def answer(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.requests.append(Recorded(method, path, body))
        rpc_log.record_rest(method, path)  # for the IAM table check
        scripted = self.script.get(path)
        if scripted:
            return scripted.pop(0)
        if path.endswith("/insertAll"):
            return 200, {"kind": "bigquery#tableDataInsertAllResponse"}
        if path == QUERY_PATH:
            return 200, self._query_response()
        return 404, {"error": {"code": 404, "message": f"no route {path}", "errors": []}}

    def _query_response(self) -> dict[str, Any]:
        names = [f["name"] for f in self.query_schema]
        return {
            "kind": "bigquery#queryResponse",
            "jobComplete": True,
            "queryId": "fake-query-id",
            "schema": {"fields": self.query_schema},
            "totalRows": str(len(self.query_rows)),
            "rows": [{"f": [{"v": row.get(n)} for n in names]} for row in self.query_rows],
        }

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.path == path]


def _error(status: int, reason: str) -> tuple[int, dict[str, Any]]:
    return status, {
        "error": {
            "code": status,
            "message": f"fake {reason}",
            "errors": [{"reason": reason, "message": f"fake {reason}"}],
        }
    }


@pytest.fixture
def fake() -> Iterator[tuple[FakeBigQuery, str]]:
    state = FakeBigQuery()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            status, answer = state.answer("POST", self.path.split("?")[0], body)
            if state.delay_seconds:
                time.sleep(state.delay_seconds)
            data = json.dumps(answer).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up first (a timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def warehouse(fake: tuple[FakeBigQuery, str]) -> Iterator[BigQueryWarehouse]:
    _, url = fake
    client = bigquery.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": url},
    )
    wh = BigQueryWarehouse(
        project=PROJECT,
        dataset=DATASET,
        location="EU",
        max_bytes_billed=123_000_000,
        query_timeout=5.0,
        client=client,
        write_timeout=5.0,
        backoff_initial=0.01,
    )
    yield wh
    wh.close()


def _envelopes(n: int) -> list[Envelope]:
    return [Envelope(make_event(), f"msg-{i}", PUBLISHED) for i in range(n)]


# --- writes -----------------------------------------------------------------------------------


def test_write_streams_rows_to_the_events_table_with_event_id_as_insert_id(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    batch = _envelopes(3)

    assert warehouse.write(batch) == 3

    (body,) = state.bodies(INSERT_PATH)
    assert body["skipInvalidRows"] is True
    assert [r["insertId"] for r in body["rows"]] == [e.event.event_id for e in batch]
    first = body["rows"][0]["json"]
    assert set(first) == set(COLUMN_NAMES)
    assert first["message_id"] == "msg-0"
    assert first["flight_id"] == batch[0].event.flight_id
    assert dt.datetime.fromisoformat(first["publish_time"]) == PUBLISHED
    assert dt.datetime.fromisoformat(first["scheduled_departure"]) == (
        batch[0].event.scheduled_departure
    )
    assert first["flight_date"] == "2013-01-01"
    assert dt.datetime.fromisoformat(first["ingest_time"]).tzinfo is not None


def test_write_splits_a_batch_into_requests_under_the_byte_and_row_limits(
    fake: tuple[FakeBigQuery, str],
) -> None:
    state, url = fake
    client = bigquery.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": url},
    )
    wh = BigQueryWarehouse(
        project=PROJECT, dataset=DATASET, client=client, max_request_bytes=3000, max_request_rows=4
    )
    batch = _envelopes(10)

    assert wh.write(batch) == 10

    bodies = state.bodies(INSERT_PATH)
    assert len(bodies) >= 3
    assert all(len(b["rows"]) <= 4 for b in bodies)
    assert all(len(json.dumps(b)) < 3000 for b in bodies)
    sent = [r["insertId"] for b in bodies for r in b["rows"]]
    assert sent == [e.event.event_id for e in batch]
    wh.close()


@pytest.mark.parametrize(
    "failure", [_error(500, "backendError"), _error(429, "rateLimitExceeded"), _error(503, "x")]
)
def test_a_transient_error_is_unavailable_after_one_request_and_a_retry_resends_the_ids(
    fake: tuple[FakeBigQuery, str],
    warehouse: BigQueryWarehouse,
    failure: tuple[int, dict[str, Any]],
) -> None:
    # One retry layer: the adapter tries once; the subscriber (which keeps the leases) retries.
    state, _ = fake
    state.script[INSERT_PATH] = [failure]
    batch = _envelopes(2)

    with pytest.raises(WarehouseUnavailable):
        warehouse.write(batch)
    assert len(state.bodies(INSERT_PATH)) == 1
    assert warehouse.write(batch) == 2

    bodies = state.bodies(INSERT_PATH)
    assert len(bodies) == 2
    # The same insert ids again, so BigQuery can deduplicate.
    assert [r["insertId"] for r in bodies[0]["rows"]] == [r["insertId"] for r in bodies[1]["rows"]]


def test_a_request_hanging_past_the_write_timeout_is_unavailable(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    state.delay_seconds = 1.5
    warehouse._write_timeout = 0.3

    with pytest.raises(WarehouseUnavailable, match="insertAll"):
        warehouse.write(_envelopes(1))
    assert len(state.bodies(INSERT_PATH)) == 1


def test_write_reports_rejected_rows_by_event_id_and_stores_the_rest(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    batch = _envelopes(3)
    state.script[INSERT_PATH] = [
        (
            200,
            {
                "insertErrors": [
                    {"index": 1, "errors": [{"reason": "invalid", "message": "no such field"}]}
                ]
            },
        )
    ]

    with pytest.raises(RowErrors) as caught:
        warehouse.write(batch)

    assert caught.value.errors == {batch[1].event.event_id: "invalid: no such field"}
    assert caught.value.written == 2
    assert len(state.bodies(INSERT_PATH)) == 1  # a row error is permanent: no retry


def test_write_to_a_missing_table_is_a_permanent_error(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    state.script[INSERT_PATH] = [_error(404, "notFound")]

    with pytest.raises(WarehouseError) as caught:
        warehouse.write(_envelopes(1))

    assert not isinstance(caught.value, WarehouseUnavailable)
    assert len(state.bodies(INSERT_PATH)) == 1


def test_empty_write_sends_nothing(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    assert warehouse.write([]) == 0
    assert fake[0].requests == []


# --- reads ------------------------------------------------------------------------------------


def _schema(*names_types: tuple[str, str]) -> list[dict[str, str]]:
    return [{"name": n, "type": t, "mode": "NULLABLE"} for n, t in names_types]


def _micros(value: dt.datetime) -> str:
    return str(int(value.timestamp() * 1_000_000))


def test_list_flights_sends_a_parameterised_capped_short_query_on_the_view(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    departure = dt.datetime(2013, 1, 1, 10, 15, tzinfo=dt.UTC)
    state.query_schema = _schema(
        ("flight_id", "STRING"),
        ("flight_date", "DATE"),
        ("scheduled_departure", "TIMESTAMP"),
        ("dep_delay_min", "INTEGER"),
        ("tail_number", "STRING"),
    )
    state.query_rows = [
        {
            "flight_id": "2013-01-01-UA1545-EWR",
            "flight_date": "2013-01-01",
            "scheduled_departure": _micros(departure),
            "dep_delay_min": "2",
            "tail_number": None,
        }
    ]
    flt = FlightFilter(date_from=dt.date(2013, 1, 1), carrier="UA", status="arrived")

    rows = warehouse.list_flights(Selection(flt, 50, after=(departure, "2013-01-01-AA1-JFK")))

    assert rows == [
        {
            "flight_id": "2013-01-01-UA1545-EWR",
            "flight_date": dt.date(2013, 1, 1),
            "scheduled_departure": departure,
            "dep_delay_min": 2,
            "tail_number": None,
        }
    ]
    (body,) = state.bodies(QUERY_PATH)
    assert f"FROM `{PROJECT}.{DATASET}.flights_current`" in body["query"]
    assert body["jobCreationMode"] == "JOB_CREATION_OPTIONAL"
    assert body["maximumBytesBilled"] == "123000000"
    assert body["jobTimeoutMs"] == "5000"
    assert body["useQueryCache"] is True
    assert body["useLegacySql"] is False
    assert body["location"] == "EU"
    assert body["parameterMode"] == "NAMED"
    params = {
        p["name"]: (p["parameterType"]["type"], p["parameterValue"]["value"])
        for p in body["queryParameters"]
    }
    assert params == {
        "date_from": ("DATE", "2013-01-01"),
        "carrier": ("STRING", "UA"),
        "status": ("STRING", "arrived"),
        "after_value": ("TIMESTAMP", "2013-01-01 10:15:00+00:00"),
        "after_flight_id": ("STRING", "2013-01-01-AA1-JFK"),
        "limit": ("INT64", "50"),
    }
    for value in ("UA", "arrived", "2013-01-01", "AA1"):
        assert value not in body["query"]  # values travel only as parameters


def test_get_flight_binds_the_id_and_its_date_and_returns_none_when_no_row(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    state.query_schema = _schema(("flight_id", "STRING"))

    assert warehouse.get_flight("2013-01-01-UA1545-EWR") is None

    (body,) = state.bodies(QUERY_PATH)
    # The date predicate lets BigQuery prune the view's scan to one partition.
    assert "flight_date = @flight_date" in body["query"]
    assert body["queryParameters"] == [
        {
            "name": "flight_id",
            "parameterType": {"type": "STRING"},
            "parameterValue": {"value": "2013-01-01-UA1545-EWR"},
        },
        {
            "name": "flight_date",
            "parameterType": {"type": "DATE"},
            "parameterValue": {"value": "2013-01-01"},
        },
    ]


def test_delay_stats_groups_by_the_allowed_key_and_parses_the_numbers(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    state.query_schema = _schema(("carrier", "STRING"), *STATS_SCHEMA)
    state.query_rows = [
        {
            "carrier": "AA",
            "flights": "4",
            "cancelled": "1",
            "avg_dep_delay_min": "3.5",
            "avg_arr_delay_min": None,
            "median_dep_delay_min": "2",
            "p90_dep_delay_min": "9.5",
        },
    ]

    (stats,) = warehouse.delay_stats(FlightFilter(origin="JFK"), "carrier")

    assert (stats.key, stats.flights, stats.cancelled) == ({"carrier": "AA"}, 4, 1)
    assert (stats.avg_dep_delay_min, stats.avg_arr_delay_min, stats.on_time_rate) == (
        3.5,
        None,
        None,
    )
    assert (stats.median_dep_delay_min, stats.p90_dep_delay_min) == (2.0, 9.5)
    assert (stats.median_arr_delay_min, stats.p90_arr_delay_min) == (None, None)
    (body,) = state.bodies(QUERY_PATH)
    assert "GROUP BY carrier ORDER BY carrier" in body["query"]
    assert "PERCENTILE_CONT(dep_delay_min, 0.9) OVER (PARTITION BY carrier)" in body["query"]
    assert [p["name"] for p in body["queryParameters"]] == ["origin"]


def test_delay_stats_groups_by_a_pair_and_by_hour_of_day(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    state.query_schema = _schema(("carrier", "STRING"), ("hour", "INTEGER"), *STATS_SCHEMA)
    state.query_rows = [{"carrier": "UA", "hour": "7", "flights": "2", "cancelled": "0"}]

    (stats,) = warehouse.delay_stats(FlightFilter(), ("carrier", "hour"))

    assert stats.key == {"carrier": "UA", "hour": 7}
    (body,) = state.bodies(QUERY_PATH)
    assert "EXTRACT(HOUR FROM scheduled_departure) AS hour" in body["query"]
    assert "GROUP BY carrier, hour ORDER BY carrier, hour" in body["query"]


def test_flight_events_reads_the_events_table_pruned_to_the_flight_date(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    state.query_schema = _schema(("event_id", "STRING"))
    state.query_rows = [{"event_id": "a"}, {"event_id": "b"}]

    assert warehouse.flight_events("2013-01-01-UA1545-EWR") == [
        {"event_id": "a"},
        {"event_id": "b"},
    ]

    (body,) = state.bodies(QUERY_PATH)
    assert f"FROM `{PROJECT}.{DATASET}.events`" in body["query"]
    params = {
        p["name"]: (p["parameterType"]["type"], p["parameterValue"]["value"])
        for p in body["queryParameters"]
    }
    assert params == {
        "flight_id": ("STRING", "2013-01-01-UA1545-EWR"),
        "flight_date": ("DATE", "2013-01-01"),
    }


def test_delay_stats_rejects_an_unknown_group_without_querying(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    with pytest.raises(WarehouseError):
        warehouse.delay_stats(FlightFilter(), "tail_number; DROP TABLE x")  # type: ignore[arg-type]
    assert fake[0].requests == []


def test_newest_publish_time_reads_the_events_table_as_utc(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    state.query_schema = _schema(("t", "TIMESTAMP"))
    state.query_rows = [{"t": _micros(PUBLISHED)}]

    assert warehouse.newest_publish_time() == PUBLISHED

    (body,) = state.bodies(QUERY_PATH)
    assert f"FROM `{PROJECT}.{DATASET}.events`" in body["query"]


def test_newest_publish_time_is_none_while_the_table_is_empty(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    state.query_schema = _schema(("t", "TIMESTAMP"))
    state.query_rows = [{"t": None}]

    assert warehouse.newest_publish_time() is None


def test_query_retries_a_server_error_once(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    state.query_schema = _schema(("ok", "INTEGER"))
    state.query_rows = [{"ok": "1"}]
    state.script[QUERY_PATH] = [_error(500, "backendError")]

    warehouse.ping()

    assert len(state.bodies(QUERY_PATH)) == 2


@pytest.mark.parametrize("failure", [_error(503, "backendError"), _error(400, "invalidQuery")])
def test_ping_raises_unavailable_when_bigquery_fails(
    fake: tuple[FakeBigQuery, str],
    warehouse: BigQueryWarehouse,
    failure: tuple[int, dict[str, Any]],
) -> None:
    fake[0].script[QUERY_PATH] = [failure] * 5

    with pytest.raises(WarehouseUnavailable):
        warehouse.ping()


def test_bytes_billed_cap_exceeded_is_a_permanent_query_error(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    fake[0].script[QUERY_PATH] = [_error(400, "bytesBilledLimitExceeded")]

    with pytest.raises(WarehouseError) as caught:
        warehouse.list_flights(Selection(FlightFilter(), 10))

    assert not isinstance(caught.value, WarehouseUnavailable)
    assert len(fake[0].bodies(QUERY_PATH)) == 1


def test_an_export_is_one_query_read_in_pages_and_rendered_like_the_api(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    departure = dt.datetime(2013, 1, 1, 10, 15, tzinfo=dt.UTC)
    state.query_schema = _schema(
        ("flight_id", "STRING"), ("scheduled_departure", "TIMESTAMP"), ("tail_number", "STRING")
    )
    state.query_rows = [
        {"flight_id": "2013-01-01-UA1545-EWR", "scheduled_departure": _micros(departure)},
        {"flight_id": "2013-01-01-UA1546-EWR", "scheduled_departure": _micros(departure)},
    ]
    columns = ["flight_id", "scheduled_departure", "tail_number"]

    export = warehouse.export_flights(
        Selection(FlightFilter(carrier="UA"), 100_000, columns=columns), chunk=500
    )
    assert state.bodies(QUERY_PATH) == []  # lazy: nothing sent before the first piece is asked
    pieces = list(export)

    assert pieces == [
        b"2013-01-01-UA1545-EWR,2013-01-01T10:15:00Z,\r\n"
        b"2013-01-01-UA1546-EWR,2013-01-01T10:15:00Z,\r\n"
    ]
    (body,) = state.bodies(QUERY_PATH)  # one query for the whole export
    assert body["maxResults"] == 500 and body["queryParameters"]
    assert f"FROM `{PROJECT}.{DATASET}.flights_current`" in body["query"]
