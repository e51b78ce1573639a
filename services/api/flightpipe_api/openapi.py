"""The OpenAPI 3.1 document (`/openapi.json`) and the interactive API reference (`/docs`).

Derived, not written: each operation names its query Struct (`params.py`) and its body Struct
(`schemas.py`); `msgspec.json.schema_components` turns them into JSON Schema 2020-12, which
OpenAPI 3.1 takes as it is for the component schemas (OpenAPI 3.1.0, "Schema Object":
https://spec.openapis.org/oas/v3.1.0#schema-object). Each query Struct field becomes a query
parameter: a query string cannot carry null, so the field's `anyOf: [X, {type: null}]` becomes
X, and its description and first example move to the parameter; tuple fields are
comma-separated lists (`style: form, explode: false`). What is written here by hand is what no
Struct knows: summaries, the links between operations, status codes and headers.

`/docs` is Swagger UI 5 (swagger-api/swagger-ui) from the flask-swagger-ui PyPI package: its
bundled `dist/` files are served by this app under /docs/ (no CDN); the page renders the
description's Markdown, every operation with its parameters, schemas and examples, and "Try it
out" sends requests to this server (with an API key through "Authorize" when keys are on).
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final, get_type_hints

import msgspec
from flask import Blueprint, Response, request, send_from_directory
from werkzeug.exceptions import NotFound

from flightpipe.contract import FlightEvent
from flightpipe_api import params, schemas
from flightpipe_api.output import MIME, encode_json
from flightpipe_api.params import EventsQuery, FlightsQuery, NoQuery, StatsQuery

bp = Blueprint("openapi", __name__)
_REF: Final = "#/components/schemas/{name}"
DESCRIPTION: Final = f"""\
Read API of flightpipe: the current state of airline flights, their event history and delay
statistics, from the pipeline's warehouse (DuckDB locally, BigQuery in the cloud).

**Authentication.** When the server has API keys configured (`FLIGHTPIPE_API_KEYS`), every /v1
request needs a key in `X-API-Key: <key>` or `Authorization: Bearer <key>` (X-API-Key wins; behind
Cloud Run IAM the Authorization header carries the Google ID token, so send the key in
X-API-Key). Without a valid key: 401. Each key is rate limited (`FLIGHTPIPE_API_RATE_LIMIT`, per
server instance): 429 with Retry-After.

**Formats.** JSON by default; CSV and NDJSON with `format=csv|ndjson` or the Accept header
(`text/csv`, `application/x-ndjson`, each optionally with `charset=utf-8`). JSON pages have at most
{params.MAX_LIMIT} rows; CSV and NDJSON exports up to {params.MAX_EXPORT_ROWS} rows, streamed in
chunks above 5000 rows (a streamed export has no next-page token; a smaller one gives it in the
`X-Next-Page-Token` header).

**Paging.** Keyset pagination: follow `next_page_token` (null on the last page) with the same
filters and the same `sort`.

**Limits.** A `date_from`..`date_to` range over {params.MAX_RANGE_DAYS} days needs one of
{", ".join(params.NARROWING)}. A warehouse that is slow (over `FLIGHTPIPE_QUERY_TIMEOUT_SECONDS`)
or down answers 503 with Retry-After, never 500.

**Caching.** Complete GET responses carry a strong ETag (a hash of the body, stable while the data
is) and `Cache-Control: private, max-age=5`; `If-None-Match` answers 304. The server keeps results
in memory until new data is ingested or `FLIGHTPIPE_API_CACHE_TTL_SECONDS` passes.

