"""The WSGI layer in front of Flask: request id, API keys, rate limits and cached responses.

Every request gets its request id here (the caller's X-Request-ID when sane, else a new one),
echoed in the response header and handed to Flask (`ENV_REQUEST_ID`) for the logs. Requests
under /v1/ then pass the key check (`auth.KeyGate`): 401 or 429 in the one JSON error shape.
A GET under /v1/ whose response is in the result cache is answered right here (200 with the
cached body, or 304 when If-None-Match matches its ETag) without Flask or the warehouse: that is
the hot path, kept to a dict lookup and a few headers. Anything else goes to Flask with the cache
key in `ENV_CACHE_KEY`, and the view stores its response under that key.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from werkzeug.http import is_resource_modified

from flightpipe import telemetry
from flightpipe_api import compression
from flightpipe_api.auth import KeyGate
from flightpipe_api.cache import Entry, ResultCache
from flightpipe_api.errors import error_body

ENV_REQUEST_ID: Final = "flightpipe.request_id"
ENV_CACHE_KEY: Final = "flightpipe.cache_key"
ENV_KEY_ID: Final = "flightpipe.key_id"
CACHE_CONTROL: Final = "private, max-age=5"
NO_STORE: Final = "no-store"
_API_PREFIX: Final = "/v1/"

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def request_id(environ: dict[str, Any]) -> str:
    """The caller's X-Request-ID if it is 1-128 printable characters, else a new random id."""
    incoming: str = environ.get("HTTP_X_REQUEST_ID", "")
    if 0 < len(incoming) <= 128 and incoming.isprintable():
        return incoming
    return os.urandom(16).hex()


def cache_key(environ: dict[str, Any]) -> str:
    """Path, raw query string and Accept header: what selects a cached representation."""
    return (
        f"{environ.get('PATH_INFO', '')}?{environ.get('QUERY_STRING', '')}"
        f"#{environ.get('HTTP_ACCEPT', '')}"
    )


class Gate:
    """WSGI middleware wrapping the Flask app (see the module docstring)."""

    def __init__(self, app: WsgiApp, keys: KeyGate, cache: ResultCache) -> None:
        self.app = app
        self.keys = keys
        self.cache = cache
        self._counters: dict[tuple[str, int], Any] = {}
        self._histograms: dict[str, Any] = {}

    def _observe(self, route: str, status: int, started: float) -> None:
        counter = self._counters.get((route, status))
        if counter is None:
            counter = telemetry.HTTP_REQUESTS.labels(route=route, status=str(status))
            self._counters[(route, status)] = counter
        histogram = self._histograms.get(route)
        if histogram is None:
            histogram = self._histograms[route] = telemetry.HTTP_DURATION.labels(route=route)
        counter.inc()
        histogram.observe(time.perf_counter() - started)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        rid = request_id(environ)
        environ[ENV_REQUEST_ID] = rid
        path: str = environ.get("PATH_INFO", "")
        if not path.startswith(_API_PREFIX):
            return self.app(environ, start_response)
        verdict = self.keys.check(
            environ.get("HTTP_X_API_KEY"),
            environ.get("HTTP_AUTHORIZATION"),
            environ.get("REMOTE_ADDR"),  # failed-key limit per TCP peer (auth.py says why)
        )
        if verdict.status != 200:
            headers = [("X-Request-ID", rid), ("Cache-Control", NO_STORE)]
            if verdict.status == 401:
                headers.append(("WWW-Authenticate", 'Bearer realm="flightpipe"'))
            if verdict.retry_after:
                headers.append(("Retry-After", str(verdict.retry_after)))
            self._observe("gate", verdict.status, started)
            return self._send(
                start_response,
                verdict.status,
                error_body(verdict.status, verdict.message),
                "application/json",
                headers,
            )
        environ[ENV_KEY_ID] = verdict.key_id
        if environ.get("REQUEST_METHOD") != "GET" or not self.cache.enabled:
            return self.app(environ, start_response)
        key = cache_key(environ)
        environ[ENV_CACHE_KEY] = key
        entry = self.cache.get(key)
        # If-Match and Range are rare: Flask's make_conditional answers them (412, 206).
        if entry is None or "HTTP_IF_MATCH" in environ or "HTTP_RANGE" in environ:
            return self.app(environ, start_response)
        return self._hit(entry, environ, start_response, rid, started)

    def _hit(
        self,
        entry: Entry,
        environ: dict[str, Any],
        start_response: StartResponse,
        rid: str,
        started: float,
    ) -> Iterable[bytes]:
        body, etag, encoding = compression.representation(
            entry, environ.get("HTTP_ACCEPT_ENCODING", "")
        )
        headers = [
            ("Cache-Control", CACHE_CONTROL),
            ("Vary", f"Accept, {compression.VARY}"),
            ("X-Request-ID", rid),
            ("X-Cache", "hit"),
            ("Server-Timing", 'cache;desc="hit"'),
        ]
        # As on the Flask path: the view answers 304 when If-None-Match matches the identity
        # ETag, then flask-compress when it matches the encoded one. werkzeug's
        # is_resource_modified is the function both use (RFC 9110 weak comparison).
        if "HTTP_IF_NONE_MATCH" in environ:
            for candidate in dict.fromkeys((entry.etag, etag)):
                if not is_resource_modified(environ, etag=candidate):
                    self._observe(entry.route, 304, started)
                    start_response("304 Not Modified", [("ETag", candidate), *headers])
                    return [b""]
        headers.append(("ETag", etag))
        if encoding is not None:
            headers.append(("Content-Encoding", encoding))
        self._observe(entry.route, 200, started)
        return self._send(start_response, 200, body, entry.content_type, headers)

    @staticmethod
    def _send(
        start_response: StartResponse,
        status: int,
        body: bytes,
        content_type: str,
        headers: list[tuple[str, str]],
    ) -> Iterable[bytes]:
        reason = _REASONS.get(status, "")
        start_response(
            f"{status} {reason}",
            [("Content-Type", content_type), ("Content-Length", str(len(body))), *headers],
        )
        return [body]


_REASONS: Final = {200: "OK", 401: "Unauthorized", 429: "Too Many Requests"}
