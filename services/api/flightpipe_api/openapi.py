"""The OpenAPI 3 document (`/openapi.json`) and the human documentation page (`/docs`).

Built with apispec from the code itself: the parameters are the `params.Param` declarations the
endpoints parse with, the row schemas come from `flightpipe.contract.COLUMNS`, and the error shape
and limits from `errors` and `params`. The document is built once per process and served as
bytes. `/docs` is rendered from the same document as plain HTML (no script, no CDN).
"""

from __future__ import annotations

import html
from functools import cache
from typing import Any, Final

from apispec import APISpec
from flask import Blueprint, Response

from flightpipe.contract import COLUMNS, STATUSES
from flightpipe.warehouse.port import ON_TIME_MINUTES
from flightpipe_api import params
from flightpipe_api.output import MIME, encode_json
from flightpipe_api.params import Param

bp = Blueprint("openapi", __name__)
_KINDS: Final[dict[str, dict[str, Any]]] = {
    "string": {"type": "string"},
    "int": {"type": "integer"},
    "timestamp": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"},
}
_EXPORT_TYPES: Final = {
    MIME["csv"]: {"schema": {"type": "string"}},
    MIME["ndjson"]: {"schema": {"type": "string"}},
}
DESCRIPTION: Final = f"""\
Read API of flightpipe: the current state of airline flights, their event history and delay
statistics, from the pipeline's warehouse (DuckDB locally, BigQuery in the cloud).

**Authentication.** When the server has API keys configured (FLIGHTPIPE_API_KEYS, a
comma-separated list of `sha256:<hex>` hashes of the keys), every /v1 request needs a key in
`X-API-Key: <key>` or `Authorization: Bearer <key>` (X-API-Key wins; behind Cloud Run IAM the
Authorization header carries the Google ID token, so send the key in X-API-Key). Without a valid
key: 401. Each key is rate limited (FLIGHTPIPE_API_RATE_LIMIT, per server instance): 429 with
Retry-After.

**Formats.** JSON by default; CSV and NDJSON with `format=csv|ndjson` or the Accept header
(`text/csv`, `application/x-ndjson`). JSON pages have at most {params.MAX_LIMIT} rows; CSV and
NDJSON exports up to {params.MAX_EXPORT_ROWS} rows, streamed in chunks above 5000 rows (a streamed
export has no next-page token; a smaller one gives it in the X-Next-Page-Token header).

**Paging.** Keyset pagination: follow `next_page_token` (null on the last page) with the same
filters and the same `sort`.

**Limits.** Dates: a `date_from`..`date_to` range over {params.MAX_RANGE_DAYS} days needs one of
{", ".join(params.NARROWING)}. A warehouse that is slow (over FLIGHTPIPE_QUERY_TIMEOUT_SECONDS) or
down answers 503 with Retry-After, never 500.

**Caching.** Complete GET responses carry an ETag and `Cache-Control: private, max-age=5`;
If-None-Match answers 304. The server keeps results in memory until new data is ingested (the
ingest watermark moves) or FLIGHTPIPE_API_CACHE_TTL_SECONDS passes.

**Metadata.** JSON bodies carry `meta.count` (rows in the response) and `meta.query_ms`
(warehouse time when the result was computed). Every response echoes X-Request-ID (the caller's,
or a new one), which the server's logs carry too.

**Errors.** One shape: `{{"error": {{"code", "status", "message", "parameter"}}}}`;
`parameter` names the offending parameter of a 400.
"""


def _column_schema(kind: str, nullable: bool, description: str, name: str) -> dict[str, Any]:
    schema = dict(_KINDS[kind], description=description)
    if name == "status":
        schema["enum"] = list(STATUSES)
    if nullable:
        schema["nullable"] = True
    return schema


def _flight_schema(*, all_required: bool) -> dict[str, Any]:
    properties = {
        c.name: _column_schema(c.kind, c.nullable, c.description, c.name) for c in COLUMNS
    }
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if all_required:
        schema["required"] = [c.name for c in COLUMNS]
    return schema


