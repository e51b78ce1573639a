"""API keys: the configuration that must fail loudly, and failed keys bounded per client."""

from __future__ import annotations

import hashlib
import time

import pytest
from flask.testing import FlaskClient
from flightpipe_api import create_app
from flightpipe_api.auth import KeyGate

from flightpipe.settings import ConfigError, load_settings, parse_api_keys
from flightpipe.warehouse.duckdb import DuckDBWarehouse

KEY = "k-" + "s" * 30
HASH = hashlib.sha256(KEY.encode()).hexdigest()


@pytest.mark.parametrize(
    "raw", [",,,", ",", f"sha256:{HASH},", f",sha256:{HASH}", f"sha256:{HASH},,sha256:{HASH}"]
)
def test_an_empty_item_in_the_key_list_is_a_configuration_error_not_auth_off(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"FLIGHTPIPE_API_KEYS: item \d+ is empty"):
        load_settings({"FLIGHTPIPE_API_KEYS": raw})


@pytest.mark.parametrize("raw", ["", "   "])
def test_a_blank_key_list_means_no_keys(raw: str) -> None:
    assert parse_api_keys(raw) == frozenset()


def test_the_error_names_the_item_and_never_echoes_it() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"FLIGHTPIPE_API_KEYS": f"sha256:{HASH},my-secret-key"})
    assert "item 2" in str(info.value) and "my-secret-key" not in str(info.value)


@pytest.mark.parametrize("name", ["FLIGHTPIPE_API_RATE_LIMIT", "FLIGHTPIPE_API_AUTH_FAILURE_LIMIT"])
def test_a_malformed_rate_limit_fails_at_start_up(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings({name: "lots"})


def test_failed_keys_are_limited_per_client_then_no_key_is_checked() -> None:
    gate = KeyGate(frozenset({HASH}), "1000/minute", "3/minute")
    guesses = [gate.check(f"guess-{i}", None, "10.0.0.1").status for i in range(3)]
    assert guesses == [401, 401, 401]
    blocked = gate.check(KEY, None, "10.0.0.1")  # even the right key: a guess learns nothing
    assert blocked.status == 429 and blocked.retry_after >= 1
    assert "invalid API keys" in blocked.message
    assert gate.check(KEY, None, "10.0.0.2").status == 200  # another client is not affected
    assert gate.check(None, None, "10.0.0.1").status == 401  # no key: nothing guessed


def test_the_failure_window_moves_on() -> None:
    gate = KeyGate(frozenset({HASH}), "1000/minute", "2/second")
    assert [gate.check("bad", None, "c").status for _ in range(3)] == [401, 401, 429]
    time.sleep(1.1)
    assert gate.check(KEY, None, "c").status == 200


def test_the_app_answers_429_in_the_json_shape_once_a_client_guessed_too_often(
    tmp_path: object, duckdb_warehouse: DuckDBWarehouse
) -> None:
    settings = load_settings(
        {"FLIGHTPIPE_API_KEYS": f"sha256:{HASH}", "FLIGHTPIPE_API_AUTH_FAILURE_LIMIT": "5/minute"}
    )
    client: FlaskClient = create_app(settings, warehouse=duckdb_warehouse).test_client()
    statuses = [
        client.get("/v1/flights", headers={"X-API-Key": f"guess-{i}"}).status_code for i in range(6)
    ]
    assert statuses == [401] * 5 + [429]
    response = client.get("/v1/flights", headers={"X-API-Key": KEY})
    assert response.status_code == 429
    assert response.get_json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert int(response.headers["Retry-After"]) >= 1
