"""HTTP semantics of the API: conditional GET, ETag stability, content negotiation, the query rules.

Conditional requests are checked with the result cache on (hits answered by the gate) and off
(every request through Flask and werkzeug's `make_conditional`), for JSON, CSV and NDJSON.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_type_hints

import msgspec
import pytest
from flask.testing import FlaskClient
from flightpipe_api import create_app, routes
from flightpipe_api.params import FlightsQuery, parse_query
from werkzeug.datastructures import MultiDict
from werkzeug.test import EnvironBuilder

from flightpipe.contract import FlightEvent
from flightpipe.settings import load_settings
from flightpipe.warehouse import WarehouseError, WarehouseUnavailable
from flightpipe.warehouse.duckdb import DuckDBWarehouse
from tests.factories import envelopes, make_event

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
# Tail number candidates; the contract decides which can be stored (`_storable`), and the API
# must agree with it both ways.
CANDIDATE_TAILS = (
    "N14228",
    "N1-23",
    "c-gxyz",
    "9V SKA",
    "N123.4",
    "' OR 1=1--",
    "N" * 16,
    "N" * 17,
)
_TAIL_TYPE = next(
    t
    for t in get_args(get_type_hints(FlightEvent, include_extras=True)["tail_number"])
    if t is not type(None)
)


def _storable(tail: str) -> bool:
    try:
        msgspec.convert(tail, _TAIL_TYPE)
    except msgspec.ValidationError:
        return False
    return True


ODD_TAILS = tuple(t for t in CANDIDATE_TAILS if _storable(t))
GETS = (
    "/v1/flights?carrier=UA",
    "/v1/flights?carrier=UA&format=csv",
    "/v1/flights?carrier=UA&format=ndjson",
    "/v1/stats/delays?group_by=origin",
    "/v1/stats/delays?format=csv",
)


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DuckDBWarehouse]:
    path: Path = tmp_path_factory.mktemp("http") / "w.duckdb"
    wh = DuckDBWarehouse(path)
    events = [
        make_event(carrier="UA", flight_number=100 + i, tail_number=t)
        for i, t in enumerate(ODD_TAILS)
    ]
    events += [make_event(carrier="AA", origin="JFK", flight_number=7, tail_number="N1")]
    wh.write(envelopes(events, NOW))
    yield wh
    wh.close()


@pytest.fixture(params=["cache-on", "cache-off"])
def client(request: pytest.FixtureRequest, warehouse: DuckDBWarehouse) -> FlaskClient:
    ttl = "30" if request.param == "cache-on" else "0"
    settings = load_settings({"FLIGHTPIPE_API_CACHE_TTL_SECONDS": ttl})
    return create_app(settings, warehouse=warehouse).test_client()


@pytest.mark.parametrize("path", GETS)
def test_if_none_match_with_the_current_etag_is_304_whatever_the_cache(
    client: FlaskClient, path: str
) -> None:
    first = client.get(path)
    etag = first.headers["ETag"]
    assert first.status_code == 200 and etag.startswith('"') and etag.endswith('"')
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = client.get(path, headers={"If-None-Match": header})
        assert again.status_code == 304, (header, again.headers)
        assert not again.data and again.headers["ETag"] == etag
    assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200


@pytest.mark.parametrize("path", GETS)
def test_the_same_data_gives_the_same_etag_and_body(client: FlaskClient, path: str) -> None:
    first, second = client.get(path), client.get(path)
    assert first.data == second.data and first.headers["ETag"] == second.headers["ETag"]


def test_the_warehouse_time_is_in_server_timing_not_in_the_body(client: FlaskClient) -> None:
    response = client.get("/v1/flights?carrier=AA")
    assert response.get_json()["meta"] == {"count": 1}
    timing = response.headers["Server-Timing"]
    assert timing.startswith("db;dur=") or timing == 'cache;desc="hit"'
    if response.headers["X-Cache"] == "miss":
        assert float(timing.removeprefix("db;dur=")) >= 0


def test_if_match_with_another_tag_is_412(client: FlaskClient) -> None:
    path = "/v1/flights?carrier=AA"
    etag = client.get(path).headers["ETag"]
    assert client.get(path, headers={"If-Match": '"other"'}).status_code == 412
    assert client.get(path, headers={"If-Match": etag}).status_code == 200


def test_one_flight_and_its_events_answer_conditional_requests(client: FlaskClient) -> None:
    flight_id = client.get("/v1/flights?carrier=AA").get_json()["data"][0]["flight_id"]
    for path in (f"/v1/flights/{flight_id}", f"/v1/flights/{flight_id}/events?format=csv"):
        etag = client.get(path).headers["ETag"]
        assert client.get(path, headers={"If-None-Match": etag}).status_code == 304


@pytest.mark.parametrize(
    ("accept", "mimetype"),
    [
        ("application/json; charset=utf-8", "application/json"),
        ("application/json;charset=UTF-8", "application/json"),
        ("text/csv; charset=utf-8", "text/csv"),
        ("application/x-ndjson; charset=utf-8", "application/x-ndjson"),
        ("text/csv;q=0.5, application/json", "application/json"),
        ("*/*", "application/json"),
    ],
)
def test_accept_with_a_utf8_charset_or_weights_is_honoured(
    client: FlaskClient, accept: str, mimetype: str
) -> None:
    response = client.get("/v1/flights?carrier=AA", headers={"Accept": accept})
    assert response.status_code == 200 and response.mimetype == mimetype


def test_another_charset_is_406(client: FlaskClient) -> None:
    response = client.get("/v1/flights", headers={"Accept": "application/json; charset=latin-1"})
    assert response.status_code == 406 and response.get_json()["error"]["code"] == 406


@pytest.mark.parametrize("tail", CANDIDATE_TAILS)
def test_a_tail_number_is_queryable_exactly_when_the_contract_can_store_it(
    client: FlaskClient, tail: str
) -> None:
    response = client.get("/v1/flights", query_string={"tail_number": tail})
    if _storable(tail):
        assert response.status_code == 200, response.get_data(as_text=True)
        assert [r["tail_number"] for r in response.get_json()["data"]] == [tail]
    else:
        assert response.status_code == 400
        assert response.get_json()["error"]["parameter"] == "tail_number"


def test_the_query_struct_carries_parsed_typed_values() -> None:
    args = MultiDict(
        [("flight_number", "-0"), ("fields", "carrier,flight_id"), ("sort", "-dep_delay_min")]
    )
    query = parse_query(args, FlightsQuery)
    assert query.flight_number == 0 and query.fields == ("carrier", "flight_id")
    assert query.order.field == "dep_delay_min" and query.order.descending
    assert query.limit == 100 and query.format is None


def test_exports_beyond_the_stream_cap_are_503_and_small_requests_still_answer(
    warehouse: DuckDBWarehouse,
) -> None:
    settings = load_settings({"FLIGHTPIPE_HTTP_THREADS": "2"})  # one export stream at a time
    client = create_app(settings, warehouse=warehouse).test_client()
    export = "/v1/flights?format=csv&limit=10000"
    first = client.get(export, buffered=False)  # streaming, not yet closed
    assert first.status_code == 200
    busy = client.get(export)
    assert busy.status_code == 503 and busy.headers["Retry-After"].isdigit()
    assert busy.get_json()["error"]["status"] == "UNAVAILABLE"
    assert client.get("/v1/flights?carrier=AA").status_code == 200  # not starved
    rows = b"".join(first.response).decode().splitlines()
    first.close()  # the server closes the response: the slot is free again
    assert len(rows) == 1 + len(ODD_TAILS) + 1
    assert client.get(export).status_code == 200


def test_an_export_read_to_the_end_frees_its_slot_even_if_never_closed(
    warehouse: DuckDBWarehouse,
) -> None:
    settings = load_settings({"FLIGHTPIPE_HTTP_THREADS": "2"})
    client = create_app(settings, warehouse=warehouse).test_client()
    export = "/v1/flights?format=ndjson&limit=10000"
    for _ in range(3):
        response = client.get(export, buffered=False)
        assert response.status_code == 200
        assert len(b"".join(response.response).splitlines()) == len(ODD_TAILS) + 1
        # not closed: the generator's end released the slot


def test_a_large_export_is_one_query_read_as_the_client_takes_it(
    warehouse: DuckDBWarehouse, mocker: Any
) -> None:
    mocker.patch.object(routes, "EXPORT_CHUNK", 2)  # chunks of 2 flights
    client = create_app(load_settings({}), warehouse=warehouse).test_client()
    produced: list[bytes] = []
    export = warehouse.export_flights

    def counted(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        for piece in export(*args, **kwargs):
            produced.append(piece)
            yield piece

    exports = mocker.patch.object(warehouse, "export_flights", side_effect=counted)
    pages = mocker.spy(warehouse, "list_flights")
    response = client.get("/v1/flights?format=csv&limit=50000", buffered=False)
    assert response.status_code == 200 and "Content-Length" not in response.headers
    assert len(produced) == 1  # only the first chunk read: the rest waits for the client
    assert len(b"".join(response.response).splitlines()) == 1 + len(ODD_TAILS) + 1
    assert len(produced) == -(-(len(ODD_TAILS) + 1) // 2)  # full chunks, then a short one
    assert exports.call_count == 1 and pages.call_count == 0  # one query, no keyset re-runs
    response.close()


def test_export_chunks_are_produced_on_the_low_priority_lane_not_the_request_thread(
    warehouse: DuckDBWarehouse, mocker: Any
) -> None:
    mocker.patch.object(routes, "EXPORT_CHUNK", 2)
    client = create_app(load_settings({}), warehouse=warehouse).test_client()
    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen: list[tuple[str, int]] = []
    export = warehouse.export_flights

    def watched(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        for piece in export(*args, **kwargs):
            me = threading.current_thread()
            seen.append((me.name, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
            yield piece

    mocker.patch.object(warehouse, "export_flights", side_effect=watched)
    response = client.get("/v1/flights?format=csv&limit=50000")
    assert response.status_code == 200
    assert len(response.get_data().splitlines()) == 1 + len(ODD_TAILS) + 1
    assert len(seen) == -(-(len(ODD_TAILS) + 1) // 2)
    # Every chunk on the one lane thread, niced +10 as docs/reliability.md promises (the kernel
    # caps nice at 19); this (request) thread keeps its priority.
    assert base < 19, "the test process is niced to the floor: nothing lower to show"
    assert {name.split("_")[0] for name, _ in seen} == {"export-lane"}
    assert {nice for _, nice in seen} == {min(19, base + 10)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base


def test_a_streamed_export_is_one_snapshot_while_the_subscriber_writes(tmp_path: Path) -> None:
    wh = DuckDBWarehouse(tmp_path / "w.duckdb")
    wh.write(envelopes([make_event(carrier="DL", flight_number=i + 1) for i in range(12)], NOW))
    client = create_app(load_settings({}), warehouse=wh).test_client()
    routes_chunk, routes.EXPORT_CHUNK = routes.EXPORT_CHUNK, 3
    try:
        response = client.get("/v1/flights?format=ndjson&limit=50000", buffered=False)
        body = iter(response.response)
        first = next(body)  # the export's query has started
        # Meanwhile: every stored flight gets a newer state and a new flight arrives.
        later = [make_event(carrier="DL", flight_number=i + 1, tail_number="N9") for i in range(12)]
        later.append(make_event(carrier="DL", flight_number=99))
        wh.write(envelopes(later, NOW + dt.timedelta(1)))
        rows = [msgspec.json.decode(line) for line in b"".join([first, *body]).splitlines()]
        response.close()
    finally:
        routes.EXPORT_CHUNK = routes_chunk
    assert len(rows) == 12 and {r["tail_number"] for r in rows} == {"N14228"}
    after = [
        msgspec.json.decode(line)
        for line in client.get("/v1/flights?format=ndjson&limit=50000").get_data().splitlines()
    ]
    assert len(after) == 13 and {r["tail_number"] for r in after} == {"N9", "N14228"}
    wh.close()


def test_an_export_dropped_unread_and_unclosed_frees_its_slot(warehouse: DuckDBWarehouse) -> None:
    settings = load_settings({"FLIGHTPIPE_HTTP_THREADS": "2"})
    app = create_app(settings, warehouse=warehouse)
    statuses = []
    for _ in range(3):  # a caller that takes the body and drops it unread and unclosed
        environ = EnvironBuilder(path="/v1/flights", query_string="format=csv&limit=10000")
        body = app(environ.get_environ(), lambda status, _headers: statuses.append(status))
        del body
        gc.collect()
    assert statuses == ["200 OK"] * 3


def _failing_export(pieces_before: int, error: WarehouseError) -> Any:
    def export(*_args: Any, **_kwargs: Any) -> Iterator[bytes]:
        for _ in range(pieces_before):
            yield b"2013-01-01-UA1-EWR\r\n"
        raise error

    return export


def test_an_export_whose_query_fails_is_a_503_and_frees_its_slot(
    warehouse: DuckDBWarehouse, mocker: Any
) -> None:
    settings = load_settings({"FLIGHTPIPE_HTTP_THREADS": "2"})  # one export stream at a time
    client = create_app(settings, warehouse=warehouse).test_client()
    export = "/v1/flights?format=csv&limit=10000&fields=flight_id"
    failing = _failing_export(0, WarehouseUnavailable("the file is locked"))
    mocker.patch.object(warehouse, "export_flights", side_effect=failing)
    response = client.get(export)
    assert response.status_code == 503 and response.get_json()["error"]["status"] == "UNAVAILABLE"
    mocker.stopall()
    assert client.get(export).status_code == 200  # the slot was released


def test_an_export_failing_mid_stream_ends_early_and_frees_its_slot(
    warehouse: DuckDBWarehouse, mocker: Any
) -> None:
    settings = load_settings({"FLIGHTPIPE_HTTP_THREADS": "2"})
    client = create_app(settings, warehouse=warehouse).test_client()
    export = "/v1/flights?format=csv&limit=10000&fields=flight_id"
    failing = _failing_export(2, WarehouseError("the query was interrupted"))
    mocker.patch.object(warehouse, "export_flights", side_effect=failing)
    response = client.get(export)
    assert response.status_code == 200
    assert response.get_data(as_text=True).splitlines() == [
        "flight_id",
        *["2013-01-01-UA1-EWR"] * 2,
    ]
    mocker.stopall()
    rows = client.get(export).get_data(as_text=True).splitlines()
    assert len(rows) == 1 + len(ODD_TAILS) + 1  # the slot was released; the next export is whole
