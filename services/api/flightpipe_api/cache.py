"""In-process result cache of GET responses, invalidated when the ingest watermark moves.

Entries are whole encoded responses (body, content type, ETag) keyed by path, query string and
Accept header, so a hit is served by `gate.Gate` without Flask and without the warehouse. An
entry is dropped when:
* its TTL (FLIGHTPIPE_API_CACHE_TTL_SECONDS) has passed, or
* the warehouse's ingest watermark (`newest_publish_time`) differs from the one current when the
  entry was stored. The watermark is read at most once per `check_interval` seconds, by the one
  request that finds it stale (others keep going meanwhile): a BigQuery query costs hundreds of
  milliseconds and is billed, so it must not run per request.

The cache is per process (per Cloud Run instance); bounded by `max_entries` and `max_body_bytes`.
Only complete 200 responses are stored; streamed exports never are.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Final

from flightpipe import telemetry
from flightpipe.warehouse import Warehouse, WarehouseError

log = logging.getLogger(__name__)
MAX_BODY_BYTES: Final = 2_000_000
MAX_ENTRIES: Final = 4096


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached response."""

    body: bytes
    content_type: str
    etag: str  # the ETag header as sent (quoted)
    route: str
    generation: int
    expires: float
    # Other encodings of `body`, made on first request (compression.representation).
    encoded: dict[str, bytes] = field(default_factory=dict, compare=False)


def etag_of(body: bytes) -> str:
    """A strong entity tag (unquoted, for `Response.set_etag`): a hash of the exact bytes sent."""
    return hashlib.blake2b(body, digest_size=12).hexdigest()


class ResultCache:
    """A dict of entries plus the watermark generation they belong to."""

    def __init__(
        self,
        warehouse: Warehouse,
        ttl: float,
        *,
        check_interval: float = 1.0,
        max_entries: int = MAX_ENTRIES,
        max_body_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self.enabled = ttl > 0
        self._warehouse = warehouse
        self._ttl = ttl
        self._interval = check_interval
        self._max_entries = max_entries
        self._max_body = max_body_bytes
        self._entries: dict[str, Entry] = {}
        self._generation = 0
        self._watermark: object = None
        self._next_check = 0.0
        self._checking = threading.Lock()

    def _current_generation(self, now: float) -> int:
        if now >= self._next_check and self._checking.acquire(blocking=False):
            try:
                self._next_check = now + self._interval
                watermark = self._warehouse.newest_publish_time()
                if watermark != self._watermark:
                    self._watermark = watermark
                    self._generation += 1
                    self._entries = {}  # every entry belongs to an older generation now
            except WarehouseError as exc:
                # Keep serving what we have until the TTL: the warehouse's trouble is not news.
                log.warning("cannot read the ingest watermark: %s", exc)
            finally:
                self._checking.release()
        return self._generation

    def get(self, key: str) -> Entry | None:
        """The live entry for `key`, or None."""
        if not self.enabled:
            return None
        now = time.monotonic()
        generation = self._current_generation(now)
        entry = self._entries.get(key)
        if entry is None or entry.generation != generation or entry.expires <= now:
            telemetry.CACHE_LOOKUPS.labels(result="miss").inc()
            return None
        telemetry.CACHE_LOOKUPS.labels(result="hit").inc()
        return entry

    def generation(self) -> int:
        """The generation to stamp on a result about to be computed (read before the query)."""
        return self._current_generation(time.monotonic()) if self.enabled else 0

    def put(self, key: str, entry: Entry) -> None:
        """Store `entry` unless it is too big, disabled, or already outdated."""
        if not self.enabled or len(entry.body) > self._max_body:
            return
        if entry.generation != self._generation:
            return
        if len(self._entries) >= self._max_entries:
            # Cheap bound: drop the oldest insertion (dicts keep insertion order).
            with contextlib.suppress(StopIteration, RuntimeError):  # changed by another thread
                self._entries.pop(next(iter(self._entries)), None)
        self._entries[key] = entry

    def new_entry(
        self, body: bytes, content_type: str, route: str, generation: int, etag: str
    ) -> Entry:
        """An entry expiring `ttl` seconds from now."""
        return Entry(body, content_type, etag, route, generation, time.monotonic() + self._ttl)
