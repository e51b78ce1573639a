"""JSON responses encoded by msgspec: RFC 3339 timestamps with `Z`, and fast."""

from __future__ import annotations

from typing import Any

import msgspec
from flask import Response

_encoder = msgspec.json.Encoder()


def json_response(body: Any, status: int = 200) -> Response:
    """A JSON response (Flask's own provider would render datetimes as HTTP dates)."""
    return Response(_encoder.encode(body), status=status, mimetype="application/json")