def _number(description: str, *, nullable: bool = True) -> dict[str, Any]:
    return {"type": "number", "nullable": nullable, "description": description}


def _stats_row() -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "flights": {"type": "integer", "minimum": 0, "description": "Flights in the group"},
        "cancelled": {"type": "integer", "minimum": 0, "description": "Of those, cancelled"},
        "avg_dep_delay_min": _number("Mean departure delay, minutes"),
        "avg_arr_delay_min": _number("Mean arrival delay, minutes"),
        "on_time_rate": {
            "type": "number",
            "nullable": True,
            "minimum": 0,
            "maximum": 1,
            "description": f"Share of flights with an arrival delay arriving at most "
            f"{ON_TIME_MINUTES} minutes late",
        },
        "median_dep_delay_min": _number("Median departure delay (interpolated)"),
        "p90_dep_delay_min": _number("90th percentile departure delay (interpolated)"),
        "median_arr_delay_min": _number("Median arrival delay (interpolated)"),
        "p90_arr_delay_min": _number("90th percentile arrival delay (interpolated)"),
    }
    keys: dict[str, Any] = {
        "carrier": {"type": "string"},
        "origin": {"type": "string"},
        "dest": {"type": "string"},
        "flight_date": {"type": "string", "format": "date"},
        "hour": {"type": "integer", "minimum": 0, "maximum": 23, "description": "UTC hour"},
    }
    return {
        "type": "object",
        "description": "One group: its group_by keys, then the statistics",
        "properties": {**keys, **metrics},
        "required": list(metrics),
        "additionalProperties": False,
    }


def _meta() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "count": {"type": "integer", "minimum": 0, "description": "Rows in this response"},
            "query_ms": {
                "type": "number",
                "minimum": 0,
                "description": "Warehouse time when the result was computed, ms",
            },
        },
        "required": ["count", "query_ms"],
        "additionalProperties": False,
    }


def _error() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "integer"},
                    "status": {"type": "string"},
                    "message": {"type": "string"},
                    "parameter": {"type": "string"},
                },
                "required": ["code", "status", "message"],
                "additionalProperties": False,
            }
        },
        "required": ["error"],
        "additionalProperties": False,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_HEADERS: Final[dict[str, dict[str, Any]]] = {
    "X-Request-ID": {
        "description": "The caller's X-Request-ID, or a new id; also in the server's logs",
        "schema": {"type": "string"},
    },
    "ETag": {"description": "Strong validator of the body", "schema": {"type": "string"}},
    "Cache-Control": {"schema": {"type": "string"}},
    "Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}},
    "X-Next-Page-Token": {
        "description": "CSV/NDJSON up to 5000 rows: the next page's token, when there is one",
        "schema": {"type": "string"},
    },
}
_ERRORS: Final[dict[str, tuple[str, str, tuple[str, ...]]]] = {
    "400": ("BadRequest", "A parameter is unknown, repeated or invalid (named)", ()),
    "401": ("Unauthorized", "No valid API key (only when keys are configured)", ()),
    "404": ("NotFound", "No such flight, or no events for it", ()),
    "406": ("NotAcceptable", "The Accept header allows none of the formats", ()),
    "429": ("TooManyRequests", "The key's rate limit is spent", ("Retry-After",)),
    "503": ("Unavailable", "The warehouse is slow or down; retry", ("Retry-After",)),
}


def _error_response(description: str, headers: tuple[str, ...]) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {h: _HEADERS[h] for h in ("X-Request-ID", *headers)},
        "content": {"application/json": {"schema": _ref("Error")}},
    }


def _parameter(param: Param) -> dict[str, Any]:
    return {
        "name": param.name,
        "in": "query",
        "required": False,
        "description": param.description,
        "schema": param.schema,
    }