**Metadata.** JSON bodies carry `meta.count` (rows in the response). The warehouse time is in the
`Server-Timing` header (`db;dur=<ms>`, or `cache;desc=hit`). Every response echoes `X-Request-ID`
(the caller's, or a new one), which the server's logs carry too.

**Errors.** One shape: `{{"error": {{"code", "status", "message", "parameter"}}}}`; `parameter`
names the offending parameter of a 400.
"""
_HEADERS: Final[dict[str, dict[str, Any]]] = {
    "X-Request-ID": {"description": "The caller's X-Request-ID, or a new id"},
    "ETag": {"description": "Strong validator: a hash of the body"},
    "Cache-Control": {},
    "Server-Timing": {"description": "db;dur=<warehouse ms>, or cache;desc=hit"},
    "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}},
    "X-Next-Page-Token": {"description": "CSV/NDJSON up to 5000 rows: the next page's token"},
}
_ERRORS: Final[dict[str, tuple[str, str, tuple[str, ...]]]] = {
    "400": ("BadRequest", "A parameter is unknown, repeated or invalid (named)", ()),
    "401": ("Unauthorized", "No valid API key (only when keys are configured)", ()),
    "404": ("NotFound", "No such flight, or no events for it", ()),
    "406": ("NotAcceptable", "The Accept header allows none of the formats", ()),
    "429": ("TooManyRequests", "The key's rate limit is spent", ("Retry-After",)),
    "503": ("Unavailable", "The warehouse is slow or down; retry", ("Retry-After",)),
}

# Every /v1 operation validates its input, may need a key, is rate limited and reads the warehouse.
_V1_ERRORS: Final = ("400", "401", "429", "503")


def _link(operation_id: str, description: str, **parameters: str) -> dict[str, Any]:
    """An OpenAPI link: call `operation_id` with `parameters` (runtime expressions)."""
    return {"operationId": operation_id, "description": description, "parameters": parameters}


@dataclass(frozen=True)
class Operation:
    """One documented GET under /v1: what the Structs do not say."""

    path: str
    operation_id: str
    summary: str
    description: str
    query: type[msgspec.Struct]
    body: type[msgspec.Struct]
    errors: tuple[str, ...]  # besides those of every /v1 operation (_V1_ERRORS)
    exports: bool = False
    headers: tuple[str, ...] = ()
    links: dict[str, Any] = field(default_factory=dict)


_FIRST_ID: Final = "$response.body#/data/0/flight_id"
OPERATIONS: Final = (
    Operation(
        "/v1/flights",
        "listFlights",
        "List flights",
        "Current state of the flights matching every given filter, sorted, in keyset pages "
        "(JSON) or as a CSV/NDJSON export.",
        FlightsQuery,
        schemas.FlightPage,
        ("406",),
        exports=True,
        headers=("X-Next-Page-Token",),
        links={
            "NextPage": _link(
                "listFlights",
                "The next page: this page's next_page_token, sent with the same filters and sort",
                page_token="$response.body#/next_page_token",  # noqa: S106 - an expression
            ),
            "Flight": _link("getFlight", "The first flight of the page", flight_id=_FIRST_ID),
            "Events": _link("getFlightEvents", "Its event history", flight_id=_FIRST_ID),
        },
    ),
    Operation(
        "/v1/flights/{flight_id}",
        "getFlight",
        "One flight",
        "The current state of one flight (its latest event).",
        NoQuery,
        schemas.FlightResponse,
        ("404",),
        links={
            "Events": _link(
                "getFlightEvents",
                "The event history of this flight",
                flight_id="$response.body#/data/flight_id",
            )
        },
    ),
    Operation(
        "/v1/flights/{flight_id}/events",
        "getFlightEvents",
        "A flight's events",
        "Every distinct stored event of the flight, by event_time, then publish_time.",
        EventsQuery,
        schemas.EventsResponse,
        ("404", "406"),
        exports=True,
    ),
    Operation(
        "/v1/stats/delays",
        "getDelayStats",
        "Delay statistics",
        "Counts, mean, median and 90th percentile delays and the on-time rate over current "
        "states matching the filters, one row per group, ordered by the keys.",
        StatsQuery,
        schemas.DelayStatsResponse,
        ("406",),
        exports=True,
    ),
)


def _parameters(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """A query Struct's schema as OpenAPI query parameters (none required)."""
    parameters = []
    for name, declared in schema.get("properties", {}).items():
        # An optional field: absent from the query string, never null in it.
        present = [o for o in declared.get("anyOf", ()) if o != {"type": "null"}]
        prop = {k: v for k, v in declared.items() if k != "anyOf"}
        if len(present) == 1:
            prop |= present[0]
        if prop.get("default", 0) is None:
            del prop["default"]
        parameter = {"name": name, "in": "query", "required": False} | _described(prop)
        if prop.get("type") == "array":
            parameter |= {"style": "form", "explode": False}
        parameters.append(parameter)
    return parameters


def _described(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter's description, schema and example from its JSON Schema (which keeps the rule)."""
    parameter = {"description": schema.pop("description", ""), "schema": schema}
    if examples := schema.pop("examples", None):
        parameter["example"] = examples[0]
    return parameter


def _flight_id_parameter() -> dict[str, Any]:
    schema = msgspec.json.schema(get_type_hints(FlightEvent, include_extras=True)["flight_id"])
    parameter = {"name": "flight_id", "in": "path", "required": True} | _described(schema)
    return parameter | {"example": "2013-01-01-UA1545-EWR"}


def _ok(op: Operation) -> dict[str, Any]:
    content: dict[str, Any] = {
        "application/json": {"schema": {"$ref": _REF.format(name=op.body.__name__)}}
    }
    if op.exports:
        content |= {MIME[f]: {"schema": {"type": "string"}} for f in ("csv", "ndjson")}
    names = ("X-Request-ID", "ETag", "Cache-Control", "Server-Timing", *op.headers)
    response: dict[str, Any] = {"description": "OK", "headers": _headers(names), "content": content}
    if op.links:
        response["links"] = op.links  # how a response feeds the next request
    return response


def _headers(names: tuple[str, ...]) -> dict[str, Any]:
    return {n: {"schema": {"type": "string"}} | _HEADERS[n] for n in names}


def _operation(op: Operation, query_schema: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": _ok(op),
        "304": {"$ref": "#/components/responses/NotModified"},
    }
    for code in sorted((*_V1_ERRORS, *op.errors)):
        responses[code] = {"$ref": f"#/components/responses/{_ERRORS[code][0]}"}
    path_params = [_flight_id_parameter()] if "{flight_id}" in op.path else []
    return {
        "tags": ["statistics" if "/stats/" in op.path else "flights"],
        "operationId": op.operation_id,
        "summary": op.summary,
        "description": op.description,
        "parameters": [*path_params, *_parameters(query_schema)],
        "responses": responses,
        "security": [{"ApiKey": []}, {"BearerKey": []}, {}],
    }


def _plain(operation_id: str, summary: str, media: str, schema: dict[str, Any]) -> dict[str, Any]:
    ok = {"description": "OK", "content": {media: {"schema": schema}}}
    responses: dict[str, Any] = {"200": ok}
    if operation_id == "readiness":
        responses["503"] = {"$ref": "#/components/responses/Unavailable"}
    get = {"tags": ["service"], "operationId": operation_id, "summary": summary}
    return {"get": get | {"responses": responses}}


def build_spec() -> dict[str, Any]:
    """The OpenAPI 3.1 document as a dict."""
    queries = tuple(dict.fromkeys(op.query for op in OPERATIONS))
    _, components = msgspec.json.schema_components(
        (*queries, *schemas.RESPONSES), ref_template=_REF
    )
    paths: dict[str, Any] = {
        op.path: {"get": _operation(op, components.pop(op.query.__name__, {}))} for op in OPERATIONS
    }
    for query in queries:
        components.pop(query.__name__, None)
    for schema in components.values():
        # Every body Struct has forbid_unknown_fields, and the views send exactly its fields.
        schema["additionalProperties"] = False
    health = {"$ref": _REF.format(name="Health")}
    paths["/healthz"] = _plain("liveness", "Liveness", "application/json", health)
    paths["/readyz"] = _plain(
        "readiness", "Readiness: the warehouse answers", "application/json", health
    )
    paths["/openapi.json"] = _plain(
        "getOpenApi", "This document", "application/json", {"type": "object"}
    )
    paths["/docs"] = _plain(
        "getDocs", "This reference as a web page", "text/html", {"type": "string"}
    )
    responses: dict[str, Any] = {
        name: {
            "description": description,
            "headers": _headers(("X-Request-ID", *headers)),
            "content": {"application/json": {"schema": {"$ref": _REF.format(name="Error")}}},
        }
        for name, description, headers in _ERRORS.values()
    }
    responses["NotModified"] = {
        "description": "If-None-Match matched the current ETag",
        "headers": _headers(("X-Request-ID", "ETag", "Cache-Control")),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "flightpipe API", "version": "1", "description": DESCRIPTION},
        "tags": [
            {"name": "flights", "description": "Current states and event histories"},
            {"name": "statistics", "description": "Delay statistics over the current states"},
            {"name": "service", "description": "Probes, this document and this page"},
        ],
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": responses,
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "BearerKey": {"type": "http", "scheme": "bearer"},
            },
        },
    }


