"""The analysts' endpoints under /v1.

* `GET /v1/flights`: current states, filtered, sorted, keyset-paged, chosen columns; JSON pages
  or CSV/NDJSON exports (streamed in chunks of EXPORT_CHUNK rows above that size);
* `GET /v1/flights/<flight_id>`: one current state;
* `GET /v1/flights/<flight_id>/events`: the flight's event history in event-time order;
* `GET /v1/stats/delays`: per-group counts, means, medians and 90th percentiles.

Complete responses carry an ETag and Cache-Control, answer If-None-Match with 304, and are stored
in the result cache (`cache.py`) that `gate.py` serves hits from. JSON bodies carry `meta` with
`count` (rows in this response) and `query_ms` (warehouse time when the result was computed).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

from flask import Blueprint, Response, current_app, request

from flightpipe.contract import COLUMN_NAMES, FLIGHT_ID_PATTERN
from flightpipe.warehouse import FlightFilter, WarehouseError
from flightpipe.warehouse.port import DEFAULT_SORT, PageKey, Sort
from flightpipe_api import output
from flightpipe_api.cache import ResultCache, etag_of
from flightpipe_api.context import get_warehouse
from flightpipe_api.errors import ApiError, bad_parameter
from flightpipe_api.gate import CACHE_CONTROL, ENV_CACHE_KEY, NO_STORE
from flightpipe_api.params import (
    EVENTS_PARAMS,
    LIST_PARAMS,
    STATS_PARAMS,
    decode_page_token,
    encode_page_token,
    parse,
    parse_filter,
    parse_limit,
)

bp = Blueprint("v1", __name__, url_prefix="/v1")
log = logging.getLogger(__name__)
CACHE_KEY: Final = "flightpipe.cache"
EXPORT_CHUNK: Final = 5000
NEXT_PAGE_HEADER: Final = "X-Next-Page-Token"
_FLIGHT_ID = re.compile(FLIGHT_ID_PATTERN)
STATS_COLUMNS: Final = (
    "flights",
    "cancelled",
    "avg_dep_delay_min",
    "avg_arr_delay_min",
    "on_time_rate",
    "median_dep_delay_min",
    "p90_dep_delay_min",
    "median_arr_delay_min",
    "p90_arr_delay_min",
)


def _cache() -> ResultCache:
    cache: ResultCache = current_app.extensions[CACHE_KEY]
    return cache


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = call()
    return result, round((time.perf_counter() - started) * 1e3, 3)


def _if_none_match(etag: str) -> bool:
    return etag in request.if_none_match or request.if_none_match.star_tag


def _complete(
    body: bytes, fmt: str, route: str, generation: int, headers: dict[str, str] | None = None
) -> Response:
    """A complete 200 (or 304): ETag, Cache-Control, stored in the result cache."""
    etag = etag_of(body)
    key = request.environ.get(ENV_CACHE_KEY)
    if key is not None and not headers:
        cache = _cache()
        cache.put(key, cache.new_entry(body, output.MIME[fmt], route, generation, etag))
    if _if_none_match(etag):
        response = Response(status=304)
    else:
        response = Response(body, status=200, content_type=output.MIME[fmt])
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = CACHE_CONTROL
    response.headers["Vary"] = "Accept"
    response.headers["X-Cache"] = "miss"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _check_flight_id(flight_id: str) -> None:
    if not _FLIGHT_ID.match(flight_id):
        raise bad_parameter("flight_id", "expected YYYY-MM-DD-<carrier><number>-<origin>")


@bp.get("/flights")
def list_flights() -> Response:
    """Current state of the flights matching the filters, in keyset pages."""
    values = parse(request.args, LIST_PARAMS)
    fmt = output.negotiate(values)
    flt = parse_filter(values)
    limit = parse_limit(values, fmt)
    sort: Sort = values.get("sort", DEFAULT_SORT)
    after = decode_page_token(values["page_token"], sort) if "page_token" in values else None
    columns: tuple[str, ...] = values.get("fields", COLUMN_NAMES)
    # The cursor needs the sort value and flight_id of the last row even when not asked for.
    query_columns = list(dict.fromkeys([*columns, sort.field, "flight_id"]))
    if fmt != "json" and limit > EXPORT_CHUNK:
        return _stream(
            flt,
            sort=sort,
            after=after,
            query_columns=query_columns,
            columns=columns,
            limit=limit,
            fmt=fmt,
        )
    generation = _cache().generation()
    # One extra row tells whether another page exists without a COUNT.
    rows, query_ms = _timed(
        lambda: get_warehouse().list_flights(flt, limit + 1, after, sort, query_columns)
    )
    next_token = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_token = encode_page_token((rows[-1][sort.field], rows[-1]["flight_id"]), sort)
    if fmt == "json":
        data = rows if len(query_columns) == len(columns) else _project(rows, columns)
        body = output.encode_json(
            {
                "data": data,
                "next_page_token": next_token,
                "meta": {"count": len(rows), "query_ms": query_ms},
            }
        )
        return _complete(body, fmt, "/v1/flights", generation)
    body = _export_head(columns, fmt) + output.encode_rows(rows, columns, fmt)
    headers = {NEXT_PAGE_HEADER: next_token} if next_token else None
    return _complete(body, fmt, "/v1/flights", generation, headers)


def _project(rows: list[dict[str, Any]], columns: Sequence[str]) -> list[dict[str, Any]]:
    return [{c: r[c] for c in columns} for r in rows]


def _export_head(columns: Sequence[str], fmt: str) -> bytes:
    return output.csv_header(columns) if fmt == "csv" else b""


def _stream(
    flt: FlightFilter,
    *,
    sort: Sort,
    after: PageKey | None,
    query_columns: list[str],
    columns: Sequence[str],
    limit: int,
    fmt: str,
) -> Response:
    """A large export, fetched and sent EXPORT_CHUNK rows at a time (no cache, no next token).

    The first chunk is read before the response starts, so a warehouse failure is still a 503;
    a failure after that can only end the stream early, and is logged.
    """
    warehouse = get_warehouse()
    first = warehouse.list_flights(flt, min(EXPORT_CHUNK, limit), after, sort, query_columns)

    def chunks() -> Iterator[bytes]:
        yield _export_head(columns, fmt)
        page, cursor, remaining = first, after, limit
        while page:
            yield output.encode_rows(page, columns, fmt)
            remaining -= len(page)
            if remaining <= 0 or len(page) < EXPORT_CHUNK:
                return
            cursor = (page[-1][sort.field], page[-1]["flight_id"])
            try:
                page = warehouse.list_flights(
                    flt, min(EXPORT_CHUNK, remaining), cursor, sort, query_columns
                )
            except WarehouseError:
                log.exception("export stopped early: the warehouse failed mid-stream")
                return

    response = Response(chunks(), status=200, content_type=output.MIME[fmt])
    response.headers["Cache-Control"] = NO_STORE
    response.headers["Vary"] = "Accept"
    response.headers["X-Cache"] = "bypass"
    return response


@bp.get("/flights/<flight_id>")
def get_flight(flight_id: str) -> Response:
    """The current state of one flight."""
    parse(request.args, ())
    _check_flight_id(flight_id)
    generation = _cache().generation()
    row, query_ms = _timed(lambda: get_warehouse().get_flight(flight_id))
    if row is None:
        raise ApiError(404, f"no flight {flight_id}")
    body = output.encode_json({"data": row, "meta": {"count": 1, "query_ms": query_ms}})
    return _complete(body, "json", "/v1/flights/<flight_id>", generation)


@bp.get("/flights/<flight_id>/events")
def flight_events(flight_id: str) -> Response:
    """Every stored event of one flight, in event-time order."""
    values = parse(request.args, EVENTS_PARAMS)
    fmt = output.negotiate(values)
    _check_flight_id(flight_id)
    generation = _cache().generation()
    rows, query_ms = _timed(lambda: get_warehouse().flight_events(flight_id))
    if not rows:
        raise ApiError(404, f"no events for flight {flight_id}")
    route = "/v1/flights/<flight_id>/events"
    if fmt == "json":
        body = output.encode_json(
            {"data": rows, "meta": {"count": len(rows), "query_ms": query_ms}}
        )
        return _complete(body, fmt, route, generation)
    body = _export_head(COLUMN_NAMES, fmt) + output.encode_rows(rows, COLUMN_NAMES, fmt)
    return _complete(body, fmt, route, generation)


@bp.get("/stats/delays")
def delay_stats() -> Response:
    """Delay statistics grouped by one or two keys."""
    values = parse(request.args, STATS_PARAMS)
    fmt = output.negotiate(values)
    fields: tuple[str, ...] = values.get("group_by", ("carrier",))
    flt = parse_filter(values)
    generation = _cache().generation()
    stats, query_ms = _timed(
        lambda: get_warehouse().delay_stats(flt, fields)  # type: ignore[arg-type]
    )
    data: list[dict[str, Any]] = [
        {
            **s.key,
            "flights": s.flights,
            "cancelled": s.cancelled,
            "avg_dep_delay_min": s.avg_dep_delay_min,
            "avg_arr_delay_min": s.avg_arr_delay_min,
            "on_time_rate": s.on_time_rate,
            "median_dep_delay_min": s.median_dep_delay_min,
            "p90_dep_delay_min": s.p90_dep_delay_min,
            "median_arr_delay_min": s.median_arr_delay_min,
            "p90_arr_delay_min": s.p90_arr_delay_min,
        }
        for s in stats
    ]
    if fmt == "json":
        body = output.encode_json(
            {
                "data": data,
                "group_by": ",".join(fields),
                "meta": {"count": len(data), "query_ms": query_ms},
            }
        )
    else:
        columns = (*fields, *STATS_COLUMNS)
        body = _export_head(columns, fmt) + output.encode_rows(data, columns, fmt)
    return _complete(body, fmt, "/v1/stats/delays", generation)