def _ok(
    schema: str,
    *,
    exports: bool,
    extra_headers: tuple[str, ...] = (),
    links: dict[str, Any] | None = None,
) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": _ref(schema)}}
    if exports:
        content.update(_EXPORT_TYPES)
    headers = ("X-Request-ID", "ETag", "Cache-Control", *extra_headers)
    response: dict[str, Any] = {
        "description": "OK",
        "headers": {h: _HEADERS[h] for h in headers},
        "content": content,
    }
    if links:
        # OpenAPI links: how a response feeds the next request (clients and stateful tests).
        response["links"] = links
    return response


def _link(operation_id: str, description: str, **parameters: str) -> dict[str, Any]:
    """An OpenAPI link: call `operation_id` with `parameters` (runtime expressions)."""
    return {"operationId": operation_id, "description": description, "parameters": parameters}


def _operation(
    operation_id: str,
    summary: str,
    description: str,
    accepted: tuple[Param, ...],
    ok: dict[str, Any],
    *,
    errors: tuple[str, ...],
    path_params: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok, "304": {"$ref": "#/components/responses/NotModified"}}
    for code in errors:
        responses[code] = {"$ref": f"#/components/responses/{_ERRORS[code][0]}"}
    return {
        "operationId": operation_id,
        "summary": summary,
        "description": description,
        "parameters": [*(path_params or []), *(_parameter(p) for p in accepted)],
        "responses": responses,
        "security": [{"ApiKey": []}, {"BearerKey": []}, {}],
    }


_FLIGHT_ID_PARAM: Final = {
    "name": "flight_id",
    "in": "path",
    "required": True,
    "description": "YYYY-MM-DD-<carrier><flight_number>-<origin>, e.g. 2013-01-01-UA1545-EWR",
    "schema": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}-[A-Z0-9]{2}\d{1,5}-[A-Z0-9]{3}$"},
}


