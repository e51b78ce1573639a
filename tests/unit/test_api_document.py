"""The API's published contract: the OpenAPI document, the docs page, and the 400s for input the
document rules out, through Flask's test client.

None of it depends on stored rows, so an empty DuckDB file serves.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, get_args, get_type_hints

import msgspec
import pytest
from flask.testing import FlaskClient
from flightpipe_api import create_app
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR
from werkzeug.test import TestResponse

from flightpipe.contract import COLUMN_NAMES, FlightEvent
from flightpipe.settings import load_settings
from flightpipe.warehouse.duckdb import DuckDBWarehouse


@pytest.fixture
def client(duckdb_warehouse: DuckDBWarehouse) -> FlaskClient:
    return create_app(load_settings({}), warehouse=duckdb_warehouse).test_client()


def assert_400(response: TestResponse, parameter: str) -> None:
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["parameter"] == parameter and parameter in error["message"]


# --- the document and the page -----------------------------------------------------------------


def test_the_openapi_document_covers_every_parameter_the_endpoints_accept(
    client: FlaskClient,
) -> None:
    spec = client.get("/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    listed = {p["name"] for p in spec["paths"]["/v1/flights"]["get"]["parameters"]}
    assert {
        "carrier",
        "tail_number",
        "min_dep_delay",
        "sort",
        "fields",
        "format",
        "page_token",
    } <= listed
    responses = spec["paths"]["/v1/flights"]["get"]["responses"]
    assert {"200", "304", "400", "401", "406", "429", "503"} <= set(responses)
    assert {"ApiKey", "BearerKey"} == set(spec["components"]["securitySchemes"])


def test_openapi_links_name_real_operations_and_parameters(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    operations = {op["operationId"]: op for path in spec["paths"].values() for op in path.values()}
    links = {
        name: link
        for op in operations.values()
        for response in op["responses"].values()
        for name, link in response.get("links", {}).items()
    }
    assert {"NextPage", "Flight", "Events"} <= set(links)
    for link in links.values():
        target = operations[link["operationId"]]
        accepted = {p["name"] for p in target["parameters"]}
        assert set(link["parameters"]) <= accepted, link


def test_the_docs_page_is_swagger_ui_served_by_the_api_itself(client: FlaskClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "/docs/swagger-ui-bundle.js" in html and "/docs/docs.js" in html
    assert "http://" not in html and "https://" not in html  # no CDN
    bundle = client.get("/docs/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and b"SwaggerUIBundle" in bundle.data
    assert 'url: "/openapi.json"' in client.get("/docs/docs.js").get_data(as_text=True)
    missing = client.get("/docs/swagger-ui.js.map")
    assert missing.status_code == 404 and missing.get_json()["error"]["code"] == 404


def test_the_document_is_valid_openapi_3_1_with_json_schema_2020_12_as_msgspec_writes_it(
    client: FlaskClient,
) -> None:
    spec = client.get("/openapi.json").get_json()
    # The OpenAPI Initiative's schema for 3.1 documents, as schemathesis ships it to check the
    # documents it loads (schemathesis/specs/openapi/definitions.py@v4.32.5):
    # https://spec.openapis.org/oas/3.1/schema/2022-10-07
    OPENAPI_31_VALIDATOR.validate(spec)
    assert spec["openapi"] == "3.1.0"
    page = spec["components"]["schemas"]["FlightPage"]["properties"]
    assert page["next_page_token"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    refs = [v for k, v in _walk(spec) if k == "$ref"]
    assert refs and all(_resolves(spec, ref) for ref in refs), refs
    assert "nullable" not in {k for k, _ in _walk(spec)}  # OpenAPI 3.0 only


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _resolves(spec: dict[str, Any], ref: str) -> bool:
    _, section, kind, name = ref.split("/")
    return name in spec[section][kind]


def test_each_operation_documents_exactly_the_parameters_its_endpoint_accepts(
    client: FlaskClient,
) -> None:
    spec = client.get("/openapi.json").get_json()
    documented = {
        path: {p["name"] for p in item["get"]["parameters"] if p["in"] == "query"}
        for path, item in spec["paths"].items()
        if path.startswith("/v1/")
    }
    every_name = set().union(*documented.values())
    flight_id = "2013-07-01-AA10-JFK"
    for path, names in documented.items():
        url = path.replace("{flight_id}", flight_id)
        for name in sorted(every_name | {"no_such_parameter"}):
            # A value no parameter accepts: the answer names the parameter, known or not.
            response = client.get(url, query_string={name: "\u2708"})
            error = response.get_json()["error"]
            unknown = "unknown parameter" in error["message"]
            assert (error["parameter"], unknown) == (name, name not in names), (path, error)
    fields = next(
        p for p in spec["paths"]["/v1/flights"]["get"]["parameters"] if p["name"] == "fields"
    )
    assert fields["style"] == "form" and fields["explode"] is False
    assert set(fields["schema"]["items"]["enum"]) == set(COLUMN_NAMES)
    tail = next(
        p for p in spec["paths"]["/v1/flights"]["get"]["parameters"] if p["name"] == "tail_number"
    )
    hints = get_type_hints(FlightEvent, include_extras=True)
    (stored,) = [t for t in get_args(hints["tail_number"]) if t is not type(None)]
    rule = {k: v for k, v in msgspec.json.schema(stored).items() if k != "description"}
    assert tail["schema"] == rule  # the contract's rule, no more and no less


# --- hostile input -----------------------------------------------------------------------------

INJECTIONS = ["' OR 1=1--", "1; DROP TABLE flights", "UA' UNION SELECT 1--", '"; --', "%00"]


# One injection per kind of validator, end to end (dates, codes, enums, integers, sort, fields,
# page tokens, formats); each validator's own bad values are in test_api.py and below, carrier
# gets every injection in the next test, and schemathesis generates the rest.
@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("date_from", INJECTIONS[0]),
        ("dest", INJECTIONS[2]),
        ("status", INJECTIONS[3]),
        ("min_dep_delay", INJECTIONS[1]),
        ("flight_number", INJECTIONS[4]),
        ("sort", INJECTIONS[1]),
        ("fields", INJECTIONS[0]),
        ("page_token", INJECTIONS[2]),
        ("format", INJECTIONS[3]),
    ],
)
def test_sql_injection_attempts_are_400_whatever_the_kind_of_parameter(
    client: FlaskClient, parameter: str, value: str
) -> None:
    assert_400(client.get("/v1/flights", query_string={parameter: value}), parameter)


@pytest.mark.parametrize("value", [*INJECTIONS, "ÅÄ", "✈✈", "\u202eUA"])
def test_hostile_group_by_and_unicode_values_are_400(client: FlaskClient, value: str) -> None:
    assert_400(client.get("/v1/stats/delays", query_string={"group_by": value}), "group_by")
    assert_400(client.get("/v1/flights", query_string={"carrier": value}), "carrier")


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=" + "9" * 40, "limit"),
        ("limit=1e3", "limit"),
        ("limit=%EF%BC%91", "limit"),  # a full-width digit one
        ("flight_number=100000", "flight_number"),
        ("min_dep_delay=-100001", "min_dep_delay"),
        ("min_dep_delay=30&max_dep_delay=10", "max_dep_delay"),
        ("date_from=2013-07-02&date_to=2013-07-01", "date_to"),
        ("date_from=2013-01-01&date_to=2014-12-31", "date_to"),  # too long unnarrowed
        ("date_from=2013-02-30", "date_from"),
        ("page_token=" + "x" * 201, "page_token"),
        ("page_token=%F0%9F%9B%AB", "page_token"),
        ("page_token=W10", "page_token"),  # base64 of []
        # pragma: allowlist nextline secret (a base64 page token, not a credential)
        ("page_token=WyJzY2hlZHVsZWRfZGVwYXJ0dXJlIiwxLCJ4Il0", "page_token"),  # a number time
        ("sort=tail_number", "sort"),
        ("sort=--carrier", "sort"),
        ("fields=flight_id,flight_id", "fields"),
        ("fields=", "fields"),
        ("format=xml", "format"),
        ("%F0%9F%9B%AB=1", "\U0001f6eb"),
    ],
)
def test_malformed_huge_and_inverted_values_are_400_with_a_clear_message(
    client: FlaskClient, query: str, parameter: str
) -> None:
    assert_400(client.get(f"/v1/flights?{query}"), parameter)
