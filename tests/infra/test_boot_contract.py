"""Program↔service boundary: each Cloud Run container boots with exactly what the program declares.

For every stack and ingest mode (the `graph` fixture), each Cloud Run resource's application
container is taken as `tests.infra.boot.declared` resolves it (env, secret payloads as the program
creates them, PORT as Cloud Run sets it, probes, scrape target) and the service's own start-up
path runs with exactly that environment:
* the API: `load_settings()`, the tracer provider, `create_app` with a real DuckDB warehouse
  standing in for BigQuery (no emulator exists), served by a real HTTP server; its startup and
  liveness probe paths answer 200, the probes and the collector target the port the API binds,
  its /metrics carries no pipeline series, and the plain key the program stores for the
  post-deploy test opens /v1 while a request without it is refused;
* the subscriber: `load_settings()`, the tracer provider, the Pub/Sub and BigQuery clients
  (constructed, not called: no cloud here), the `Subscriber` and its health server, whose
  /healthz and /metrics answer on the port the collector scrapes.
A value that would stop a service (a malformed setting, a plain key where a hash belongs, a probe
on another port or path) fails here. What cannot run here: the first RPC to Pub/Sub and BigQuery.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from werkzeug.serving import make_server

from flightpipe import tracing
from flightpipe.composition import make_broker, make_warehouse
from flightpipe.settings import ConfigError, Settings, load_settings
from flightpipe.warehouse import Warehouse
from flightpipe.warehouse.duckdb import DuckDBWarehouse
from tests.fakes import FakeBroker
from tests.infra.boot import Declared, declared, exact_environ, stand_in_credentials
from tests.infra.program import STACKS, Graph, graph_for

PIPELINE_SERIES = ("flightpipe_data_freshness_seconds", "flightpipe_messages_received_total")


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback only
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextmanager
def _api(
    d: Declared, tmp_path: Path, bigquery_url: str | None = None
) -> Iterator[tuple[str, Settings]]:
    """Boot the API as its image does (flightpipe_api.wsgi), with `d.env` as the whole env.

    The warehouse is DuckDB, or with `bigquery_url` the BigQuery adapter the settings describe,
    its client sent to that endpoint instead of Google's.
    """
    from flightpipe_api import create_app

    warehouse: Warehouse = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    with exact_environ(d.env, stand_in_credentials(tmp_path)):
        settings = load_settings()
        tracing.build_tracer_provider(settings, "flightpipe-api").shutdown()
        if bigquery_url is not None:
            warehouse.close()
            warehouse = _bigquery_at(settings, bigquery_url)
        app = create_app(settings, warehouse=warehouse)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", settings
    finally:
        server.shutdown()
        thread.join(10)
        warehouse.close()


def _bigquery_at(settings: Settings, url: str) -> Warehouse:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    from flightpipe.warehouse.bigquery import BigQueryWarehouse

    assert settings.warehouse == "bigquery" and settings.google_cloud_project
    client = bigquery.Client(
        project=settings.google_cloud_project,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=url),
    )
    return BigQueryWarehouse(
        project=settings.google_cloud_project,
        dataset=settings.dataset,
        location=settings.bigquery_location,
        query_timeout=settings.query_timeout_seconds,
        client=client,
    )


class _DenyingBigQuery(BaseHTTPRequestHandler):
    """BigQuery to an account whose grant has not propagated yet: 403 `accessDenied` to all.

    The body is BigQuery's error object, `reason` as its ErrorProto gives it
    (https://cloud.google.com/bigquery/docs/error-messages: accessDenied, HTTP 403); the message
    is the one jobs.query gives a caller without bigquery.jobs.create.
    """

    requests: ClassVar[list[str]] = []

    def _deny(self) -> None:
        type(self).requests.append(f"{self.command} {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        project = self.path.split("/projects/")[-1].split("/")[0]
        message = (
            f"Access Denied: Project {project}: User does not have bigquery.jobs.create "
            f"permission in project {project}."
        )
        body = json.dumps(
            {
                "error": {
                    "code": 403,
                    "message": message,
                    "errors": [{"message": message, "domain": "global", "reason": "accessDenied"}],
                    "status": "PERMISSION_DENIED",
                }
            }
        ).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _deny  # noqa: N815 - http.server's handler names

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def _denying_bigquery() -> Iterator[str]:
    _DenyingBigQuery.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DenyingBigQuery)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)


def _apis(graph: Graph) -> list[Declared]:
    found = [d for d in declared(graph) if d.kind == "service"]
    assert [d.name for d in found] == ["flightpipe-api"]
    return found


def _plain_e2e_key(graph: Graph) -> str:
    from tests.infra.boot import _secret_payload

    return _secret_payload(
        graph, {"secret": graph.exports["e2e_api_key_secret"], "version": "latest"}
    )


def test_every_cloud_run_resource_has_one_application_container(graph: Graph) -> None:
    kinds = sorted(d.kind for d in declared(graph))
    subscriber = graph.exports["ingest_mode"] == "subscriber"
    assert kinds == (["service", "worker-pool"] if subscriber else ["service"])


def test_api_boots_with_the_declared_env_and_answers_its_probes(
    graph: Graph, tmp_path: Path
) -> None:
    for d in _apis(graph):
        assert d.command == () and d.args == ()  # the image's CMD: python -m flightpipe_api
        with _api(d, tmp_path) as (base, settings):
            assert settings.port == d.container_port  # Granian binds PORT
            assert set(d.probes) == {"startupProbe", "livenessProbe"}
            for kind, (path, port) in d.probes.items():
                assert port == settings.port, (
                    f"{kind} probes port {port}, the API binds {settings.port}"
                )
                status, body = _get(base + path)
                assert status == 200, f"{kind} {path}: {status} {body[:200]!r}"


def test_a_new_revision_outlasts_iam_propagation_instead_of_failing_its_startup_probe(
    graph: Graph, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first revision starts seconds after its grants: BigQuery still denies its account.

    Cloud Run counts an HTTP startup probe answer from 200 to 399 as a success
    (https://cloud.google.com/run/docs/configuring/healthchecks); a failed startup stops the
    container and fails the revision, so `pulumi up` with it. While IAM may still be applying
    the grants the API must look started; after that a denial is a real outage again.
    """
    from flightpipe_api import health

    for d in _apis(graph):
        path, _ = d.probes["startupProbe"]
        with _denying_bigquery() as url, _api(d, tmp_path, bigquery_url=url) as (base, _):
            status, body = _get(base + path)
            assert any("/queries" in r or "/jobs" in r for r in _DenyingBigQuery.requests)
            assert 200 <= status < 400, f"startup probe {path}: {status} {body[:300]!r}"
            monkeypatch.setattr(health, "IAM_PROPAGATION_GRACE_SECONDS", 0.0)
            status, body = _get(base + path)
            assert status == 503, body[:300]


def test_api_is_scraped_where_it_serves_metrics_and_exports_no_pipeline_series(
    graph: Graph, tmp_path: Path
) -> None:
    for d in _apis(graph):
        assert d.scrape is not None, "the API has no collector"
        host, port, path = d.scrape
        with _api(d, tmp_path) as (base, settings):
            assert (host, port) == ("127.0.0.1", settings.port)
            status, body = _get(base + path)
            assert status == 200
            text = body.decode()
            assert "flightpipe_http_requests_total" in text
            for series in PIPELINE_SERIES:  # freshness 0 from every API would dilute the SLO
                assert series not in text, series


def test_the_plain_e2e_key_opens_the_api_and_no_key_is_refused(
    graph: Graph, tmp_path: Path
) -> None:
    key = _plain_e2e_key(graph)
    for d in _apis(graph):
        assert key not in d.env.values(), "the plain key must not reach the service"
        with _api(d, tmp_path) as (base, _):
            assert _get(base + "/v1/flights?limit=1")[0] == 401
            status, body = _get(base + "/v1/flights?limit=1", {"X-API-Key": key})
            assert status == 200, body[:300]


def test_a_plain_key_in_the_mounted_secret_would_stop_the_api(graph: Graph, tmp_path: Path) -> None:
    # What the program mounted before the fix: the key itself. The check above must catch it.
    (d,) = _apis(graph)
    broken = replace(d, env={**d.env, "FLIGHTPIPE_API_KEYS": _plain_e2e_key(graph)})
    with pytest.raises(ConfigError, match="sha256"), _api(broken, tmp_path):
        pass


def test_subscriber_boots_with_the_declared_env_and_serves_health_and_metrics(
    graph: Graph, tmp_path: Path
) -> None:
    from flightpipe_subscriber import Subscriber
    from flightpipe_subscriber.health import start_health_server

    pools = [d for d in declared(graph) if d.kind == "worker-pool"]
    if graph.exports["ingest_mode"] != "subscriber":
        assert not pools
        return
    (d,) = pools
    assert d.command == () and d.args == ()  # the image's CMD: python -m flightpipe_subscriber
    assert d.scrape is not None, "the subscriber has no collector"
    with exact_environ(d.env, stand_in_credentials(tmp_path)):
        settings = load_settings()
        tracing.build_tracer_provider(settings, "flightpipe-subscriber").shutdown()
        # The cloud adapters' clients are built as __main__ builds them; only RPCs are missing.
        broker = make_broker(settings)
        warehouse = make_warehouse(settings, serves_queries=False)
    host, port, path = d.scrape
    assert (host, port) == ("127.0.0.1", settings.port), "the collector scrapes another port"
    local = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    subscriber = Subscriber(FakeBroker(), local, settings)
    server = start_health_server(0, subscriber, host="127.0.0.1")
    try:
        base = f"http://127.0.0.1:{server.server_port}"
        assert _get(base + "/healthz")[0] == 200
        status, body = _get(base + path)
        assert status == 200
        assert all(series in body.decode() for series in PIPELINE_SERIES)
    finally:
        server.shutdown()
        local.close()
        warehouse.close()
        broker.close()


@pytest.mark.parametrize("stack", STACKS)
def test_the_subscriber_names_its_instance_where_the_collector_reads_it(
    stack: str, tmp_path: Path
) -> None:
    """On a worker pool only the app can tell its instance apart (components/collector.py).

    The collector takes `instance` from the `service_instance_id` label of the app's
    `target_info`, which must hold an id of this process: two instances, two series.
    """
    from components import collector
    from flightpipe_subscriber import Subscriber
    from flightpipe_subscriber.health import start_health_server
    from prometheus_client.parser import text_string_to_metric_families

    # The worker pool exists in the `subscriber` ingest mode only.
    (d,) = [d for d in declared(graph_for(stack, "subscriber")) if d.kind == "worker-pool"]
    with exact_environ(d.env, stand_in_credentials(tmp_path)):
        settings = load_settings()
    local = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    server = start_health_server(0, Subscriber(FakeBroker(), local, settings), host="127.0.0.1")
    try:
        _, body = _get(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
        local.close()
    ids = [
        sample.labels.get(collector.APP_INSTANCE_ATTRIBUTE)
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
        if sample.name == "target_info"
    ]
    assert len(ids) == 1 and ids[0], ids
