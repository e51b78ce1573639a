"""A tiny HTTP server for the subscriber: `/healthz` for probes and `/metrics` for Prometheus.

Cloud Run needs the container to listen on `PORT`; the same port serves the scrape endpoint.

`/healthz` (liveness) answers 503 once a thread of the subscriber died or it is stopping: a
restart is the cure. `/readyz` also answers 503 while the warehouse keeps failing writes or the
broker keeps failing pulls, naming the error: the process is alive and keeps every lease, and
restarting it would not help, so a liveness probe must not see an outage. Both bodies say why.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Protocol
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import msgspec
from prometheus_client import Info, make_wsgi_app

_metrics_app = make_wsgi_app()
# Tells this instance's series from its siblings': on a worker pool the collector finds no
# instance id of its own and reads `target_info{service_instance_id}` (infra/components/
# collector.py; OpenTelemetry's Prometheus compatibility spec maps target_info to resource
# attributes). A restarted process is a new instance, so a fresh id per process.
Info("target", "This subscriber process").info({"service_instance_id": uuid.uuid4().hex})


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would flood the logs."""


class Status(Protocol):
    """What the probes read (the Subscriber)."""

    failure: str | None
    warehouse_error: str | None
    broker_error: str | None

    def healthy(self) -> bool: ...

    def ready(self) -> bool: ...


def _app(status: Status) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return _metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path in ("/healthz", "/readyz", "/"):
            ok = status.ready() if path == "/readyz" else status.healthy()
            body: dict[str, Any] = {"status": "ok" if ok else "unavailable"}
            if status.failure is not None:
                body["failure"] = status.failure
            elif not status.healthy():
                body["status"] = "stopping"
            if status.warehouse_error is not None:
                body["warehouse_error"] = status.warehouse_error
            if status.broker_error is not None:
                body["broker_error"] = status.broker_error
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "application/json"), ("Cache-Control", "no-store")],
            )
            return [msgspec.json.encode(body)]
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [b'{"error":{"code":404,"message":"not found"}}']

    return app


# Containers must listen on all interfaces for Cloud Run to reach them.
ALL_INTERFACES = "0.0.0.0"  # noqa: S104  # nosec B104


def start_health_server(port: int, status: Status, host: str = ALL_INTERFACES) -> WSGIServer:
    """Serve health and metrics on a daemon thread; return the server (call shutdown())."""
    server = make_server(host, port, _app(status), handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
