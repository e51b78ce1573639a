"""gzip when the client asks for it: pages, cache hits, conditional GETs and streamed exports.

Through Flask's test client (so through `gate.Gate`, which answers cache hits without Flask) and a
real DuckDB file. Every case is checked on both paths, a cache miss (Flask and flask-compress)
and a cache hit (the gate), which must give the same representation.
"""

from __future__ import annotations

import datetime as dt
import gzip
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flightpipe_api import create_app
from flightpipe_api.compression import accepts_gzip
from flightpipe_api.routes import EXPORT_CHUNK
from werkzeug.test import TestResponse

from flightpipe.settings import load_settings
from flightpipe.warehouse.duckdb import DuckDBWarehouse
from tests.factories import envelopes, make_event

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DAY = dt.date(2013, 6, 1)
EXPORT_ROWS = EXPORT_CHUNK * 2 + 500  # streamed, in three chunks
PAGE = "/v1/flights?date_from=2013-06-01&date_to=2013-06-01&limit=50"


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DuckDBWarehouse]:
    path: Path = tmp_path_factory.mktemp("gzip") / "w.duckdb"
    warehouse = DuckDBWarehouse(path)
    # Distinct flights: every event is a current state, so the export has EXPORT_ROWS rows.
    events = [
        make_event(carrier=("AA", "UA")[i % 2], flight_number=1 + i // 2, flight_date=DAY)
        for i in range(EXPORT_ROWS)
    ]
    warehouse.write(envelopes(events, NOW))
    yield warehouse
    warehouse.close()


@pytest.fixture(scope="module", params=["miss", "hit"])
def path(request: pytest.FixtureRequest) -> str:
    """`miss`: the cache is off, Flask answers; `hit`: the request is answered from the cache."""
    return str(request.param)


@pytest.fixture(scope="module")
def app(warehouse: DuckDBWarehouse, path: str) -> Flask:
    ttl = "0" if path == "miss" else "3600"
    return create_app(load_settings({"FLIGHTPIPE_API_CACHE_TTL_SECONDS": ttl}), warehouse=warehouse)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def get(client: FlaskClient, url: str, path: str, **headers: str) -> TestResponse:
    """GET `url`; on the `hit` path, fill the cache first and check the answer is a hit."""
    if path == "hit":
        client.get(url)
    response = client.get(url, headers=headers)
    if path == "hit" and response.status_code in (200, 304):
        assert response.headers["X-Cache"] == "hit"
    return response


def identity_body(client: FlaskClient, url: str) -> tuple[bytes, str]:
    response = client.get(url, headers={"Accept-Encoding": "identity"})
    assert response.status_code == 200 and "Content-Encoding" not in response.headers
    return response.get_data(), response.headers["ETag"]


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [
        ("gzip", True),
        ("gzip, deflate, br, zstd", True),  # python-requests, curl --compressed
        ("*", True),
        ("identity;q=0.5, gzip", True),
        ("gzip;q=0.5, identity;q=0.5", True),  # a tie: flask-compress prefers its algorithm
        ("", False),
        ("identity", False),
        ("br", False),
        ("gzip;q=0", False),  # RFC 9110 12.5.3: q=0 is "not acceptable"
        ("*;q=0", False),
        ("identity, gzip;q=0.5", False),
    ],
)
def test_a_page_is_gzipped_exactly_when_the_client_accepts_gzip(
    client: FlaskClient, path: str, accept_encoding: str, gzipped: bool
) -> None:
    plain, plain_etag = identity_body(client, PAGE)
    response = get(client, PAGE, path, **{"Accept-Encoding": accept_encoding})
    assert response.status_code == 200
    assert "Accept-Encoding" in response.headers["Vary"] and "Accept" in response.headers["Vary"]
    body = response.get_data()
    if gzipped:
        assert response.headers["Content-Encoding"] == "gzip"
        assert int(response.headers["Content-Length"]) == len(body) < len(plain)
        assert gzip.decompress(body) == plain
        assert response.headers["ETag"] == plain_etag[:-1] + ':gzip"'
    else:
        assert "Content-Encoding" not in response.headers
        assert body == plain
        assert response.headers["ETag"] == plain_etag


def test_each_encoding_has_its_own_etag_for_conditional_requests(
    client: FlaskClient, path: str
) -> None:
    _, plain_etag = identity_body(client, PAGE)
    zipped = get(client, PAGE, path, **{"Accept-Encoding": "gzip"})
    gzip_etag = zipped.headers["ETag"]
    assert gzip_etag != plain_etag
    # The gzip ETag validates the gzip representation...
    again = get(client, PAGE, path, **{"Accept-Encoding": "gzip", "If-None-Match": gzip_etag})
    assert again.status_code == 304 and again.get_data() == b""
    assert again.headers["ETag"] == gzip_etag
    # ...and not the identity one: a client without gzip gets the full body.
    plain = get(client, PAGE, path, **{"Accept-Encoding": "identity", "If-None-Match": gzip_etag})
    assert plain.status_code == 200 and "Content-Encoding" not in plain.headers
    # An unrelated ETag never matches.
    other = get(client, PAGE, path, **{"Accept-Encoding": "gzip", "If-None-Match": '"nope:gzip"'})
    assert other.status_code == 200 and other.headers["Content-Encoding"] == "gzip"


def test_a_streamed_export_is_gzipped_chunk_by_chunk(client: FlaskClient, path: str) -> None:
    url = f"/v1/flights?date_from=2013-06-01&date_to=2013-06-01&format=csv&limit={EXPORT_ROWS}"
    plain = client.get(url, headers={"Accept-Encoding": "identity"})
    assert plain.is_streamed and plain.headers["X-Cache"] == "bypass"
    expected = plain.get_data()
    assert expected.count(b"\n") == EXPORT_ROWS + 1  # header row + every row

    response = client.get(url, headers={"Accept-Encoding": "gzip"}, buffered=False)
    try:
        assert response.status_code == 200 and response.is_streamed
        assert response.headers["Content-Encoding"] == "gzip"
        assert "Content-Length" not in response.headers  # sent as it is made, not buffered
        pieces = list(response.response)
    finally:
        response.close()
    assert len(pieces) > 1  # one compressed piece per chunk the warehouse read, not one blob
    body = b"".join(pieces)
    assert gzip.decompress(body) == expected
    assert len(body) * 3 < len(expected)


def test_small_bodies_and_errors_are_sent_as_they_are(client: FlaskClient, path: str) -> None:
    response = get(client, "/v1/flights/nope", path, **{"Accept-Encoding": "gzip"})
    assert response.status_code == 400 and "Content-Encoding" not in response.headers
    assert response.get_json()["error"]["parameter"] == "flight_id"


def test_the_metrics_endpoint_is_gzipped_for_a_scraper_that_asks(client: FlaskClient) -> None:
    response = client.get("/metrics", headers={"Accept-Encoding": "gzip"})
    assert response.headers["Content-Encoding"] == "gzip"
    assert b"flightpipe_http_requests_total" in gzip.decompress(response.get_data())


@pytest.mark.parametrize(
    ("header", "expected"),
    [("GZIP", True), ("x-gzip", False), ("gzip;q=0.001", True), ("deflate, *;q=0.1", True)],
)
def test_accept_encoding_parsing(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected
