"""API keys (stored only as SHA-256 hashes) and per-key rate limits.

FLIGHTPIPE_API_KEYS is a comma-separated list of `sha256:<64 hex digits>`, the SHA-256 of each
key (make one with `printf %s "$KEY" | sha256sum`). In the cloud the value comes from Secret
Manager. Empty: no key is asked for (local use; in the cloud Cloud Run's IAM check stays in front).
A plain key in the list is refused at start-up, so keys are never configured in the clear.

A client sends its key as `X-API-Key: <key>` or `Authorization: Bearer <key>`; X-API-Key wins,
because behind Cloud Run IAM the Authorization header carries the Google ID token.

Rate limits use `limits` (the engine of Flask-Limiter) with a moving window in process memory:
FLIGHTPIPE_API_RATE_LIMIT (e.g. `1200/minute`) per key and per instance, so N Cloud Run instances
allow up to N times that. Requests without keys configured are not rate limited.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from dataclasses import dataclass
from typing import Final

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from flightpipe.settings import ConfigError

_HASH: Final = re.compile(r"sha256:([0-9a-f]{64})")
MAX_KEY_LENGTH: Final = 256


def parse_key_hashes(raw: str) -> frozenset[str]:
    """The hex digests of FLIGHTPIPE_API_KEYS; ConfigError on anything but sha256:<hex>."""
    hashes: set[str] = set()
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        match = _HASH.fullmatch(item.lower())
        if match is None:
            raise ConfigError(
                "FLIGHTPIPE_API_KEYS must list sha256:<64 hex digits> hashes, never plain keys"
            )
        hashes.add(match.group(1))
    return frozenset(hashes)


def hash_key(key: str) -> str:
    """The hex SHA-256 of a presented key."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def presented_key(x_api_key: str | None, authorization: str | None) -> str | None:
    """The key a request presents, if any (X-API-Key first, then a Bearer token)."""
    if x_api_key:
        return x_api_key
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of the gate for one request: the key id, or an error to return."""

    key_id: str | None
    status: int = 200
    message: str = ""
    retry_after: int = 0


class KeyGate:
    """Checks a presented key against the configured hashes, then its rate limit."""

    def __init__(self, hashes: frozenset[str], rate_limit: str) -> None:
        self.required = bool(hashes)
        self._hashes = hashes
        try:
            self._limit: RateLimitItem = parse(rate_limit)
        except ValueError as exc:
            raise ConfigError(f"FLIGHTPIPE_API_RATE_LIMIT: {exc}") from None
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def check(self, x_api_key: str | None, authorization: str | None) -> Verdict:
        """Allow, or say why not (401 no/unknown key, 429 over the limit)."""
        if not self.required:
            return Verdict(None)
        key = presented_key(x_api_key, authorization)
        if key is None:
            return Verdict(None, 401, "an API key is required (X-API-Key or Bearer)")
        digest = hash_key(key) if len(key) <= MAX_KEY_LENGTH else ""
        # A set lookup on the digest leaks nothing useful: the client cannot steer the hash.
        if digest not in self._hashes:
            return Verdict(None, 401, "the API key is not valid")
        key_id = digest[:12]
        if not self._limiter.hit(self._limit, key_id):
            reset = self._limiter.get_window_stats(self._limit, key_id).reset_time
            retry = max(1, math.ceil(reset - time.time()))
            return Verdict(key_id, 429, f"rate limit of {self._limit} exceeded", retry)
        return Verdict(key_id)