# --- serving -----------------------------------------------------------------------------------

# flask-swagger-ui ships Swagger UI's dist/ (swagger-ui-bundle.js, swagger-ui.css, ...).
_ASSETS: Final = importlib.resources.files("flask_swagger_ui") / "dist"
_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>flightpipe API reference</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/docs/swagger-ui.css">
<link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
</head><body><div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/docs.js"></script>
</body></html>
"""
# Swagger UI's configuration (swagger-ui docs/usage/configuration.md): this server's document,
# deep links, every operation open, "Try it out" on, a request's duration shown.
_INIT: Final = """window.ui = SwaggerUIBundle({
  url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true, docExpansion: "list",
  defaultModelsExpandDepth: 1, tryItOutEnabled: true, displayRequestDuration: true,
  persistAuthorization: true, validatorUrl: null
});
"""
_ASSET_NAMES: Final = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"})


@cache
def _spec_bytes() -> bytes:
    return encode_json(build_spec())


def _conditional(body: bytes, mimetype: str) -> Response:
    response = Response(body, mimetype=mimetype)
    response.headers["Cache-Control"] = "public, max-age=300"
    response.add_etag()
    response.make_conditional(request)
    return response


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The OpenAPI document."""
    return _conditional(_spec_bytes(), "application/json")


@bp.get("/docs")
def docs() -> Response:
    """The interactive reference."""
    return _conditional(_PAGE.encode(), "text/html")


@bp.get("/docs/docs.js")
def docs_js() -> Response:
    """The page's Swagger UI set-up (a file, so the page needs no inline script)."""
    return _conditional(_INIT.encode(), "text/javascript")


@bp.get("/docs/<name>")
def docs_asset(name: str) -> Response:
    """Swagger UI's own files, from the package (werkzeug's send_file: ETag, 304, ranges)."""
    if name not in _ASSET_NAMES:
        raise NotFound()  # the one JSON error shape, from errors.py
    response: Response = send_from_directory(str(_ASSETS), name, max_age=3600)
    return response
