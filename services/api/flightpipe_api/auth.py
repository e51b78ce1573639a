"""API keys (stored only as SHA-256 hashes) and per-key rate limits.

FLIGHTPIPE_API_KEYS is a comma-separated list of `sha256:<64 hex digits>`, the SHA-256 of each
key (make one with `printf %s "$KEY" | sha256sum`). In the cloud the value comes from Secret
Manager. Empty: no key is asked for (local use; in the cloud Cloud Run's IAM check stays in front).
A plain key, an empty item (`",,,"`) or anything else is refused at start-up
(`flightpipe.settings.parse_api_keys`), so keys are never configured in the clear and a broken
secret never turns authentication off.

A client sends its key as `X-API-Key: <key>` or `Authorization: Bearer <key>`; X-API-Key wins,
because behind Cloud Run IAM the Authorization header carries the Google ID token.

Rate limits use `limits` (the engine of Flask-Limiter) with a moving window in process memory:
FLIGHTPIPE_API_RATE_LIMIT (e.g. `1200/minute`) per key and per instance, so N Cloud Run instances
allow up to N times that. Requests without keys configured are not rate limited.

Guessing is bounded too: every failed key check (an unknown key) counts against
FLIGHTPIPE_API_AUTH_FAILURE_LIMIT (default 20/minute) for the client's address; over it, the client
gets 429 with Retry-After and *no key is checked at all*, so it learns nothing until the window
moves on. The address is the TCP peer (REMOTE_ADDR): a header such as X-Forwarded-For is chosen by
the client and would let it reset its own count. Behind Cloud Run's front end the peer is Google's
proxy, so there the limit bounds the whole instance's failed checks (still bounding guessing; a
flood of bad keys then also delays good keys for up to a minute, never longer).
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Final

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from flightpipe.settings import ConfigError, parse_api_keys

MAX_KEY_LENGTH: Final = 256
DEFAULT_FAILURE_LIMIT: Final = "20/minute"


def parse_key_hashes(raw: str) -> frozenset[str]:
    """The hex digests of FLIGHTPIPE_API_KEYS; ConfigError on anything but sha256:<hex> items."""
    return parse_api_keys(raw)


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

    def __init__(
        self, hashes: frozenset[str], rate_limit: str, failure_limit: str = DEFAULT_FAILURE_LIMIT
    ) -> None:
        self.required = bool(hashes)
        self._hashes = hashes
        self._limit = _parse_limit("FLIGHTPIPE_API_RATE_LIMIT", rate_limit)
        self._failures = _parse_limit("FLIGHTPIPE_API_AUTH_FAILURE_LIMIT", failure_limit)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def _retry_after(self, item: RateLimitItem, key: str) -> int:
        reset = self._limiter.get_window_stats(item, key).reset_time
        return max(1, math.ceil(reset - time.time()))

    def check(
        self, x_api_key: str | None, authorization: str | None, client: str | None = None
    ) -> Verdict:
        """Allow, or say why not (401 no/unknown key, 429 over a limit)."""
        if not self.required:
            return Verdict(None)
        key = presented_key(x_api_key, authorization)
        if key is None:
            return Verdict(None, 401, "an API key is required (X-API-Key or Bearer)")
        failures = f"auth-failures:{client or 'unknown'}"
        # Checked before the key: while over the limit a guess tells the client nothing.
        if not self._limiter.test(self._failures, failures):
            return Verdict(
                None,
                429,
                f"too many invalid API keys from this client (limit {self._failures})",
                self._retry_after(self._failures, failures),
            )
        digest = hash_key(key) if len(key) <= MAX_KEY_LENGTH else ""
        # A set lookup on the digest leaks nothing useful: the client cannot steer the hash.
        if digest not in self._hashes:
            self._limiter.hit(self._failures, failures)
            return Verdict(None, 401, "the API key is not valid")
        key_id = digest[:12]
        if not self._limiter.hit(self._limit, key_id):
            retry = self._retry_after(self._limit, key_id)
            return Verdict(key_id, 429, f"rate limit of {self._limit} exceeded", retry)
        return Verdict(key_id)


def _parse_limit(name: str, text: str) -> RateLimitItem:
    try:
        return parse(text)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
