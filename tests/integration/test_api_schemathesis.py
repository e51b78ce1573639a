"""Schemathesis against /openapi.json: generated requests never get a 5xx and always conform.

The app runs in-process (WSGI) on a DuckDB file with real rows: flights of several carriers,
airports, dates, delays (NULLs included) and multi-event histories. Every operation of the
document gets positive (schema-valid) and negative (schema-violating) requests; each response
must pass schemathesis's checks: no server error, a documented status code, content type and
headers, and a body matching the documented schema. (Its `negative_data_rejection` check is left
out: schemathesis's negative cases include ones that serialise to a valid query string, such as
an empty-named parameter with no value; explicit 400 cases live in tests/unit/test_api*.py.)
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flightpipe_api import create_app
from hypothesis import HealthCheck, given, settings
from schemathesis import DataGenerationMethod
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from flightpipe.settings import load_settings
from flightpipe.warehouse.duckdb import DuckDBWarehouse
from tests.factories import envelopes, make_event

pytestmark = pytest.mark.integration

CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)
POSITIVE = DataGenerationMethod.positive
NEGATIVE = DataGenerationMethod.negative
MIN_REQUESTS = 1000
# Operations without parameters exhaust after one example; the four /v1 ones reach the maximum.
EXAMPLES_PER_OPERATION = 270
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _events() -> list[Any]:
    rng = random.Random(7)
    events = []
    for i in range(36):
        day = dt.date(2013, 1, 1) + dt.timedelta(days=rng.randrange(20))
        delayed = rng.random() < 0.8
        kwargs: dict[str, Any] = {
            "carrier": rng.choice(["UA", "AA", "B6", "DL", "9E"]),
            "origin": rng.choice(["EWR", "JFK", "LGA"]),
            "dest": rng.choice(["IAH", "MIA", "ATL", "ORD"]),
            "flight_date": day,
            "flight_number": 100 + i,
            "tail_number": rng.choice(["N14228", "N24211", None]),
            "dep_delay_min": rng.randrange(-10, 200) if delayed else None,
            "arr_delay_min": rng.randrange(-30, 240) if delayed else None,
        }
        if not delayed:
            kwargs |= {"status": "cancelled", "actual_departure": None, "actual_arrival": None}
            kwargs |= {"air_time_min": None}
        first = make_event(**kwargs)
        events.append(first)
        if i % 3 == 0:  # a history: an earlier state of the same flight
            events.append(
                make_event(
                    **kwargs
                    | {
                        "status": "scheduled",
                        "event_time": first.event_time - dt.timedelta(hours=5),
                    }
                )
            )
    return events


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    path: Path = tmp_path_factory.mktemp("schemathesis") / "w.duckdb"
    warehouse = DuckDBWarehouse(path)
    warehouse.write(envelopes(_events(), NOW))
    yield create_app(load_settings({}), warehouse=warehouse)
    warehouse.close()


def test_generated_requests_get_no_5xx_and_conform_to_the_document(app: Flask) -> None:
    schema = schemathesis.from_wsgi(
        "/openapi.json",
        app,
        data_generation_methods=[DataGenerationMethod.positive, DataGenerationMethod.negative],
    )
    counts: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]  # an Err would raise here
        counts[operation.verbose_name] = _exercise(operation)
    assert sum(counts.values()) >= MIN_REQUESTS, counts


def _exercise(operation: Any) -> int:
    """Run the generated cases of one operation; return how many requests were made."""
    made = 0
    strategy = operation.as_strategy(data_generation_method=POSITIVE)
    if operation.query or operation.path_parameters:  # nothing to violate otherwise
        strategy |= operation.as_strategy(data_generation_method=NEGATIVE)

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case: schemathesis.Case) -> None:
        nonlocal made
        response = case.call()
        case.validate_response(response, checks=CHECKS)
        made += 1

    check()
    return made
