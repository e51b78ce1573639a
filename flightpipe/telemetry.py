"""Metrics and logs shared by the subscriber and the API.

Metrics are Prometheus collectors in two groups. The pipeline's (received, written, dead-lettered,
freshness, backlog...) live on the default registry, which the subscriber's `/metrics` serves. The
API's (HTTP requests and durations, result cache, warehouse queries) live on `API_REGISTRY`, which
is also registered into the default one. The API's `/metrics` serves `api_metrics_registry()`:
only `API_REGISTRY`, unless a subscriber runs in the same process (`flightpipe serve` calls
`share_pipeline_metrics()`). Why: a cloud API instance commits nothing, so its freshness gauge
would read 0 and every API instance would be one more series pulling the freshness SLO towards
"fresh".

Logs are JSON lines on stdout with `severity`, `message`, `time`, `logger`, every field a call site
passes as `extra={...}` and, when known, the trace and request id, which Cloud Logging reads as
structured logs (python-json-logger writes them).
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any, Final

import pythonjsonlogger.json
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

# The API's collectors; the default registry (the pipeline's) includes them too (one process).
API_REGISTRY: Final = CollectorRegistry(auto_describe=True)
_LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_HTTP_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

MESSAGES_RECEIVED: Final = Counter(
    "flightpipe_messages_received_total", "Messages pulled from the subscription."
)
MESSAGES_WRITTEN: Final = Counter(
    "flightpipe_messages_written_total",
    "Valid messages committed to the warehouse and acked (duplicates included).",
)
MESSAGES_DUPLICATE: Final = Counter(
    "flightpipe_messages_duplicate_total",
    "Messages whose event_id was already stored (redeliveries and re-publishes).",
)
MESSAGES_DEAD_LETTERED: Final = Counter(
    "flightpipe_messages_dead_lettered_total",
    "Messages sent to the dead-letter topic, by reason.",
    ["reason"],
)
MESSAGES_REDELIVERED: Final = Counter(
    "flightpipe_messages_redelivered_total",
    "Messages pulled with a delivery attempt above 1 (a lapsed lease, a nack or a crash).",
)
DELIVERY_ATTEMPT_MAX: Final = Gauge(
    "flightpipe_delivery_attempt_max",
    "The highest delivery attempt this process has pulled (max_delivery_attempts dead-letters).",
)
WRITE_FAILURES: Final = Counter(
    "flightpipe_warehouse_write_failures_total",
    "Batch writes that failed and were retried.",
)
BATCH_WRITE_SECONDS: Final = Histogram(
    "flightpipe_batch_write_seconds",
    "Time to commit one batch to the warehouse.",
    buckets=_LATENCY_BUCKETS,
)
BATCH_SIZE: Final = Histogram(
    "flightpipe_batch_size_messages",
    "Messages per pulled batch.",
    buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000),
)
END_TO_END_LATENCY: Final = Histogram(
    "flightpipe_end_to_end_latency_seconds",
    "From publish_time to the committed warehouse write (a sample of up to 100 per batch).",
    buckets=_LATENCY_BUCKETS,
)
DATA_FRESHNESS: Final = Gauge(
    "flightpipe_data_freshness_seconds",
    "Now minus the newest committed publish_time.",
)
LAST_COMMIT_PUBLISH_TIME: Final = Gauge(
    "flightpipe_last_committed_publish_time_seconds",
    "Unix time of the newest committed publish_time (freshness = time() - this).",
)
_last_commit_publish_time = 0.0


def record_commit(newest_publish_time: float) -> None:
    """Note the newest committed publish_time (Unix seconds); freshness is computed from it."""
    global _last_commit_publish_time  # noqa: PLW0603 - one process-wide watermark
    _last_commit_publish_time = max(_last_commit_publish_time, newest_publish_time)
    LAST_COMMIT_PUBLISH_TIME.set(_last_commit_publish_time)


# Computed at scrape time, so freshness keeps growing when commits stop (a stuck subscriber).
# Zero until the first commit of this process: there is no watermark to age yet.
DATA_FRESHNESS.set_function(
    lambda: max(0.0, time.time() - _last_commit_publish_time) if _last_commit_publish_time else 0.0
)

SUBSCRIPTION_BACKLOG: Final = Gauge(
    "flightpipe_subscription_backlog_messages",
    "Undelivered messages on the subscription (set by the subscriber).",
)
SUBSCRIPTION_OLDEST_UNACKED_AGE: Final = Gauge(
    "flightpipe_subscription_oldest_unacked_age_seconds",
    "Age of the oldest unacknowledged message on the subscription (set by the subscriber).",
)
WAREHOUSE_QUERY_SECONDS: Final = Histogram(
    "flightpipe_warehouse_query_seconds",
    "Time the warehouse took to answer one API query (errors and timeouts included).",
    ["adapter"],
    buckets=_HTTP_BUCKETS,
    registry=API_REGISTRY,
)
WAREHOUSE_BYTES_PROCESSED: Final = Counter(
    "flightpipe_warehouse_bytes_processed_total",
    "Bytes BigQuery processed for API queries: what on-demand pricing bills "
    "(rounded up to 10 MB a query by BigQuery).",
    registry=API_REGISTRY,
)
CACHE_LOOKUPS: Final = Counter(
    "flightpipe_api_cache_lookups_total",
    "API result-cache lookups; hit ratio = hit / (hit + miss).",
    ["result"],
    registry=API_REGISTRY,
)
HTTP_REQUESTS: Final = Counter(
    "flightpipe_http_requests_total",
    "HTTP requests served.",
    ["route", "status"],
    registry=API_REGISTRY,
)
HTTP_DURATION: Final = Histogram(
    "flightpipe_http_request_duration_seconds",
    "HTTP request duration.",
    ["route"],
    buckets=_HTTP_BUCKETS,
    registry=API_REGISTRY,
)

REGISTRY.register(API_REGISTRY)
Collector = Counter | Gauge | Histogram

# A labelled series exists only once `.labels()` is called; one that first appears at its first
# value hides that increase from rate() and leaves alerts and dashboards with no series at all, so
# every known label value is created at 0 up front (prometheus/client_python README, "Labels";
# https://prometheus.io/docs/practices/instrumentation/#avoid-missing-metrics).
# The dead-letter reason label is the text before the first ':' of the reasons the subscriber
# writes: contract.decode_event ("schema", "malformed json", "undecodable"),
# batches.validate_messages ("undecodable") and the worker's warehouse rejections ("warehouse").
DEAD_LETTER_REASONS: Final = ("schema", "malformed json", "undecodable", "warehouse")
CACHE_RESULTS: Final = ("hit", "miss")
for _reason in DEAD_LETTER_REASONS:
    MESSAGES_DEAD_LETTERED.labels(reason=_reason)
for _result in CACHE_RESULTS:
    CACHE_LOOKUPS.labels(result=_result)


def init_http_series(routes: Iterable[str], statuses: Iterable[int]) -> None:
    """Create every route's request counters (one per status) and duration histogram at 0.

    The API calls it with its routes once they are registered: its 5xx ratio and latency rules
    then read 0, not nothing, before the first request or error.
    """
    codes = [str(code) for code in statuses]
    for route in routes:
        HTTP_DURATION.labels(route=route)
        for code in codes:
            HTTP_REQUESTS.labels(route=route, status=code)


def exposed_name(collector: Collector, suffix: str = "") -> str:
    """The name `collector`'s series are exposed under, plus `suffix` (`_bucket`, `_sum`...).

    Everything that reads a series by name (the status page, the demo, the dashboards and alerts)
    takes it from here, so a collector's definition above is the name's one home. A counter's
    samples end in `_total` (prometheus_client strips it from the family name).
    """
    (family,) = collector.describe()
    return (f"{family.name}_total" if family.type == "counter" else family.name) + suffix


def family_name(collector: Collector) -> str:
    """The family name `collector` registers (a counter's without `_total`)."""
    (family,) = collector.describe()
    return str(family.name)


def metric_type(collector: Collector) -> str:
    """`counter`, `gauge` or `histogram`: the kind Managed Service for Prometheus names it by."""
    (family,) = collector.describe()
    return str(family.type)


_pipeline_in_process = False


def share_pipeline_metrics() -> None:
    """Let this process's API `/metrics` serve the pipeline's collectors too (one-process stack)."""
    global _pipeline_in_process  # noqa: PLW0603 - one process-wide switch
    _pipeline_in_process = True


def api_metrics_registry() -> CollectorRegistry:
    """What the API's `/metrics` serves: its own collectors, plus the pipeline's when shared."""
    return REGISTRY if _pipeline_in_process else API_REGISTRY


request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)
trace_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace", default=None)


class JsonFormatter(pythonjsonlogger.json.JsonFormatter):
    """One JSON object per line, in the shape Cloud Logging parses, keeping every `extra` field.

    python-json-logger writes each attribute a call site passes in `extra={...}` as a top-level
    field. Added here: the request id and the Cloud Logging trace of the context.
    """

    def __init__(self) -> None:
        super().__init__(
            ["levelname", "message", "name"],
            rename_fields={"levelname": "severity", "name": "logger", "exc_info": "exception"},
            timestamp="time",
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        """The library's fields, then the request id and trace when known."""
        super().add_fields(log_data, record, message_dict)
        if (request_id := request_id_var.get()) is not None:
            log_data["request_id"] = request_id
        if (trace := trace_var.get()) is not None:
            log_data["logging.googleapis.com/trace"] = trace


def configure_logging(level: str = "INFO") -> None:
    """Send JSON log lines to stdout (idempotent)."""
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        root.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Werkzeug's own access log duplicates ours.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
