"""Distributed tracing: OpenTelemetry set up from `Settings`, context carried in message attributes.

Contract:
- `configure_tracing(settings, service_name)` installs one SDK `TracerProvider` as the global one
  (first call wins; later calls return it). `Settings.trace_exporter` picks where spans go:
  "none" exports nothing (spans still get ids, so context propagates and logs correlate),
  "console" writes spans to stderr (stdout is kept for JSON logs), "gcp" sends them to Cloud
  Trace (`opentelemetry-exporter-gcp-trace`, imported only then). Sampling follows the SDK's
  standard `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` variables (default: parent-based,
  always on).
- Trace context crosses the broker as the W3C `traceparent` (and `tracestate`) message attribute:
  the publisher calls `inject_attributes`, the subscriber `batch_span` (which reads them with
  `span_context_of`).
- A subscriber batch holds messages from many traces, and a span has one parent. The batch-write
  span (`batch_span`) is therefore a new root with one *link* per distinct message context, as the
  OpenTelemetry messaging conventions prescribe for batch processing: each producer's trace shows
  the write that stored its event, and the write is not filed under one arbitrary message's
  trace. The SDK keeps at most `SpanLimits.max_links` (128 by default) links; the batch size is
  recorded as an attribute so a truncated link list is visible.
- `cloud_trace_field(project)` gives the value Cloud Logging reads from
  `logging.googleapis.com/trace` (`projects/<project>/traces/<trace-id>`); the span helpers set
  `telemetry.trace_var` to it while their span is current, so JSON logs written inside carry it.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from flightpipe.settings import ConfigError, Settings
from flightpipe.telemetry import trace_var

TRACER_NAME: Final = "flightpipe"
# Only W3C trace context goes into message attributes: baggage could carry arbitrary user data
# into a durable topic, and Pub/Sub attributes are limited in number and size.
_PROPAGATOR: Final = TraceContextTextMapPropagator()
_lock = threading.Lock()
_configured: dict[str, TracerProvider] = {}


def _exporter(settings: Settings) -> SpanExporter | None:
    if settings.trace_exporter == "none":
        return None
    if settings.trace_exporter == "console":
        return ConsoleSpanExporter(out=sys.stderr)
    if not settings.google_cloud_project:
        raise ConfigError("FLIGHTPIPE_TRACE_EXPORTER=gcp needs GOOGLE_CLOUD_PROJECT")
    # Lazy: the Cloud Trace client pulls in gRPC and google-auth, which local runs do not need.
    from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter

    # The exporter's __init__ has no annotations.
    exporter: SpanExporter = CloudTraceSpanExporter(  # type: ignore[no-untyped-call]
        project_id=settings.google_cloud_project
    )
    return exporter


def build_tracer_provider(settings: Settings, service_name: str) -> TracerProvider:
    """A provider for `service_name` exporting as `settings.trace_exporter` says (not installed)."""
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    exporter = _exporter(settings)
    if exporter is not None:
        # Batching keeps export off the request and write paths.
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def configure_tracing(settings: Settings, service_name: str) -> TracerProvider:
    """Install the global tracer provider once per process and return it."""
    with _lock:
        if "provider" not in _configured:
            provider = build_tracer_provider(settings, service_name)
            trace.set_tracer_provider(provider)
            _configured["provider"] = provider
        return _configured["provider"]


def get_tracer() -> trace.Tracer:
    """The flightpipe tracer from the global provider (a no-op one before configuration)."""
    return trace.get_tracer(TRACER_NAME)


def inject_attributes(attrs: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `attrs` plus the current span's W3C `traceparent` (unchanged if no span)."""
    carrier = dict(attrs or {})
    _PROPAGATOR.inject(carrier)
    return carrier


def extract_context(attributes: Mapping[str, str] | None) -> otel_context.Context:
    """The trace context carried by message attributes or HTTP headers (empty if none)."""
    return _PROPAGATOR.extract(dict(attributes or {}))


def span_context_of(attributes: Mapping[str, str] | None) -> trace.SpanContext | None:
    """The remote span context in `attributes`, or None when they carry no valid one."""
    span_context = trace.get_current_span(extract_context(attributes)).get_span_context()
    return span_context if span_context.is_valid else None


def cloud_trace_field(project: str | None) -> str | None:
    """`projects/<project>/traces/<id>` for the current span; the bare id without a project."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    trace_id = trace.format_trace_id(span_context.trace_id)
    # Locally there is no project; the bare id still lets one grep logs for a trace.
    return f"projects/{project}/traces/{trace_id}" if project else trace_id


@contextlib.contextmanager
def _logs_follow_span(project: str | None) -> Iterator[None]:
    token = trace_var.set(cloud_trace_field(project))
    try:
        yield
    finally:
        trace_var.reset(token)


@contextlib.contextmanager
def batch_span(
    name: str,
    messages_attributes: Iterable[Mapping[str, str] | None],
    *,
    project: str | None = None,
    tracer: trace.Tracer | None = None,
) -> Iterator[trace.Span]:
    """A span for work on many messages, linked to each distinct message context (see module)."""
    tracer = tracer or get_tracer()
    links: list[trace.Link] = []
    seen: set[tuple[int, int]] = set()
    # On the hot path a batch holds thousands of messages, mostly from a few traces (a publisher
    # injects one context per publish call): extract once per distinct traceparent, not per message.
    carriers: dict[str, Mapping[str, str]] = {}
    count = 0
    for attributes in messages_attributes:
        count += 1
        if attributes and (parent := attributes.get("traceparent")) and parent not in carriers:
            carriers[parent] = attributes
    for attributes in carriers.values():
        span_context = span_context_of(attributes)
        if span_context is None:
            continue
        key = (span_context.trace_id, span_context.span_id)
        if key not in seen:
            seen.add(key)
            links.append(trace.Link(span_context))
    # A fresh root: the batch has no single parent, and the ambient context (the pull loop's)
    # is not the cause of the write.
    with (
        tracer.start_as_current_span(
            name,
            context=otel_context.Context(),
            kind=trace.SpanKind.CONSUMER,
            links=links,
            attributes={"messaging.batch.message_count": count},
        ) as span,
        _logs_follow_span(project),
    ):
        yield span
