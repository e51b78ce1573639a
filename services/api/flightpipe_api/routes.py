"""The analysts' endpoints under /v1.

* `GET /v1/flights`: current states, filtered, sorted, keyset-paged, chosen columns; JSON pages
  or CSV/NDJSON exports (streamed in chunks of EXPORT_CHUNK rows above that size);
* `GET /v1/flights/<flight_id>`: one current state;
* `GET /v1/flights/<flight_id>/events`: the flight's event history in event-time order;
* `GET /v1/stats/delays`: per-group counts, means, medians and 90th percentiles.

Each view parses its query into the endpoint's Struct (`params.py`). Complete responses get a
strong ETag (a hash of the body: the body holds no timing, so the same data gives the same tag),
Cache-Control and the warehouse time in `Server-Timing`; werkzeug's `make_conditional` answers
If-None-Match (304) and If-Match (412) for every one of them, cached or not. They are also
stored in the result cache (`cache.py`) that `gate.py` serves hits from.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, get_type_hints

import msgspec
from flask import Blueprint, Response, current_app, request

from flightpipe.contract import COLUMN_NAMES, FlightEvent
from flightpipe.warehouse import FlightFilter, WarehouseError
from flightpipe.warehouse.port import PageKey, Selection, Sort
from flightpipe.warehouse.query import ExportFormat
from flightpipe_api import output
from flightpipe_api.cache import ResultCache, etag_of
from flightpipe_api.context import get_warehouse
from flightpipe_api.errors import ApiError, bad_parameter
from flightpipe_api.exports import export_gate
from flightpipe_api.gate import CACHE_CONTROL, ENV_CACHE_KEY, NO_STORE
from flightpipe_api.params import EventsQuery, FlightsQuery, NoQuery, StatsQuery, parse_query
from flightpipe_api.schemas import STATS_COLUMNS, stats_row
from flightpipe_api.tokens import decode_page_token, encode_page_token

bp = Blueprint("v1", __name__, url_prefix="/v1")
log = logging.getLogger(__name__)
CACHE_KEY: Final = "flightpipe.cache"
EXPORT_CHUNK: Final = 5000
NEXT_PAGE_HEADER: Final = "X-Next-Page-Token"
# The contract's own flight_id rule (pattern and length), checked by msgspec.
_FLIGHT_ID_TYPE: Final = get_type_hints(FlightEvent, include_extras=True)["flight_id"]


def _cache() -> ResultCache:
    cache: ResultCache = current_app.extensions[CACHE_KEY]
    return cache


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = call()
    return result, (time.perf_counter() - started) * 1e3


def _complete(
    body: bytes,
    fmt: str,
    route: str,
    generation: int,
    *,
    db_ms: float,
    headers: dict[str, str] | None = None,
) -> Response:
    """A complete 200 (or 304/412 by werkzeug): ETag, Cache-Control, stored in the cache."""
    response = Response(body, status=200, content_type=output.MIME[fmt])
    response.set_etag(etag_of(body))
    response.headers["Cache-Control"] = CACHE_CONTROL
    response.headers["Vary"] = "Accept"
    response.headers["Server-Timing"] = f"db;dur={db_ms:.2f}"
    response.headers["X-Cache"] = "miss"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    key = request.environ.get(ENV_CACHE_KEY)
    if key is not None and not headers:
        cache = _cache()
        etag = response.headers["ETag"]
        cache.put(key, cache.new_entry(body, output.MIME[fmt], route, generation, etag))
    # werkzeug.sansio.response.Response.make_conditional: is_resource_modified() on the ETag;
    # 304 drops the body (werkzeug/wrappers/response.py get_app_iter), 412 for If-Match.
    response.make_conditional(request)
    return response


def _check_flight_id(flight_id: str) -> None:
    try:
        msgspec.convert(flight_id, _FLIGHT_ID_TYPE)
    except msgspec.ValidationError:
        raise bad_parameter("flight_id", "expected YYYY-MM-DD-<carrier><number>-<origin>") from None


@bp.get("/flights")
def list_flights() -> Response:
    """Current state of the flights matching the filters, in keyset pages."""
    query = parse_query(request.args, FlightsQuery)
    fmt = output.negotiate(query.format)
    flt = query.flight_filter()
    limit = query.limit_for(fmt)
    sort = query.order
    after = decode_page_token(query.page_token, sort) if query.page_token is not None else None
    columns: tuple[str, ...] = query.fields or COLUMN_NAMES
    # The cursor needs the sort value and flight_id of the last row even when not asked for.
    query_columns = list(dict.fromkeys([*columns, sort.field, "flight_id"]))
    if fmt != "json" and limit > EXPORT_CHUNK:
        return _stream(flt, sort=sort, after=after, columns=columns, limit=limit, fmt=fmt)
    generation = _cache().generation()
    # One extra row tells whether another page exists without a COUNT.
    rows, db_ms = _timed(
        lambda: get_warehouse().list_flights(Selection(flt, limit + 1, after, sort, query_columns))
    )
    next_token = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_token = encode_page_token((rows[-1][sort.field], rows[-1]["flight_id"]), sort)
    if fmt == "json":
        data = rows if len(query_columns) == len(columns) else _project(rows, columns)
        body = output.encode_json(
            {"data": data, "next_page_token": next_token, "meta": {"count": len(rows)}}
        )
        return _complete(body, fmt, "/v1/flights", generation, db_ms=db_ms)
    body = _export_head(columns, fmt) + output.encode_rows(rows, columns, fmt)
    headers = {NEXT_PAGE_HEADER: next_token} if next_token else None
    return _complete(body, fmt, "/v1/flights", generation, db_ms=db_ms, headers=headers)


def _project(rows: list[dict[str, Any]], columns: Sequence[str]) -> list[dict[str, Any]]:
    return [{c: r[c] for c in columns} for r in rows]


def _export_head(columns: Sequence[str], fmt: str) -> bytes:
    return output.csv_header(columns) if fmt == "csv" else b""


def _stream(
    flt: FlightFilter,
    *,
    sort: Sort,
    after: PageKey | None,
    columns: Sequence[str],
    limit: int,
    fmt: str,
) -> Response:
    """A large export: one warehouse query, sent EXPORT_CHUNK rows at a time (no cache, no token).

    The rows come from one query on one snapshot (`Warehouse.export_flights`), read in chunks as
    the client takes them, so memory stays at a chunk and the query runs once. The first chunk is
    read before the response starts, so a warehouse failure is still a 503; a failure after that
    can only end the stream early, and is logged.
    """
    gate = export_gate()
    release = gate.admit()
    export_format: ExportFormat = "ndjson" if fmt == "ndjson" else "csv"
    try:
        pages = get_warehouse().export_flights(
            Selection(flt, limit, after, sort, columns), fmt=export_format, chunk=EXPORT_CHUNK
        )
    except BaseException:
        release()
        raise

    def finish() -> None:
        release()
        pages.close()  # ends the export's query and frees its cursor

    try:
        head = _export_head(columns, fmt) + (gate.produce(pages) or b"")
    except BaseException:
        finish()
        raise

    def chunks() -> Iterator[bytes]:
        try:
            yield head
            while True:
                try:
                    body = gate.produce(pages)
                except WarehouseError:
                    log.exception("export stopped early: the warehouse failed mid-stream")
                    return
                if body is None:
                    return
                yield body
        finally:
            finish()  # at the end of the body too: a client that never closes keeps no slot

    body = chunks()
    # Whichever comes first frees the slot: the body's end, the server's close(), or the body
    # being dropped unread by a caller that never closes it (a generator never started runs no
    # `finally`; weakref.finalize runs when it is collected).
    weakref.finalize(body, finish)
    response = Response(body, status=200, content_type=output.MIME[fmt])
    response.call_on_close(finish)
    response.headers["Cache-Control"] = NO_STORE
    response.headers["Vary"] = "Accept"
    response.headers["X-Cache"] = "bypass"
    # No make_conditional here: a streamed body has no validator to compare, and werkzeug's
    # make_conditional computes Content-Length through `_ensure_sequence`, which turns the
    # generator into a list (werkzeug/wrappers/response.py, calculate_content_length): the whole
    # export would sit in memory before the first byte is sent.
    return response


@bp.get("/flights/<flight_id>")
def get_flight(flight_id: str) -> Response:
    """The current state of one flight."""
    parse_query(request.args, NoQuery)
    _check_flight_id(flight_id)
    generation = _cache().generation()
    row, db_ms = _timed(lambda: get_warehouse().get_flight(flight_id))
    if row is None:
        raise ApiError(404, f"no flight {flight_id}")
    body = output.encode_json({"data": row, "meta": {"count": 1}})
    return _complete(body, "json", "/v1/flights/<flight_id>", generation, db_ms=db_ms)


@bp.get("/flights/<flight_id>/events")
def flight_events(flight_id: str) -> Response:
    """Every stored event of one flight, in event-time order."""
    query = parse_query(request.args, EventsQuery)
    fmt = output.negotiate(query.format)
    _check_flight_id(flight_id)
    generation = _cache().generation()
    rows, db_ms = _timed(lambda: get_warehouse().flight_events(flight_id))
    if not rows:
        raise ApiError(404, f"no events for flight {flight_id}")
    route = "/v1/flights/<flight_id>/events"
    if fmt == "json":
        body = output.encode_json({"data": rows, "meta": {"count": len(rows)}})
    else:
        body = _export_head(COLUMN_NAMES, fmt) + output.encode_rows(rows, COLUMN_NAMES, fmt)
    return _complete(body, fmt, route, generation, db_ms=db_ms)


@bp.get("/stats/delays")
def delay_stats() -> Response:
    """Delay statistics grouped by one or two keys."""
    query = parse_query(request.args, StatsQuery)
    fmt = output.negotiate(query.format)
    flt = query.flight_filter()
    generation = _cache().generation()
    stats, db_ms = _timed(lambda: get_warehouse().delay_stats(flt, query.group_by))
    data = [stats_row(s) for s in stats]
    if fmt == "json":
        body = output.encode_json(
            {"data": data, "group_by": ",".join(query.group_by), "meta": {"count": len(data)}}
        )
    else:
        columns = (*query.group_by, *STATS_COLUMNS)
        body = _export_head(columns, fmt) + output.encode_rows(data, columns, fmt)
    return _complete(body, fmt, "/v1/stats/delays", generation, db_ms=db_ms)
