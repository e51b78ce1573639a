"""gzip for clients that ask for it (`Accept-Encoding`), streamed exports included.

Flask's responses are compressed by flask-compress: whole bodies at once, streamed exports as
they are sent, through one zlib stream (memory stays at a chunk; zlib sends compressed bytes as
its buffer fills, not at each chunk's end). Each encoding has its own strong ETag
(flask-compress appends `:gzip`, then evaluates If-None-Match again against it) and every response
says `Vary: Accept-Encoding`, so a shared cache never hands gzip to a client that did not ask.

Two things flask-compress 1.25 does not do, done here:
* It picks gzip for `Accept-Encoding: gzip;q=0`, which RFC 9110 section 12.5.3 defines as "not
  acceptable" (flask_compress/flask_compress.py, `_choose_algorithm`: a q=0 entry is still a
  candidate). `accepts_gzip` decides first, by the RFC; flask-compress runs only when it says yes.
* Cache hits never reach Flask (`gate.Gate` answers them), so `representation` gives the gate the
  same bytes, ETag and headers flask-compress would have given: the gzip body is made once per
  cache entry, with flask-compress's own gzip settings.

Only gzip is offered: every HTTP client speaks it; see docs/architecture.md ("Compression").
"""

from __future__ import annotations

import gzip
from typing import Final

from flask import Flask, Response, request
from flask_compress import Compress
from werkzeug.http import parse_accept_header

from flightpipe_api.cache import Entry

GZIP: Final = "gzip"
# flask-compress's defaults (flask_compress/flask_compress.py, Compress.init_app), stated here
# because the gate's cache hits must compress exactly as flask-compress does.
LEVEL: Final = 6
MIN_SIZE: Final = 500
MIMETYPES: Final = (
    "application/json",
    "application/x-ndjson",
    "text/csv",
    "text/html",
    "text/javascript",
    "text/css",
    "text/plain",  # /metrics (Prometheus text format)
)
VARY: Final = "Accept-Encoding"


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether a response may be gzip-encoded (RFC 9110 section 12.5.3).

    gzip's own quality if the header names it, else that of `*`; zero means not acceptable. A
    client that rates `identity` above gzip gets identity, as flask-compress would choose.
    """
    accept = parse_accept_header(accept_encoding)
    qualities = {name.lower(): quality for name, quality in accept}
    quality = qualities.get(GZIP, qualities.get("*", 0.0))
    return quality > 0 and quality >= qualities.get("identity", 0.0)


def init_app(app: Flask) -> None:
    """Compress the app's responses (flask-compress) for clients that accept gzip."""
    app.config.update(
        COMPRESS_REGISTER=False,  # registered below, behind `accepts_gzip`
        COMPRESS_ALGORITHM=[GZIP],
        COMPRESS_ALGORITHM_STREAMING=[GZIP],
        COMPRESS_STREAMS=True,
        COMPRESS_LEVEL=LEVEL,
        COMPRESS_MIN_SIZE=MIN_SIZE,
        COMPRESS_MIMETYPES=list(MIMETYPES),
        COMPRESS_EVALUATE_CONDITIONAL_REQUEST=True,
    )
    compress = Compress(app)

    @app.after_request
    def _compress(response: Response) -> Response:
        response.vary.add(VARY)
        if accepts_gzip(request.headers.get("Accept-Encoding", "")):
            return compress.after_request(response)
        return response


def representation(entry: Entry, accept_encoding: str) -> tuple[bytes, str, str | None]:
    """A cached entry as the client asked for it: (body, ETag header, Content-Encoding or None)."""
    if (
        len(entry.body) < MIN_SIZE
        or entry.content_type.split(";")[0].strip() not in MIMETYPES
        or not accepts_gzip(accept_encoding)
    ):
        return entry.body, entry.etag, None
    body = entry.encoded.get(GZIP)
    if body is None:
        # Another thread may make the same bytes at the same moment: harmless, and no lock on
        # the hot path.
        body = entry.encoded[GZIP] = gzip.compress(entry.body, LEVEL)
    return body, gzip_etag(entry.etag), GZIP


def gzip_etag(etag: str) -> str:
    """The gzip representation's ETag as flask-compress makes it: `"<etag>:gzip"` (strong)."""
    return f'{etag[:-1]}:{GZIP}"'
