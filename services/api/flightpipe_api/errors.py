"""One JSON error shape for every error the API returns.

    {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "...", "parameter": "limit"}}

Views raise `ApiError` (or let the warehouse raise); the handlers here turn everything into that
shape. A warehouse that is slow or down is a 503 with Retry-After, never a 500.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from flightpipe.warehouse import WarehouseError, WarehouseUnavailable

log = logging.getLogger(__name__)
_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    413: "INVALID_ARGUMENT",  # waitress: request body too large (flightpipe serve)
    429: "RESOURCE_EXHAUSTED",
    431: "INVALID_ARGUMENT",  # waitress: request headers too large (flightpipe serve)
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
RETRY_AFTER_SECONDS = 5


class ApiError(Exception):
    """An error to return to the client as it is."""

    def __init__(self, code: int, message: str, parameter: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.parameter = parameter


def bad_parameter(parameter: str, message: str) -> ApiError:
    """A 400 naming the offending query parameter."""
    return ApiError(400, f"{parameter}: {message}", parameter)


def error_body(code: int, message: str, parameter: str | None = None) -> bytes:
    """The one error shape, encoded."""
    body: dict[str, Any] = {
        "code": code,
        "status": _STATUS.get(code, "UNKNOWN"),
        "message": message,
    }
    if parameter is not None:
        body["parameter"] = parameter
    return msgspec.json.encode({"error": body})


def error_response(
    code: int, message: str, parameter: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """Build the one error shape (never cached: errors say nothing stable)."""
    response = Response(
        error_body(code, message, parameter), status=code, mimetype="application/json"
    )
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def register_error_handlers(app: Flask) -> None:
    """Route every exception through `error_response`."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        return error_response(exc.code, exc.message, exc.parameter, headers=headers)

    @app.errorhandler(WarehouseError)
    def _warehouse_error(exc: WarehouseError) -> Response:
        if isinstance(exc, WarehouseUnavailable):  # slow or down: expected now and then
            log.warning("warehouse unavailable: %s", exc)
            message = "the warehouse is unavailable or too slow; retry later"
        else:
            log.error("warehouse error: %s", exc)
            message = "the warehouse could not answer; retry later"
        return error_response(503, message, headers={"Retry-After": str(RETRY_AFTER_SECONDS)})

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        code = exc.code or 500
        allowed: list[str] | None = getattr(exc, "valid_methods", None)  # 405 carries them
        headers = {"Allow": ", ".join(allowed)} if allowed else None
        return error_response(code, exc.description or exc.name, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal error; it has been logged")
