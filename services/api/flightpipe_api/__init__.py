"""The analysts' HTTP API (Flask). `create_app()` is the application factory.

The WSGI app is `gate.Gate` (request id, API keys, rate limits, cached responses) around Flask
(`routes`, `health`, `openapi`, `status`); see those modules.
"""

from __future__ import annotations

import logging
import re
import time

from flask import Flask, Response, g, request
from opentelemetry import trace
from opentelemetry.instrumentation.flask import FlaskInstrumentor

from flightpipe import telemetry, tracing
from flightpipe.composition import make_warehouse
from flightpipe.settings import Settings, load_settings
from flightpipe.warehouse import Warehouse
from flightpipe_api import compression, health, openapi, routes, status
from flightpipe_api.auth import KeyGate, parse_key_hashes
from flightpipe_api.cache import ResultCache
from flightpipe_api.context import SETTINGS_KEY, WAREHOUSE_KEY
from flightpipe_api.errors import _STATUS, register_error_handlers
from flightpipe_api.exports import EXPORTS_KEY, ExportGate, max_exports
from flightpipe_api.gate import ENV_REQUEST_ID, Gate, request_id

REQUEST_ID_HEADER = "X-Request-ID"
# Probes, scrapes and the status page's polling make no spans: they would bury the requests in
# Cloud Trace. A regex per path, matched against the full URL (opentelemetry-util-http ExcludeList).
UNTRACED_URLS = ",".join(
    rf"^[a-z]+://[^/]+{re.escape(path)}(\?|$)" for path in sorted(status.NON_USER_ROUTES)
)
log = logging.getLogger("flightpipe_api.access")


def create_app(settings: Settings | None = None, warehouse: Warehouse | None = None) -> Flask:
    """Build the app; without a warehouse it opens the configured one (DuckDB read-only)."""
    settings = settings or load_settings()
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[SETTINGS_KEY] = settings
    app.extensions[WAREHOUSE_KEY] = warehouse = warehouse or make_warehouse(
        settings, read_only=True
    )
    cache = ResultCache(
        warehouse, settings.api_cache_ttl_seconds, check_interval=settings.api_cache_check_seconds
    )
    keys = KeyGate(
        parse_key_hashes(settings.api_keys),
        settings.api_rate_limit,
        settings.api_auth_failure_limit,
    )
    app.extensions[routes.CACHE_KEY] = cache
    app.extensions[EXPORTS_KEY] = ExportGate(max_exports(settings))
    register_error_handlers(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(routes.bp)
    app.register_blueprint(status.bp)
    app.register_blueprint(openapi.bp)
    _instrument(app)
    compression.init_app(app)
    app.wsgi_app = Gate(app.wsgi_app, keys, cache)  # type: ignore[method-assign]
    return app


def _instrument(app: Flask) -> None:
    """Request id, a server span, access log fields and the HTTP metrics for every request."""
    project = app.extensions[SETTINGS_KEY].google_cloud_project
    # The server span: named after the route, continuing the caller's W3C traceparent, with the
    # response status. This app object is instrumented, not flask.Flask, so each create_app() is
    # instrumented once (opentelemetry-python-contrib, instrumentation/flask@v0.66b2).
    # No SQL commenter: it tags SQL sent through instrumented database drivers, and none are.
    FlaskInstrumentor.instrument_app(  # type: ignore[no-untyped-call]  # unannotated upstream
        app, excluded_urls=UNTRACED_URLS, enable_commenter=False
    )
    # Every route's series exist at 0 from the first scrape (telemetry.init_http_series): its
    # Flask rules, the gate's refusals ("gate") and "unmatched"; success and each 5xx it answers.
    telemetry.init_http_series(
        [*(rule.rule for rule in app.url_map.iter_rules()), "gate", "unmatched"],
        [200, *(code for code in _STATUS if code >= 500)],
    )

    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()
        # The gate made it; request_id() again only when Flask runs without the gate (tests).
        g.request_id = request.environ.get(ENV_REQUEST_ID) or request_id(request.environ)
        telemetry.request_id_var.set(g.request_id)
        # The instrumentor's before_request ran first and made the server span current. It
        # names a request no route matched by its raw path: one name per scanner probe, so
        # name it as the metrics label it instead.
        if request.url_rule is None:
            trace.get_current_span().update_name(f"{request.method} unmatched")
        telemetry.trace_var.set(tracing.cloud_trace_field(project))

    @app.after_request
    def _finish(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        telemetry.HTTP_REQUESTS.labels(route=route, status=str(response.status_code)).inc()
        telemetry.HTTP_DURATION.labels(route=route).observe(elapsed)
        response.headers[REQUEST_ID_HEADER] = g.get("request_id", "")
        log.debug(
            "request",
            extra={"route": route, "status": response.status_code, "ms": elapsed * 1e3},
        )
        return response
