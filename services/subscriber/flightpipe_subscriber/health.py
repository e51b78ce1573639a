"""A tiny HTTP server for the subscriber: `/healthz` for probes and `/metrics` for Prometheus.

Cloud Run needs the container to listen on `PORT`; the same port serves the scrape endpoint.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

_metrics_app = make_wsgi_app()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would flood the logs."""


def _app(alive: Callable[[], bool]) -> Callable[..., Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return _metrics_app(environ, start_response)  # type: ignore[no-any-return]
        if path in ("/healthz", "/readyz", "/"):
            ok = alive()
            start_response(
                "200 OK" if ok else "503 Service Unavailable",
                [("Content-Type", "application/json")],
            )
            return [b'{"status":"ok"}' if ok else b'{"status":"stopping"}']
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [b'{"error":{"code":404,"message":"not found"}}']

    return app


# Containers must listen on all interfaces for Cloud Run to reach them.
ALL_INTERFACES = "0.0.0.0"  # noqa: S104  # nosec B104


def start_health_server(
    port: int, alive: Callable[[], bool], host: str = ALL_INTERFACES
) -> WSGIServer:
    """Serve health and metrics on a daemon thread; return the server (call shutdown())."""
    server = make_server(host, port, _app(alive), handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server
