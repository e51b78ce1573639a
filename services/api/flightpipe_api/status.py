"""A live status page for the local stack: `GET /status` (HTML) and `GET /status.json` (numbers).

The numbers come from this process's Prometheus registry, nothing else: a daemon thread (started
when the blueprint is first registered) takes a snapshot of the flightpipe counters, gauges and
histogram buckets every `SAMPLE_SECONDS` into a small ring buffer, so a page opened after the
data arrived shows the last minutes at once (each `/status.json` request also samples, at most
once per `MIN_SAMPLE_SECONDS`), and rates and latency quantiles are differences
between the newest snapshot and the oldest one inside `WINDOW_SECONDS`. Quantiles are estimated
from bucket counts by linear interpolation, as PromQL's `histogram_quantile` does
(https://prometheus.io/docs/prometheus/latest/querying/functions/#histogram_quantile). That one
function is written here: prometheus_client only records and exposes histograms (no query side),
PromQL runs in the Prometheus server, and no library in the lock estimates quantiles from buckets.

In `flightpipe serve` the subscriber and the API share one process, so the page shows the whole
pipeline. A cloud API instance only has its own HTTP metrics (and each server worker process its own
registry); there the Cloud Monitoring dashboard is the place to look, which the page says.
Probe, metrics and status routes are left out of the API numbers, as in the Prometheus rules'
SLI, so the page's own polling does not skew them. Responses are never cached.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from flask import Blueprint, Response, render_template
from prometheus_client import REGISTRY, CollectorRegistry

from flightpipe import telemetry
from flightpipe.telemetry import exposed_name
from flightpipe_api.json import json_response

log = logging.getLogger(__name__)
bp = Blueprint(
    "status",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/status/static",
)

WINDOW_SECONDS: Final = 60.0
MIN_SAMPLE_SECONDS: Final = 1.0
SAMPLE_SECONDS: Final = 3.0
HISTORY_LENGTH: Final = 300  # snapshots; one per SAMPLE_SECONDS: the last 15 minutes
REFRESH_MS: Final = 3000
NON_USER_ROUTES: Final = frozenset(
    {"/metrics", "/healthz", "/health", "/readyz", "/status", "/status.json"}
)
_NO_STORE: Final = {"Cache-Control": "no-store"}
# Same-origin only: the page must work offline and never call out.
_CSP: Final = "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"

_COUNTERS: Final = {
    exposed_name(telemetry.MESSAGES_RECEIVED): "received",
    exposed_name(telemetry.MESSAGES_WRITTEN): "written",
    exposed_name(telemetry.MESSAGES_DUPLICATE): "duplicate",
    exposed_name(telemetry.MESSAGES_DEAD_LETTERED): "dead_lettered",
    exposed_name(telemetry.WRITE_FAILURES): "write_failures",
}
_GAUGES: Final = {
    exposed_name(telemetry.SUBSCRIPTION_BACKLOG): "backlog",
    exposed_name(telemetry.SUBSCRIPTION_OLDEST_UNACKED_AGE): "oldest_unacked",
    exposed_name(telemetry.DATA_FRESHNESS): "freshness_gauge",
    exposed_name(telemetry.LAST_COMMIT_PUBLISH_TIME): "last_commit",
}
_HTTP_REQUESTS: Final = exposed_name(telemetry.HTTP_REQUESTS)
_HTTP_BUCKETS: Final = exposed_name(telemetry.HTTP_DURATION, "_bucket")
_E2E_BUCKETS: Final = exposed_name(telemetry.END_TO_END_LATENCY, "_bucket")


@dataclass
class Snapshot:
    """Summed flightpipe series at one instant."""

    at: float
    values: dict[str, float] = field(default_factory=dict)
    dead_by_reason: dict[str, float] = field(default_factory=dict)
    http_buckets: dict[float, float] = field(default_factory=dict)
    e2e_buckets: dict[float, float] = field(default_factory=dict)

    def get(self, key: str) -> float:
        return self.values.get(key, 0.0)


def take_snapshot(registry: CollectorRegistry, now: float) -> Snapshot:
    """Read the flightpipe series from `registry`, summed over their labels."""
    snap = Snapshot(at=now)
    for family in registry.collect():
        for s in family.samples:
            if s.name in _COUNTERS or s.name in _GAUGES:
                key = _COUNTERS.get(s.name) or _GAUGES[s.name]
                snap.values[key] = snap.values.get(key, 0.0) + s.value
                if key == "dead_lettered":
                    reason = s.labels.get("reason", "")
                    snap.dead_by_reason[reason] = snap.dead_by_reason.get(reason, 0.0) + s.value
            elif s.name == _HTTP_REQUESTS:
                if s.labels.get("route") in NON_USER_ROUTES:
                    continue
                snap.values["http"] = snap.get("http") + s.value
                if s.labels.get("status", "").startswith("5"):
                    snap.values["http_5xx"] = snap.get("http_5xx") + s.value
            elif s.name == _HTTP_BUCKETS:
                if s.labels.get("route") not in NON_USER_ROUTES:
                    _add_bucket(snap.http_buckets, s.labels["le"], s.value)
            elif s.name == _E2E_BUCKETS:
                _add_bucket(snap.e2e_buckets, s.labels["le"], s.value)
    return snap


def _add_bucket(buckets: dict[float, float], le: str, value: float) -> None:
    upper = float(le)
    buckets[upper] = buckets.get(upper, 0.0) + value


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile of cumulative `{upper bound: count}` buckets, or None with no data."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in ordered:
        if count >= rank:
            if math.isinf(upper):
                # Like PromQL: the +Inf bucket has no width, answer its lower bound.
                return lower
            if count == below:
                return upper
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def _delta_buckets(new: Mapping[float, float], old: Mapping[float, float]) -> dict[float, float]:
    return {le: count - old.get(le, 0.0) for le, count in new.items()}


def _rate(new: Snapshot, old: Snapshot | None, key: str) -> float | None:
    if old is None or new.at <= old.at:
        return None
    # max(): a counter only goes down if the process restarted, which a rate ignores.
    return max(new.get(key) - old.get(key), 0.0) / (new.at - old.at)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


class Sampler:
    """Snapshots in a ring buffer and the numbers derived from them (thread-safe)."""

    def __init__(self, registry: CollectorRegistry, window: float = WINDOW_SECONDS) -> None:
        self.registry = registry
        self.window = window
        self._snapshots: deque[Snapshot] = deque(maxlen=HISTORY_LENGTH)
        self._history: deque[dict[str, float | None]] = deque(maxlen=HISTORY_LENGTH)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _window_start(self, newest: Snapshot) -> Snapshot | None:
        for snap in self._snapshots:
            if snap is not newest and snap.at >= newest.at - self.window:
                return snap
        # Older than the window but the best there is (e.g. a page that polls slowly).
        return self._snapshots[-2] if len(self._snapshots) > 1 else None

    def _sample(self, now: float) -> Snapshot:
        """A fresh snapshot, kept in the ring (and the history) when one is due."""
        fresh = take_snapshot(self.registry, now)
        if not self._snapshots or now - self._snapshots[-1].at >= MIN_SAMPLE_SECONDS:
            self._snapshots.append(fresh)
            self._history.append(self._point(fresh))
        return fresh

    def sample(self, now: float | None = None) -> None:
        """Take a snapshot unless the last one is under MIN_SAMPLE_SECONDS old."""
        with self._lock:
            self._sample(time.time() if now is None else now)

    def start(self, interval: float = SAMPLE_SECONDS) -> None:
        """Sample every `interval` seconds on a daemon thread (once per process; idempotent)."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, args=(interval,), name="status-sampler", daemon=True
            )
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.sample()
            except Exception:  # one bad snapshot must not end the history
                log.exception("status sample failed")

    def status(self, now: float | None = None) -> dict[str, Any]:
        """The current numbers (a fresh snapshot) and the history for the charts, ending now."""
        now = time.time() if now is None else now
        with self._lock:
            fresh = self._sample(now)
            body = self._numbers(fresh, self._window_start(fresh), now)
            history = list(self._history)
            if self._snapshots[-1] is not fresh:  # the ring's newest is under a second old
                history.append(self._point(fresh))
            body["history"] = history
        return body

    def _latency(self, new: Snapshot, old: Snapshot | None) -> tuple[dict[str, float | None], str]:
        buckets, over = new.http_buckets, "since start"
        if old is not None:
            recent = _delta_buckets(new.http_buckets, old.http_buckets)
            if recent and max(recent.values()) > 0:
                buckets, over = recent, f"last {new.at - old.at:.0f} s"
        quantiles = {
            f"p{int(q * 100)}": _round(histogram_quantile(q, buckets), 6) for q in (0.5, 0.95, 0.99)
        }
        return quantiles, over

    def _point(self, new: Snapshot) -> dict[str, float | None]:
        old = self._window_start(new)
        latency, _ = self._latency(new, old)
        return {
            "t": new.at,
            "ingest_rate": _round(_rate(new, old, "received")),
            "backlog": new.get("backlog"),
            "freshness": _round(_freshness(new)),
            "dead_letter_rate": _round(_rate(new, old, "dead_lettered")),
            **latency,
        }

    def _numbers(self, new: Snapshot, old: Snapshot | None, now: float) -> dict[str, Any]:
        latency, over = self._latency(new, old)
        e2e = new.e2e_buckets
        if old is not None and max(_delta_buckets(e2e, old.e2e_buckets).values(), default=0) > 0:
            e2e = _delta_buckets(e2e, old.e2e_buckets)
        received = _rate(new, old, "received")
        dead = _rate(new, old, "dead_lettered")
        http = _rate(new, old, "http")
        errors = _rate(new, old, "http_5xx")
        return {
            "generated_at": now,
            "window_seconds": self.window,
            "refresh_ms": REFRESH_MS,
            "pipeline": {
                "messages_received_total": new.get("received"),
                "messages_written_total": new.get("written"),
                "messages_duplicate_total": new.get("duplicate"),
                "messages_dead_lettered_total": new.get("dead_lettered"),
                "dead_lettered_by_reason": new.dead_by_reason,
                "warehouse_write_failures_total": new.get("write_failures"),
                "ingest_rate_per_second": _round(received),
                "written_rate_per_second": _round(_rate(new, old, "written")),
                "dead_letter_rate_per_second": _round(dead),
                "dead_letter_ratio": _round(
                    dead / received if received and dead is not None else None
                ),
                "backlog_messages": new.get("backlog"),
                "oldest_unacked_age_seconds": new.get("oldest_unacked"),
                "freshness_seconds": _round(_freshness(new), 1),
                "end_to_end_latency_p95_seconds": _round(histogram_quantile(0.95, e2e), 6),
            },
            "api": {
                "requests_total": new.get("http"),
                "requests_5xx_total": new.get("http_5xx"),
                "request_rate_per_second": _round(http),
                "error_5xx_ratio": _round(errors / http if http and errors is not None else None),
                "latency_seconds": latency,
                "latency_over": over,
            },
        }


def _freshness(snap: Snapshot) -> float | None:
    # The commit timestamp ages by itself while the writer is stuck; the gauge only when set.
    if snap.get("last_commit") > 0:
        return max(snap.at - snap.get("last_commit"), 0.0)
    if snap.get("freshness_gauge") > 0:
        return snap.get("freshness_gauge")
    return None


_sampler = Sampler(REGISTRY)
bp.record_once(lambda _state: _sampler.start())


def _with_headers(response: Response, extra: Iterable[tuple[str, str]] = ()) -> Response:
    response.headers.update(_NO_STORE)
    for name, value in extra:
        response.headers[name] = value
    return response


@bp.get("/status")
def status_page() -> Response:
    """The HTML page; its script polls /status.json."""
    html = render_template("status.html", refresh_ms=REFRESH_MS, window=int(WINDOW_SECONDS))
    return _with_headers(Response(html, mimetype="text/html"), [("Content-Security-Policy", _CSP)])


@bp.get("/status.json")
def status_json() -> Response:
    """The numbers behind the page, from this process's Prometheus registry."""
    return _with_headers(json_response(_sampler.status()))
