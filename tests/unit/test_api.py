"""The API through Flask's test client, against a real DuckDB file."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flightpipe_api import create_app
from flightpipe_api.tokens import encode_page_token

from flightpipe.settings import load_settings
from flightpipe.warehouse import WarehouseUnavailable
from flightpipe.warehouse.duckdb import DuckDBWarehouse
from tests.factories import as_dict, envelopes, make_event

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DAY = dt.date(2013, 6, 1)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DuckDBWarehouse, list]]:  # type: ignore[type-arg]
    path: Path = tmp_path_factory.mktemp("api") / "w.duckdb"
    warehouse = DuckDBWarehouse(path)
    events = [
        make_event(carrier=c, origin=o, flight_date=DAY, status=s)
        for c in ("AA", "UA", "B6")
        for o in ("EWR", "JFK")
        for s in ("arrived", "arrived", "cancelled")
    ] + [make_event(carrier="UA", flight_date=dt.date(2013, 6, 2)) for _ in range(40)]
    warehouse.write(envelopes(events, NOW))
    yield warehouse, events
    warehouse.close()


@pytest.fixture(scope="module")
def app(loaded) -> Flask:  # type: ignore[no-untyped-def]
    return create_app(load_settings({}), warehouse=loaded[0])


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def assert_error(response, code: int, parameter: str | None = None) -> dict:  # type: ignore[no-untyped-def, type-arg]
    assert response.status_code == code, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == code and error["message"] and error["status"]
    if parameter is not None:
        assert error["parameter"] == parameter
        assert parameter in error["message"]
    return error  # type: ignore[no-any-return]


def test_a_flight_is_served_with_every_contract_field(client: FlaskClient, loaded) -> None:  # type: ignore[no-untyped-def]
    event = loaded[1][0]
    response = client.get(f"/v1/flights/{event.flight_id}")
    assert response.status_code == 200
    data = response.get_json()["data"]
    expected = as_dict(event)
    assert {k: data[k] for k in expected} == expected
    assert data["message_id"] == "m0"


def test_an_unknown_flight_is_404(client: FlaskClient) -> None:
    assert_error(client.get("/v1/flights/2013-01-01-ZZ9-ZZZ"), 404)


def test_a_malformed_flight_id_is_400(client: FlaskClient) -> None:
    assert_error(client.get("/v1/flights/UA1545"), 400, "flight_id")


def test_filters_select_matching_flights(client: FlaskClient, loaded) -> None:  # type: ignore[no-untyped-def]
    response = client.get(
        "/v1/flights?carrier=UA&origin=JFK&status=cancelled&date_from=2013-06-01&date_to=2013-06-01"
    )
    data = response.get_json()["data"]
    expected = {
        e.flight_id
        for e in loaded[1]
        if (e.carrier, e.origin, e.status, e.flight_date) == ("UA", "JFK", "cancelled", DAY)
    }
    assert {d["flight_id"] for d in data} == expected and expected


def test_following_next_page_token_returns_every_flight_once(client: FlaskClient, loaded) -> None:  # type: ignore[no-untyped-def]
    seen: list[str] = []
    url = "/v1/flights?limit=7"
    pages = 0
    while url:
        body = client.get(url).get_json()
        seen += [d["flight_id"] for d in body["data"]]
        token = body["next_page_token"]
        url = f"/v1/flights?limit=7&page_token={token}" if token else ""
        pages += 1
    assert sorted(seen) == sorted(e.flight_id for e in loaded[1])
    assert len(seen) == len(set(seen))
    assert pages == -(-len(seen) // 7)  # the last full page already says there is no next one


def test_stats_group_by_carrier_with_the_group_key_under_its_name(client: FlaskClient) -> None:
    body = client.get(
        "/v1/stats/delays?group_by=carrier&date_from=2013-06-01&date_to=2013-06-01"
    ).get_json()
    rows = {r["carrier"]: r for r in body["data"]}
    assert set(rows) == {"AA", "B6", "UA"}
    aa = rows["AA"]
    assert aa["flights"] == 6 and aa["cancelled"] == 2
    assert set(aa) == {
        "carrier",
        "flights",
        "cancelled",
        "avg_dep_delay_min",
        "avg_arr_delay_min",
        "on_time_rate",
        "median_dep_delay_min",
        "p90_dep_delay_min",
        "median_arr_delay_min",
        "p90_arr_delay_min",
    }
    assert aa["on_time_rate"] == pytest.approx(1.0)
    assert aa["median_arr_delay_min"] == pytest.approx(11.0)  # the factory's arrival delay


@pytest.mark.parametrize("group_by", ["origin", "dest", "flight_date"])
def test_stats_group_by_other_keys(client: FlaskClient, group_by: str) -> None:
    body = client.get(f"/v1/stats/delays?group_by={group_by}").get_json()
    assert body["data"] and all(group_by in r for r in body["data"])


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=99999999999999999999", "limit"),
        ("limit=ten", "limit"),
        ("limit=-1", "limit"),
        ("date_from=2013-13-01", "date_from"),
        ("date_to=yesterday", "date_to"),
        ("date_from=2013-06-02&date_to=2013-06-01", "date_to"),
        ("carrier=united", "carrier"),
        ("carrier=UA'%20OR%201=1--", "carrier"),
        ("origin=E%27R", "origin"),
        ("dest=%F0%9F%9B%AB", "dest"),
        ("status=landed", "status"),
        ("page_token=not-a-token", "page_token"),
        ("page_token=" + "A" * 5000, "page_token"),
        ("carrier=UA&carrier=AA", "carrier"),
        ("colour=blue", "colour"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(
    client: FlaskClient, query: str, parameter: str
) -> None:
    assert_error(client.get(f"/v1/flights?{query}"), 400, parameter)


def test_bad_group_by_is_400(client: FlaskClient) -> None:
    assert_error(client.get("/v1/stats/delays?group_by=tail_number"), 400, "group_by")
    assert_error(client.get("/v1/stats/delays?limit=5"), 400, "limit")


def test_a_token_with_a_naive_timestamp_is_rejected(client: FlaskClient) -> None:
    token = encode_page_token((dt.datetime(2013, 1, 1), "x"))  # no timezone
    assert_error(client.get(f"/v1/flights?page_token={token}"), 400, "page_token")


def test_unknown_routes_and_methods_use_the_json_error_shape(client: FlaskClient) -> None:
    assert_error(client.get("/v2/nothing"), 404)
    error = client.post("/v1/flights")
    assert_error(error, 405)
    assert "GET" in error.headers["Allow"]


def test_health_readiness_and_metrics(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/health").get_json() == {"status": "ok"}  # the uptime check's path
    assert client.get("/readyz").status_code == 200
    client.get("/v1/flights?limit=1")
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'flightpipe_http_requests_total{route="/v1/flights",status="200"}' in metrics
    assert "flightpipe_http_request_duration_seconds_bucket" in metrics


def test_the_request_id_is_echoed_or_made(client: FlaskClient) -> None:
    assert (
        client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"]
        == "abc-123"
    )
    assert len(client.get("/healthz").headers["X-Request-ID"]) == 32


class DownWarehouse:
    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        def fail(*args, **kwargs):  # type: ignore[no-untyped-def]
            raise WarehouseUnavailable("connection refused")

        return fail


def test_a_down_warehouse_is_503_with_retry_after_never_500() -> None:
    client = create_app(load_settings({}), warehouse=DownWarehouse()).test_client()
    for url in ("/v1/flights", "/v1/flights/2013-01-01-UA1-EWR", "/v1/stats/delays", "/readyz"):
        response = client.get(url)
        assert_error(response, 503)
        assert response.headers["Retry-After"] == "5"
