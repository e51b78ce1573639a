"""Schemathesis against /openapi.json: generated requests never get a 5xx and always conform.

Stateless: every operation gets generated requests on its own. Stateful: schemathesis follows
the document's OpenAPI links (a page's next_page_token to the next page, a listed flight_id to
that flight and its events), so those requests carry real tokens and ids from earlier responses
rather than random strings that would all end in 400 or 404.

The app runs in-process (WSGI) on a DuckDB file with real rows: flights of several carriers,
airports, dates, delays (NULLs included) and multi-event histories. Every operation of the
document gets positive (schema-valid) and negative (schema-violating) requests; each response
must pass schemathesis's checks: no server error, a documented status code, content type and
headers, and a body matching the documented schema. (Its `negative_data_rejection` check is left
out: schemathesis's negative cases include ones that serialise to a valid query string, such as
an empty-named parameter with no value; explicit 400 cases live in tests/unit/test_api*.py.)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any, Final

import pytest
import schemathesis
from flask import Flask
from flightpipe_api import create_app
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation.stateful.state_machine import StepInput, StepOutput
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
MIN_REQUESTS = 1000
# Operations without parameters exhaust after one example; the four /v1 ones reach the maximum.
EXAMPLES_PER_OPERATION = 270
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
# schemathesis sends requests' default Accept-Encoding (gzip, deflate; transport/prepare.py@v4.32.5)
# but its WSGI transport hands the body over still encoded; the checks read the plain one.
PLAIN: Final = {"Accept-Encoding": "identity"}
# Reproducible runs, no example database, no deadline or health checks (the app is in-process).
HYPOTHESIS: dict[str, Any] = {
    "deadline": None,
    "database": None,
    "derandomize": True,
    "suppress_health_check": list(HealthCheck),
}


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
    directory = tmp_path_factory.mktemp("schemathesis")
    with contextlib.closing(DuckDBWarehouse(directory / "w.duckdb")) as warehouse:
        warehouse.write(envelopes(_events(), NOW))
        app = create_app(load_settings({}), warehouse=warehouse)
        _close_bodies_like_a_server(app)
        yield app


def _close_bodies_like_a_server(app: Flask) -> None:
    """Read and close every response body, as a WSGI server must (PEP 3333).

    schemathesis' in-process client keeps the responses of a stateful run and never reads an
    NDJSON or CSV body nor closes it, so a streamed export would hold its slot in
    `flightpipe_api.exports` for the whole run and later exports would get 503.
    """
    inner = app.wsgi_app

    def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = inner(environ, start_response)
        try:
            return [b"".join(body)]
        finally:
            if hasattr(body, "close"):
                body.close()

    app.wsgi_app = wsgi  # type: ignore[method-assign]


def test_generated_requests_get_no_5xx_and_conform_to_the_document(app: Flask) -> None:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    counts: dict[str, int] = {}
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result  # an operation schemathesis could not read
        operation = result.ok()
        counts[operation.label] = _exercise(operation)
    assert sum(counts.values()) >= MIN_REQUESTS, counts


# Events is reached only through a found flight: enough scenarios that a change elsewhere cannot
# starve it to zero by chance.
STATEFUL_SCENARIOS = 150
STATEFUL_STEPS = 8


def test_linked_requests_get_no_5xx_conform_and_reach_real_flights(app: Flask) -> None:
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    followed: Counter[tuple[str, int]] = Counter()  # (target operation, status) of link steps

    # listFlights, a GET without path parameters, is where scenarios start; the links lead on
    # (schemathesis specs/openapi/stateful/__init__.py@v4.32.5, classify_root_transitions).
    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def step(self, input: StepInput) -> StepOutput:
            output: StepOutput = super().step(input)
            if input.transition is not None:
                followed[(input.case.operation.label, output.response.status_code)] += 1
            return output

        def get_call_kwargs(self, case: schemathesis.Case[Any]) -> dict[str, Any]:
            return {"headers": PLAIN}

        def validate_response(
            self, response: schemathesis.Response, case: schemathesis.Case[Any], **kwargs: Any
        ) -> None:
            case.validate_response(response, checks=list(CHECKS))

    Workflow.run(
        settings=settings(
            max_examples=STATEFUL_SCENARIOS, stateful_step_count=STATEFUL_STEPS, **HYPOTHESIS
        )
    )
    # The links were followed and led somewhere real: a listed flight found (200), its events
    # found, and a next page served with the token a previous page handed out.
    assert followed[("GET /v1/flights/{flight_id}", 200)] > 0, followed
    assert followed[("GET /v1/flights/{flight_id}/events", 200)] > 0, followed
    assert followed[("GET /v1/flights", 200)] > 0, followed


def _exercise(operation: Any) -> int:
    """Run the generated cases of one operation; return how many requests were made."""
    made = 0
    strategy = operation.as_strategy(generation_mode=GenerationMode.POSITIVE)
    if operation.query or operation.path_parameters:  # nothing to violate otherwise
        strategy |= operation.as_strategy(generation_mode=GenerationMode.NEGATIVE)

    @settings(max_examples=EXAMPLES_PER_OPERATION, **HYPOTHESIS)
    @given(case=strategy)
    def check(case: schemathesis.Case[Any]) -> None:
        nonlocal made
        case.call_and_validate(headers=PLAIN, checks=list(CHECKS))
        made += 1

    check()
    return made