def build_spec() -> dict[str, Any]:
    """The OpenAPI 3.0.3 document as a dict."""
    spec = APISpec(
        title="flightpipe API",
        version="1",
        openapi_version="3.0.3",
        info={"description": DESCRIPTION},
    )
    spec.components.schema("Flight", _flight_schema(all_required=True))
    spec.components.schema("FlightFields", _flight_schema(all_required=False))
    spec.components.schema("Meta", _meta())
    spec.components.schema("Error", _error())
    spec.components.schema("DelayStatsRow", _stats_row())
    spec.components.schema(
        "FlightPage",
        {
            "type": "object",
            "properties": {
                # Inlined rather than referenced: validators resolve a $ref per row, slowly.
                "data": {"type": "array", "items": _flight_schema(all_required=False)},
                "next_page_token": {"type": "string", "nullable": True},
                "meta": _ref("Meta"),
            },
            "required": ["data", "next_page_token", "meta"],
            "additionalProperties": False,
        },
    )
    spec.components.schema(
        "FlightResponse",
        {
            "type": "object",
            "properties": {"data": _ref("Flight"), "meta": _ref("Meta")},
            "required": ["data", "meta"],
            "additionalProperties": False,
        },
    )
    spec.components.schema(
        "EventsResponse",
        {
            "type": "object",
            "properties": {
                "data": {"type": "array", "items": _ref("Flight"), "minItems": 1},
                "meta": _ref("Meta"),
            },
            "required": ["data", "meta"],
            "additionalProperties": False,
        },
    )
    spec.components.schema(
        "DelayStatsResponse",
        {
            "type": "object",
            "properties": {
                "data": {"type": "array", "items": _ref("DelayStatsRow")},
                "group_by": {"type": "string"},
                "meta": _ref("Meta"),
            },
            "required": ["data", "group_by", "meta"],
            "additionalProperties": False,
        },
    )
    spec.components.schema(
        "Health",
        {
            "type": "object",
            "properties": {"status": {"type": "string"}},
            "required": ["status"],
            "additionalProperties": False,
        },
    )
    for name, description, headers in _ERRORS.values():
        spec.components.response(name, _error_response(description, headers))
    spec.components.response(
        "NotModified",
        {
            "description": "If-None-Match matched the current ETag",
            "headers": {h: _HEADERS[h] for h in ("X-Request-ID", "ETag", "Cache-Control")},
        },
    )
    spec.components.security_scheme(
        "ApiKey", {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    )
    spec.components.security_scheme("BearerKey", {"type": "http", "scheme": "bearer"})
    spec.path(
        path="/v1/flights",
        operations={
            "get": _operation(
                "listFlights",
                "List flights",
                "Current state of the flights matching every given filter, sorted, in keyset "
                "pages (JSON) or as a CSV/NDJSON export.",
                params.LIST_PARAMS,
                _ok(
                    "FlightPage",
                    exports=True,
                    extra_headers=("X-Next-Page-Token",),
                    links={
                        "NextPage": _link(
                            "listFlights",
                            "The next page: this page's next_page_token, sent with the same "
                            "filters and sort",
                            page_token="$response.body#/next_page_token",  # noqa: S106 - an expression
                        ),
                        "Flight": _link(
                            "getFlight",
                            "The current state of the first flight of the page",
                            flight_id="$response.body#/data/0/flight_id",
                        ),
                        "Events": _link(
                            "getFlightEvents",
                            "The event history of the first flight of the page",
                            flight_id="$response.body#/data/0/flight_id",
                        ),
                    },
                ),
                errors=("400", "401", "406", "429", "503"),
            )
        },
    )
    spec.path(
        path="/v1/flights/{flight_id}",
        operations={
            "get": _operation(
                "getFlight",
                "One flight",
                "The current state of one flight (its latest event).",
                (),
                _ok(
                    "FlightResponse",
                    exports=False,
                    links={
                        "Events": _link(
                            "getFlightEvents",
                            "The event history of this flight",
                            flight_id="$response.body#/data/flight_id",
                        )
                    },
                ),
                errors=("400", "401", "404", "429", "503"),
                path_params=[_FLIGHT_ID_PARAM],
            )
        },
    )
    spec.path(
        path="/v1/flights/{flight_id}/events",
        operations={
            "get": _operation(
                "getFlightEvents",
                "A flight's events",
                "Every distinct stored event of the flight, by event_time, then publish_time.",
                params.EVENTS_PARAMS,
                _ok("EventsResponse", exports=True),
                errors=("400", "401", "404", "406", "429", "503"),
                path_params=[_FLIGHT_ID_PARAM],
            )
        },
    )
    spec.path(
        path="/v1/stats/delays",
        operations={
            "get": _operation(
                "getDelayStats",
                "Delay statistics",
                "Counts, mean, median and 90th percentile delays and the on-time rate over "
                "current states matching the filters, one row per group, ordered by the keys.",
                params.STATS_PARAMS,
                _ok("DelayStatsResponse", exports=True),
                errors=("400", "401", "406", "429", "503"),
            )
        },
    )
    health = {
        "description": "OK",
        "content": {"application/json": {"schema": _ref("Health")}},
    }
    spec.path(
        path="/healthz",
        operations={
            "get": {"operationId": "liveness", "summary": "Liveness", "responses": {"200": health}}
        },
    )
    spec.path(
        path="/readyz",
        operations={
            "get": {
                "operationId": "readiness",
                "summary": "Readiness: the warehouse answers",
                "responses": {"200": health, "503": {"$ref": "#/components/responses/Unavailable"}},
            }
        },
    )
    spec.path(
        path="/openapi.json",
        operations={
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.0",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    )
    spec.path(
        path="/docs",
        operations={
            "get": {
                "operationId": "getDocs",
                "summary": "This document as a web page",
                "responses": {
                    "200": {
                        "description": "HTML",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    )
    return spec.to_dict()


@cache
def _spec_bytes() -> bytes:
    return encode_json(build_spec())


@cache
def _docs_bytes() -> bytes:
    return render_docs(build_spec()).encode()


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The OpenAPI document."""
    response = Response(_spec_bytes(), mimetype="application/json")
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.get("/docs")
def docs() -> Response:
    """The documentation page."""
    response = Response(_docs_bytes(), mimetype="text/html")
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


_CSS: Final = (
    "body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
    "color:#1d2330}code,td.n{font-family:ui-monospace,monospace}table{border-collapse:collapse;"
    "width:100%;margin:.5rem 0 1.5rem}td,th{border-bottom:1px solid #dde;padding:.3rem .5rem;"
    "text-align:left;vertical-align:top}h2{margin-top:2.5rem;border-top:2px solid #1d2330;"
    "padding-top:.5rem}.m{background:#1d2330;color:#fff;padding:0 .4rem;border-radius:3px}"
    "pre{white-space:pre-wrap;background:#f4f5f8;padding:1rem}"
)


def _schema_text(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    parts = [str(schema.get("type", "object"))]
    for key in ("format", "pattern", "minimum", "maximum", "maxLength", "default"):
        if key in schema:
            parts.append(f"{key}: {schema[key]}")
    if "enum" in schema:
        parts.append("one of " + ", ".join(map(str, schema["enum"])))
    return "; ".join(parts)


def render_docs(spec: dict[str, Any]) -> str:
    """The document as one self-contained HTML page."""
    e = html.escape
    out = [
        "<!doctype html><html lang=en><meta charset=utf-8>",
        f"<title>{e(spec['info']['title'])}</title><style>{_CSS}</style>",
        f"<h1>{e(spec['info']['title'])}</h1>",
        "<p>Machine-readable: <a href=/openapi.json>/openapi.json</a> (OpenAPI 3.0).</p>",
        f"<pre>{e(spec['info'].get('description', ''))}</pre>",
    ]
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            out.append(f"<h2><span class=m>{e(method.upper())}</span> <code>{e(path)}</code></h2>")
            out.append(f"<p><b>{e(op.get('summary', ''))}</b> {e(op.get('description', ''))}</p>")
            if op.get("parameters"):
                out.append("<table><tr><th>Parameter<th>In<th>Schema<th>Description")
                out.extend(
                    f"<tr><td class=n>{e(p['name'])}<td>{e(p['in'])}"
                    f"<td>{e(_schema_text(p['schema']))}<td>{e(p.get('description', ''))}"
                    for p in op["parameters"]
                )
                out.append("</table>")
            out.append("<table><tr><th>Status<th>Meaning<th>Body")
            for status, declared in op["responses"].items():
                response = declared
                if "$ref" in declared:
                    name = declared["$ref"].rsplit("/", 1)[-1]
                    response = spec["components"]["responses"][name]
                types = ", ".join(
                    f"{t} ({_schema_text(c.get('schema', {}))})"
                    for t, c in response.get("content", {}).items()
                )
                out.append(
                    f"<tr><td>{e(status)}<td>{e(response.get('description', ''))}<td>{e(types)}"
                )
            out.append("</table>")
            links = [
                (status, name, link)
                for status, declared in op["responses"].items()
                for name, link in declared.get("links", {}).items()
            ]
            if links:
                out.append("<table><tr><th>Link<th>From<th>To<th>Parameters")
                out.extend(
                    f"<tr><td class=n>{e(name)}<td>{e(status)}<td>{e(link['operationId'])}: "
                    f"{e(link.get('description', ''))}<td class=n>"
                    + e(", ".join(f"{k} = {v}" for k, v in link.get("parameters", {}).items()))
                    for status, name, link in links
                )
                out.append("</table>")
    out.append("<h2>Schemas</h2>")
    for name, schema in spec["components"]["schemas"].items():
        out.append(f"<h3 id={e(name)}>{e(name)}</h3><table><tr><th>Field<th>Schema<th>About")
        for field, sub in schema.get("properties", {}).items():
            about = sub.get("description", "") if isinstance(sub, dict) else ""
            out.append(
                f"<tr><td class=n>{e(field)}<td>{e(_schema_text(sub))}"
                f"{' (nullable)' if sub.get('nullable') else ''}<td>{e(about)}"
            )
        out.append("</table>")
    return "\n".join(out) + "\n"
