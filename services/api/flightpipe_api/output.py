"""Response formats: JSON (default), CSV and NDJSON, negotiated by `format=` or `Accept`.

Rows are dicts of warehouse values. JSON and NDJSON are encoded by msgspec (RFC 3339 times with
`Z`); CSV cells carry the same text (msgspec's builtins), empty for NULL, with a header row of
the chosen columns. `encode_rows` is the warehouse's `query.render_rows` (one definition, which a
streamed export's chunks also follow: the warehouse renders those itself, `export_flights`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec
from flask import request

from flightpipe.warehouse.query import render_rows
from flightpipe_api.errors import ApiError

MIME: Final = {
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "ndjson": "application/x-ndjson",
}
# Each type is offered with and without `charset=utf-8`: werkzeug's MIMEAccept matches media-type
# parameters exactly (werkzeug/datastructures/accept.py, `MIMEAccept._value_matches`), so
# `Accept: application/json; charset=utf-8` matches only an offer that carries the same parameter.
_BY_MIME: Final = {
    offer: fmt
    for media, fmt in (
        ("application/json", "json"),
        ("text/csv", "csv"),
        ("application/x-ndjson", "ndjson"),
    )
    for offer in (media, f"{media}; charset=utf-8")
}
_OFFERS: Final = list(_BY_MIME)
_encoder: Final = msgspec.json.Encoder()


def negotiate(fmt: str | None) -> str:
    """`format` if given, else the best of the Accept header (JSON when absent or */*)."""
    if fmt is not None:
        return fmt
    if not request.headers.get("Accept"):
        return "json"
    best = request.accept_mimetypes.best_match(_OFFERS)
    if best is None:
        shown = "application/json, text/csv, application/x-ndjson (charset=utf-8)"
        raise ApiError(406, f"acceptable types: {shown}, or use format=")
    return _BY_MIME[best]


def encode_json(body: Any) -> bytes:
    """A JSON document."""
    return _encoder.encode(body)


def csv_header(columns: Sequence[str]) -> bytes:
    """The CSV header row."""
    return (",".join(columns) + "\r\n").encode()


def encode_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str], fmt: str) -> bytes:
    """Rows (only `columns`, in that order) as NDJSON lines or CSV records without header."""
    return render_rows(rows, columns, "ndjson" if fmt == "ndjson" else "csv")
