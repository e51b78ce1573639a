"""The analysts' API features through Flask's test client, on a real DuckDB file.

Filters, sorting, columns, formats, the events endpoint, grouped statistics, caching (ETag, 304,
the result cache and its invalidation), API keys and rate limits, the query time limit, and
long ranges allowed when narrowed. One app on one DuckDB file, loaded once for the module, serves
them all. The OpenAPI document, the docs page and the 400s for hostile input are in
test_api_document.py.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flightpipe_api import create_app, routes
from flightpipe_api.tokens import encode_page_token
from werkzeug.test import TestResponse

from flightpipe.contract import COLUMN_NAMES
from flightpipe.settings import ConfigError, load_settings
from flightpipe.warehouse import Envelope
from flightpipe.warehouse.duckdb import DuckDBWarehouse
from flightpipe.warehouse.port import Sort
from tests.factories import envelopes, make_event

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DAY = dt.date(2013, 7, 1)
KEY = "s3cret-key-for-tests"
KEY_HASH = "sha256:" + hashlib.sha256(KEY.encode()).hexdigest()


def _events() -> list[Any]:
    events = []
    for i, (carrier, origin, dep, arr, tail) in enumerate(
        [
            ("AA", "JFK", 5, 10, "N1"),
            ("AA", "JFK", 50, 60, "N2"),
            ("AA", "EWR", -3, -8, "N1"),
            ("UA", "EWR", 120, 130, "N3"),
            ("UA", "EWR", None, None, "N3"),
            ("UA", "LGA", 0, 20, None),
            ("B6", "JFK", 15, 16, "N4"),
        ]
    ):
        kwargs: dict[str, Any] = {
            "carrier": carrier,
            "origin": origin,
            "flight_number": 10 + i,
            "flight_date": DAY,
            "dep_delay_min": dep,
            "arr_delay_min": arr,
            "tail_number": tail,
            "scheduled_departure": dt.datetime(2013, 7, 1, 6 + i, 0, tzinfo=dt.UTC),
        }
        if dep is None:
            kwargs |= {"status": "cancelled", "actual_departure": None, "actual_arrival": None}
        events.append(make_event(**kwargs))
    first = events[0]
    # Two earlier states of the first flight: its history has three events.
    for hours, status in ((-6, "scheduled"), (-3, "departed")):
        events.append(
            make_event(
                carrier="AA",
                origin="JFK",
                flight_number=10,
                flight_date=DAY,
                scheduled_departure=first.scheduled_departure,
                status=status,
                event_time=first.event_time + dt.timedelta(hours=hours),
            )
        )
    return events


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DuckDBWarehouse]:
    wh = DuckDBWarehouse(tmp_path_factory.mktemp("features") / "w.duckdb")
    wh.write(envelopes(_events(), NOW))
    yield wh
    wh.close()


@pytest.fixture(scope="module")
def app(warehouse: DuckDBWarehouse) -> Flask:
    return create_app(load_settings({}), warehouse=warehouse)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def ids(response: TestResponse) -> list[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return [r["flight_id"] for r in response.get_json()["data"]]


def assert_400(response: TestResponse, parameter: str) -> str:
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["parameter"] == parameter and parameter in error["message"]
    return str(error["message"])


# --- filters, sort, fields ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("flight_number=13", ["UA13"]),
        ("tail_number=N1", ["AA10", "AA12"]),
        ("min_dep_delay=50", ["AA11", "UA13"]),
        ("max_dep_delay=0", ["AA12", "UA15"]),
        ("min_arr_delay=16&max_arr_delay=60", ["AA11", "UA15", "B616"]),
        ("carrier=AA&origin=JFK&min_arr_delay=11", ["AA11"]),
        ("dest=IAH&status=cancelled", ["UA14"]),
    ],
)
def test_every_filter_selects_the_matching_flights(
    client: FlaskClient, query: str, expected: list[str]
) -> None:
    got = ids(client.get(f"/v1/flights?{query}"))
    assert [i.split("-")[3] for i in got] == expected


def test_sorting_descending_by_a_delay_puts_nulls_last_and_pages_keep_the_order(
    client: FlaskClient,
) -> None:
    seen: list[str] = []
    url = "/v1/flights?sort=-arr_delay_min&limit=2&fields=flight_id,arr_delay_min"
    delays: list[int | None] = []
    while url:
        body = client.get(url).get_json()
        seen += [r["flight_id"] for r in body["data"]]
        delays += [r["arr_delay_min"] for r in body["data"]]
        assert all(set(r) == {"flight_id", "arr_delay_min"} for r in body["data"])
        token = body["next_page_token"]
        url = (
            f"/v1/flights?sort=-arr_delay_min&limit=2&fields=flight_id,arr_delay_min&page_token={token}"
            if token
            else ""
        )
    assert delays == [130, 60, 20, 16, 10, -8, None]
    assert len(seen) == len(set(seen)) == 7


def test_fields_choose_and_order_the_columns_even_without_the_cursor_columns(
    client: FlaskClient,
) -> None:
    body = client.get("/v1/flights?fields=carrier,dep_delay_min&limit=3").get_json()
    assert [list(r) for r in body["data"]] == [["carrier", "dep_delay_min"]] * 3
    assert body["next_page_token"]  # the cursor still knows the flight_id it did not show
    assert body["meta"] == {"count": 3}


def test_a_page_token_is_bound_to_its_sort(client: FlaskClient) -> None:
    token = encode_page_token((dt.datetime(2013, 7, 1, tzinfo=dt.UTC), "x"))
    message = assert_400(client.get(f"/v1/flights?sort=-carrier&page_token={token}"), "page_token")
    assert "sort" in message
    good = encode_page_token(("UA", "2013-07-01-UA13-EWR"), Sort("carrier", descending=True))
    assert client.get(f"/v1/flights?sort=-carrier&page_token={good}").status_code == 200


# --- events and statistics ---------------------------------------------------------------------


def test_a_flights_events_come_in_event_time_order(client: FlaskClient) -> None:
    body = client.get("/v1/flights/2013-07-01-AA10-JFK/events").get_json()
    assert [e["status"] for e in body["data"]] == ["scheduled", "departed", "arrived"]
    times = [e["event_time"] for e in body["data"]]
    assert times == sorted(times) and body["meta"]["count"] == 3


def test_events_of_an_unknown_flight_are_404_and_a_bad_id_is_400(client: FlaskClient) -> None:
    assert client.get("/v1/flights/2013-07-01-ZZ1-AAA/events").status_code == 404
    assert_400(client.get("/v1/flights/nope/events"), "flight_id")


def test_stats_group_by_a_pair_with_medians_and_90th_percentiles(client: FlaskClient) -> None:
    body = client.get("/v1/stats/delays?group_by=carrier,origin").get_json()
    assert body["group_by"] == "carrier,origin"
    keys = [(r["carrier"], r["origin"]) for r in body["data"]]
    assert keys == sorted(keys) and ("AA", "JFK") in keys
    aa_jfk = body["data"][keys.index(("AA", "JFK"))]
    assert aa_jfk["flights"] == 2
    assert aa_jfk["median_arr_delay_min"] == pytest.approx(35.0)  # 10 and 60
    assert aa_jfk["p90_arr_delay_min"] == pytest.approx(55.0)  # 10 + 0.9 * 50


def test_stats_group_by_hour_of_day(client: FlaskClient) -> None:
    body = client.get("/v1/stats/delays?group_by=hour").get_json()
    assert [r["hour"] for r in body["data"]] == list(range(6, 13))


@pytest.mark.parametrize(
    "group_by", ["carrier,carrier", "carrier,origin,dest", "tail_number", "carrier,", ""]
)
def test_bad_groupings_are_400(client: FlaskClient, group_by: str) -> None:
    assert_400(client.get(f"/v1/stats/delays?group_by={group_by}"), "group_by")


# --- formats -----------------------------------------------------------------------------------


def test_csv_by_format_parameter_has_a_header_and_the_chosen_columns(client: FlaskClient) -> None:
    response = client.get("/v1/flights?format=csv&fields=flight_id,tail_number&carrier=UA")
    assert response.mimetype == "text/csv"
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert rows[0] == ["flight_id", "tail_number"]
    assert rows[1:] == [
        ["2013-07-01-UA13-EWR", "N3"],
        ["2013-07-01-UA14-EWR", "N3"],
        ["2013-07-01-UA15-LGA", ""],
    ]


def test_ndjson_by_accept_header_has_one_json_object_a_line(client: FlaskClient) -> None:
    response = client.get("/v1/flights?carrier=AA", headers={"Accept": "application/x-ndjson"})
    assert response.mimetype == "application/x-ndjson"
    lines = response.get_data(as_text=True).splitlines()
    assert [json.loads(line)["carrier"] for line in lines] == ["AA"] * 3
    assert set(json.loads(lines[0])) == set(COLUMN_NAMES)


def test_an_export_page_gives_the_next_token_in_a_header(client: FlaskClient) -> None:
    response = client.get("/v1/flights?format=ndjson&limit=2")
    assert response.headers["X-Next-Page-Token"]
    assert len(response.get_data(as_text=True).splitlines()) == 2


def test_a_large_export_is_streamed_in_chunks_and_complete(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes, "EXPORT_CHUNK", 2)  # 7 flights: 4 chunks
    response = client.get("/v1/flights?format=csv&limit=6&fields=flight_id")
    assert response.is_streamed
    rows = response.get_data(as_text=True).splitlines()
    assert rows[0] == "flight_id" and len(rows[1:]) == len(set(rows[1:])) == 6
    assert "ETag" not in response.headers and response.headers["Cache-Control"] == "no-store"


def test_an_unacceptable_accept_header_is_406(client: FlaskClient) -> None:
    response = client.get("/v1/flights", headers={"Accept": "image/png"})
    assert response.status_code == 406 and response.get_json()["error"]["code"] == 406


def test_stats_and_events_export_as_csv(client: FlaskClient) -> None:
    stats = client.get("/v1/stats/delays?format=csv&group_by=origin").get_data(as_text=True)
    assert stats.splitlines()[0].startswith("origin,flights,cancelled,")
    events = client.get("/v1/flights/2013-07-01-AA10-JFK/events?format=csv").get_data(as_text=True)
    assert len(events.splitlines()) == 4


def test_json_limit_stays_at_1000_but_exports_may_ask_more(client: FlaskClient) -> None:
    assert_400(client.get("/v1/flights?limit=1001"), "limit")
    assert client.get("/v1/flights?limit=100000&format=ndjson").status_code == 200
    assert_400(client.get("/v1/flights?limit=100001&format=ndjson"), "limit")


# --- ranges ---------------------------------------------------------------------------------


def test_a_long_range_is_allowed_when_narrowed(client: FlaskClient) -> None:
    response = client.get("/v1/flights?date_from=2013-01-01&date_to=2014-12-31&carrier=AA")
    assert len(ids(response)) == 3


# --- caching -----------------------------------------------------------------------------------


def test_get_responses_carry_an_etag_and_answer_if_none_match_with_304(
    client: FlaskClient,
) -> None:
    first = client.get("/v1/flights?carrier=B6")
    etag = first.headers["ETag"]
    assert first.headers["Cache-Control"].startswith("private, max-age=")
    again = client.get("/v1/flights?carrier=B6", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["ETag"] == etag and not again.data
    changed = client.get("/v1/flights?carrier=B6", headers={"If-None-Match": '"other"'})
    assert changed.status_code == 200


def test_a_hot_query_is_served_from_the_cache_without_the_warehouse(
    tmp_path: Path, mocker: Any
) -> None:
    wh = DuckDBWarehouse(tmp_path / "w.duckdb")
    wh.write(envelopes(_events(), NOW))
    client = create_app(load_settings({}), warehouse=wh).test_client()
    spy = mocker.spy(wh, "list_flights")
    first = client.get("/v1/flights?origin=EWR")
    second = client.get("/v1/flights?origin=EWR")
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("miss", "hit")
    assert second.data == first.data and second.headers["ETag"] == first.headers["ETag"]
    assert second.headers["X-Request-ID"] != first.headers["X-Request-ID"]
    assert spy.call_count == 1
    hit_304 = client.get("/v1/flights?origin=EWR", headers={"If-None-Match": first.headers["ETag"]})
    assert hit_304.status_code == 304 and spy.call_count == 1
    wh.close()


def test_the_cache_is_dropped_when_the_ingest_watermark_moves(tmp_path: Path) -> None:
    wh = DuckDBWarehouse(tmp_path / "w.duckdb")
    wh.write([Envelope(make_event(carrier="AA", flight_date=DAY), "a", NOW)])
    settings = load_settings({"FLIGHTPIPE_API_CACHE_CHECK_SECONDS": "0"})  # every request
    client = create_app(settings, warehouse=wh).test_client()
    assert len(ids(client.get("/v1/flights?carrier=AA"))) == 1
    wh.write([Envelope(make_event(carrier="AA", flight_date=DAY), "b", NOW + dt.timedelta(1))])
    response = client.get("/v1/flights?carrier=AA")
    assert response.headers["X-Cache"] == "miss" and len(ids(response)) == 2
    wh.close()


def test_the_watermark_is_read_at_most_once_per_check_interval(tmp_path: Path, mocker: Any) -> None:
    """Each read is a billed query on BigQuery: the setting bounds them, and the price is that
    a write shows only after the next check (or the TTL)."""
    wh = DuckDBWarehouse(tmp_path / "w.duckdb")
    wh.write([Envelope(make_event(carrier="AA", flight_date=DAY), "a", NOW)])
    settings = load_settings(
        {"FLIGHTPIPE_API_CACHE_CHECK_SECONDS": "600", "FLIGHTPIPE_API_CACHE_TTL_SECONDS": "3600"}
    )
    client = create_app(settings, warehouse=wh).test_client()
    reads = mocker.spy(wh, "newest_publish_time")
    clock = iter(range(0, 10_000, 10))  # the cache's clock: 10 s later at every reading
    mocker.patch("flightpipe_api.cache.time.monotonic", side_effect=lambda: float(next(clock)))
    assert len(ids(client.get("/v1/flights?carrier=AA"))) == 1
    wh.write([Envelope(make_event(carrier="AA", flight_date=DAY), "b", NOW + dt.timedelta(1))])
    for _ in range(5):
        response = client.get("/v1/flights?carrier=AA")
        assert response.headers["X-Cache"] == "hit" and len(ids(response)) == 1
    assert reads.call_count == 1
    wh.close()


def test_a_zero_ttl_disables_the_cache(warehouse: DuckDBWarehouse) -> None:
    settings = load_settings({"FLIGHTPIPE_API_CACHE_TTL_SECONDS": "0"})
    client = create_app(settings, warehouse=warehouse).test_client()
    client.get("/v1/flights?carrier=UA")
    assert client.get("/v1/flights?carrier=UA").headers["X-Cache"] == "miss"


def test_errors_are_never_cached(client: FlaskClient) -> None:
    response = client.get("/v1/flights?carrier=nope")
    assert response.headers["Cache-Control"] == "no-store" and "ETag" not in response.headers


# --- keys and rate limits ----------------------------------------------------------------------


@pytest.fixture
def keyed(warehouse: DuckDBWarehouse) -> FlaskClient:
    settings = load_settings(
        {
            "FLIGHTPIPE_API_KEYS": f" {KEY_HASH} , sha256:{'0' * 64}",
            "FLIGHTPIPE_API_RATE_LIMIT": "3/minute",
        }
    )
    return create_app(settings, warehouse=warehouse).test_client()


def test_without_a_valid_key_v1_is_401_but_probes_and_docs_stay_open(keyed: FlaskClient) -> None:
    for headers in (
        {},
        {"X-API-Key": "wrong"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": KEY},
    ):
        response = keyed.get("/v1/flights", headers=headers)
        assert (
            response.status_code == 401
            and response.get_json()["error"]["status"] == "UNAUTHENTICATED"
        )
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert keyed.get(path).status_code == 200


def test_a_key_works_in_either_header_and_x_api_key_wins(keyed: FlaskClient) -> None:
    assert keyed.get("/v1/flights", headers={"X-API-Key": KEY}).status_code == 200
    assert keyed.get("/v1/flights", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    behind_iam = {"Authorization": "Bearer google-id-token", "X-API-Key": KEY}
    assert keyed.get("/v1/flights", headers=behind_iam).status_code == 200


def test_each_key_is_rate_limited_with_429_and_retry_after(keyed: FlaskClient) -> None:
    statuses = [keyed.get("/v1/flights", headers={"X-API-Key": KEY}).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = keyed.get("/v1/flights", headers={"X-API-Key": KEY})
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.get_json()["error"]["status"] == "RESOURCE_EXHAUSTED"


@pytest.mark.parametrize("keys", ["plain-key", "sha256:abc", f"{KEY_HASH},md5:{'0' * 32}"])
def test_keys_must_be_configured_as_sha256_hashes(keys: str, warehouse: DuckDBWarehouse) -> None:
    with pytest.raises(ConfigError, match="FLIGHTPIPE_API_KEYS"):
        create_app(load_settings({"FLIGHTPIPE_API_KEYS": keys}), warehouse=warehouse)


# --- limits ------------------------------------------------------------------


def test_a_query_over_the_time_limit_is_503_with_retry_after(tmp_path: Path) -> None:
    wh = DuckDBWarehouse(tmp_path / "w.duckdb", query_timeout=0.2, threads=1)
    events = _events()
    wh.write(envelopes(events, NOW))
    # The listing now reads a view whose one-off subquery multiplies 9e8 pairs (seconds of
    # work), while the events table stays as it was.
    wh._conn.execute("ALTER TABLE flights RENAME TO stored_flights")
    wh._conn.execute(
        "CREATE VIEW flights AS SELECT * FROM stored_flights WHERE"
        " (SELECT sum(a.range * b.range) FROM range(30000) a, range(30000) b) >= 0"
    )
    client = create_app(load_settings({}), warehouse=wh).test_client()
    slow = client.get("/v1/flights")
    assert slow.status_code == 503, slow.get_data(as_text=True)
    assert int(slow.headers.get("Retry-After", "0")) > 0, slow.headers
    error = slow.get_json()["error"]
    assert error["status"] == "UNAVAILABLE" and "too slow" in error["message"], error
    # The same warehouse still answers what fits in the limit.
    fast = client.get(f"/v1/flights/{events[0].flight_id}/events")
    assert fast.status_code == 200 and fast.get_json()["data"], fast.get_data(as_text=True)
    wh.close()
