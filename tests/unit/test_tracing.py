"""Tracing: context through message attributes, batch links, exporter choice, log field, and
the API's server spans.

Spans are recorded by the SDK's in-memory exporter on a provider of the test's own; the global
provider is only ever patched for one test, so other tests see OpenTelemetry's defaults.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from flightpipe_api import create_app
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pytest_mock import MockerFixture

from flightpipe import tracing
from flightpipe.settings import ConfigError, load_settings
from flightpipe.telemetry import JsonFormatter, trace_var
from flightpipe.warehouse.duckdb import DuckDBWarehouse


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> Iterator[trace.Tracer]:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test")
    provider.shutdown()


def _finished(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    (span,) = [s for s in exporter.get_finished_spans() if s.name == name]
    return span


def test_inject_then_extract_continues_the_publishers_trace(
    tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("publish") as publish:
        attrs = tracing.inject_attributes({"origin": "EWR"})
    assert attrs["origin"] == "EWR"
    assert attrs["traceparent"].startswith("00-")

    with tracer.start_as_current_span(
        "store", context=tracing.extract_context(attrs), kind=trace.SpanKind.CONSUMER
    ):
        pass

    store = _finished(exporter, "store")
    assert store.context.trace_id == publish.get_span_context().trace_id
    assert store.parent is not None
    assert store.parent.span_id == publish.get_span_context().span_id
    assert store.kind is trace.SpanKind.CONSUMER


def test_inject_without_a_current_span_adds_nothing_and_leaves_the_input_alone() -> None:
    attrs = {"origin": "JFK"}
    assert tracing.inject_attributes(attrs) == {"origin": "JFK"}
    assert tracing.inject_attributes(None) == {}
    assert tracing.span_context_of(attrs) is None


def test_batch_span_links_every_distinct_message_context_and_has_no_parent(
    tracer: trace.Tracer, exporter: InMemorySpanExporter
) -> None:
    with tracer.start_as_current_span("publish-a"):
        a = tracing.inject_attributes()
    with tracer.start_as_current_span("publish-b"):
        b = tracing.inject_attributes()
    # A redelivered copy of `a`, and a message from a producer that does not trace.
    batch = [a, b, dict(a), {"origin": "LGA"}, None]

    with (
        tracer.start_as_current_span("pull-loop"),
        tracing.batch_span("write", batch, tracer=tracer),
    ):
        pass

    write = _finished(exporter, "write")
    linked = {(link.context.trace_id, link.context.span_id) for link in write.links}
    expected = {
        (s.context.trace_id, s.context.span_id)
        for s in exporter.get_finished_spans()
        if s.name in {"publish-a", "publish-b"}
    }
    assert linked == expected
    assert len(write.links) == 2
    assert write.parent is None
    assert write.context.trace_id not in {t for t, _ in expected}
    assert write.attributes is not None
    assert write.attributes["messaging.batch.message_count"] == 5


def test_batch_span_sets_the_cloud_logging_trace_field_on_json_logs(
    tracer: trace.Tracer,
) -> None:
    with tracer.start_as_current_span("publish"):
        attrs = tracing.inject_attributes()

    with tracing.batch_span("store", [attrs], project="demo-project", tracer=tracer) as span:
        trace_id = trace.format_trace_id(span.get_span_context().trace_id)
        assert (
            tracing.cloud_trace_field("demo-project") == f"projects/demo-project/traces/{trace_id}"
        )
        record = logging.LogRecord("t", logging.INFO, __file__, 1, "stored", None, None)
        entry = json.loads(JsonFormatter().format(record))
    assert entry["logging.googleapis.com/trace"] == f"projects/demo-project/traces/{trace_id}"
    assert trace_var.get() is None


def test_cloud_trace_field_is_the_bare_id_without_a_project_and_none_without_a_span(
    tracer: trace.Tracer,
) -> None:
    assert tracing.cloud_trace_field("demo-project") is None
    with tracer.start_as_current_span("s") as span:
        assert tracing.cloud_trace_field(None) == trace.format_trace_id(
            span.get_span_context().trace_id
        )


def test_exporter_none_records_ids_but_installs_no_exporter(
    mocker: MockerFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    cloud = mocker.patch("opentelemetry.exporter.cloud_trace.CloudTraceSpanExporter")
    batch_processor = mocker.spy(tracing, "BatchSpanProcessor")
    provider = tracing.build_tracer_provider(load_settings({}), "flightpipe-test")

    with provider.get_tracer("t").start_as_current_span("quiet") as span:
        assert span.get_span_context().is_valid  # ids still exist for propagation and logs
    provider.force_flush()
    provider.shutdown()

    batch_processor.assert_not_called()
    cloud.assert_not_called()
    assert capsys.readouterr() == ("", "")


def test_exporter_console_writes_finished_spans_to_stderr_not_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = load_settings({"FLIGHTPIPE_TRACE_EXPORTER": "console"})
    provider = tracing.build_tracer_provider(settings, "flightpipe-test")
    with provider.get_tracer("t").start_as_current_span("visible"):
        pass
    provider.force_flush()
    provider.shutdown()

    out, err = capsys.readouterr()
    assert out == ""
    assert '"name": "visible"' in err
    assert '"service.name": "flightpipe-test"' in err


def test_exporter_gcp_sends_to_cloud_trace_for_the_configured_project(
    mocker: MockerFixture,
) -> None:
    cloud = mocker.patch("opentelemetry.exporter.cloud_trace.CloudTraceSpanExporter")
    settings = load_settings(
        {"FLIGHTPIPE_TRACE_EXPORTER": "gcp", "GOOGLE_CLOUD_PROJECT": "demo-project"}
    )
    provider = tracing.build_tracer_provider(settings, "flightpipe-api")
    provider.shutdown()
    cloud.assert_called_once_with(project_id="demo-project")


def test_exporter_gcp_without_a_project_is_a_config_error() -> None:
    settings = load_settings({"FLIGHTPIPE_TRACE_EXPORTER": "gcp"})
    with pytest.raises(ConfigError, match="GOOGLE_CLOUD_PROJECT"):
        tracing.build_tracer_provider(settings, "flightpipe-api")


def test_configure_tracing_installs_one_global_provider_per_process(
    mocker: MockerFixture,
) -> None:
    mocker.patch.dict(tracing._configured, clear=True)
    install = mocker.patch("opentelemetry.trace.set_tracer_provider")
    settings = load_settings({})

    first = tracing.configure_tracing(settings, "flightpipe-api")
    second = tracing.configure_tracing(settings, "flightpipe-subscriber")

    assert first is second
    install.assert_called_once_with(first)


def test_the_api_makes_one_server_span_per_request_named_by_route_continuing_the_caller(
    exporter: InMemorySpanExporter, mocker: MockerFixture, duckdb_warehouse: DuckDBWarehouse
) -> None:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    mocker.patch("opentelemetry.trace._TRACER_PROVIDER", provider)
    settings = load_settings({})
    create_app(settings, warehouse=duckdb_warehouse)  # an earlier app in the same process
    client = create_app(settings, warehouse=duckdb_warehouse).test_client()
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

    client.get(
        "/v1/flights/2013-01-01-UA1545-EWR",
        headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
    )
    for probe in ("/healthz", "/readyz", "/metrics?x=1"):  # polled all day: no spans
        client.get(probe)
    client.get("/v1/flights?carrier=UA")  # no traceparent: a new trace
    client.get("/wp-login.php")  # no route: one span name for every such path

    lookup, listing, unmatched = exporter.get_finished_spans()
    assert (lookup.name, listing.name) == ("GET /v1/flights/<flight_id>", "GET /v1/flights")
    assert unmatched.name == "GET unmatched"
    assert lookup.kind is listing.kind is trace.SpanKind.SERVER
    assert trace.format_trace_id(lookup.context.trace_id) == trace_id
    assert lookup.parent is not None and lookup.parent.is_remote
    assert trace.format_span_id(lookup.parent.span_id) == parent_id
    assert listing.parent is None and listing.context.trace_id != lookup.context.trace_id
    assert lookup.attributes is not None and listing.attributes is not None
    assert (lookup.attributes["http.status_code"], listing.attributes["http.status_code"]) == (
        404,
        200,
    )
    provider.shutdown()
