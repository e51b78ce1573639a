"""The API's own metrics: warehouse query latency and the result cache's hit ratio."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from flightpipe_api import create_app
from prometheus_client import REGISTRY

from flightpipe.settings import load_settings
from flightpipe.warehouse import Envelope
from flightpipe.warehouse.duckdb import DuckDBWarehouse
from tests.factories import make_event


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_queries_are_timed_and_repeated_requests_hit_the_cache(tmp_path: Path) -> None:
    warehouse = DuckDBWarehouse(tmp_path / "w.duckdb")
    warehouse.write([Envelope(make_event(), "m", dt.datetime(2026, 1, 1, tzinfo=dt.UTC))])
    client = create_app(load_settings({}), warehouse=warehouse).test_client()
    queries = _sample("flightpipe_warehouse_query_seconds_count", adapter="duckdb")
    hits = _sample("flightpipe_api_cache_lookups_total", result="hit")
    misses = _sample("flightpipe_api_cache_lookups_total", result="miss")

    url = "/v1/flights?carrier=UA&limit=3"
    assert client.get(url).status_code == 200
    after_first = _sample("flightpipe_warehouse_query_seconds_count", adapter="duckdb")
    assert after_first > queries
    assert client.get(url).status_code == 200

    assert _sample("flightpipe_api_cache_lookups_total", result="miss") > misses
    assert _sample("flightpipe_api_cache_lookups_total", result="hit") == hits + 1
    # The hit did not reach the warehouse.
    assert _sample("flightpipe_warehouse_query_seconds_count", adapter="duckdb") == after_first
    warehouse.close()
