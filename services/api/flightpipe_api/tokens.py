"""Page tokens: opaque keyset cursors (the sort, the last row's sort value and its flight_id).

Written by hand: the token is this API's own format. It is base64url of a small JSON array, so a
client cannot forge rows it could not list anyway; any tampering, or a token made for another
sort, is a 400 naming page_token.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from typing import Any

import msgspec

from flightpipe.warehouse import PageKey
from flightpipe.warehouse.port import DEFAULT_SORT, NULLABLE_SORT_FIELDS, Sort
from flightpipe.warehouse.query import KINDS
from flightpipe_api.errors import bad_parameter
from flightpipe_api.params import MAX_TOKEN_LENGTH


def sort_spec(sort: Sort) -> str:
    """`sort` as written in the query string."""
    return f"-{sort.field}" if sort.descending else sort.field


def _encode_value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def encode_page_token(key: PageKey, sort: Sort = DEFAULT_SORT) -> str:
    """Opaque keyset cursor: the sort, the last row's sort value and its flight_id."""
    raw = msgspec.json.encode([sort_spec(sort), _encode_value(key[0]), key[1]])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_value(field: str, value: Any) -> Any:
    """The sort value of a token, checked against the kind of its (sort) column."""
    if value is None:
        if field not in NULLABLE_SORT_FIELDS:
            raise ValueError
        return None
    kind = KINDS.get(field)
    if kind == "timestamp":
        moment = dt.datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError
        return moment
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind == "string":
        if not isinstance(value, str) or len(value) > 3:
            raise ValueError
        return value
    if not isinstance(value, int) or isinstance(value, bool) or abs(value) > 1_000_000:
        raise ValueError
    return value


def decode_page_token(token: str, sort: Sort = DEFAULT_SORT) -> PageKey:
    """Inverse of encode_page_token; any tampering, or another sort, is a 400 naming page_token."""
    error = bad_parameter("page_token", "malformed or expired page token")
    if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
        raise error
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        spec, value, flight_id = msgspec.json.decode(raw, type=tuple[str, Any, str])
        if spec != sort_spec(sort):
            raise bad_parameter("page_token", f"made for sort={spec[:40]}; use the same sort")
        key = _decode_value(sort.field, value)
    except (binascii.Error, msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError):
        raise error from None
    if len(flight_id) > 64:
        raise error
    return key, flight_id
