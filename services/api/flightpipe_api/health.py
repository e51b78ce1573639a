"""Probes and metrics: /healthz (process alive), /readyz (warehouse reachable), /metrics."""

from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from flightpipe import telemetry
from flightpipe.warehouse import WarehouseError
from flightpipe_api.context import get_warehouse
from flightpipe_api.errors import RETRY_AFTER_SECONDS, error_response
from flightpipe_api.json import json_response

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Readiness: the warehouse answers a trivial query."""
    try:
        get_warehouse().ping()
    except WarehouseError as exc:
        return error_response(
            503, f"warehouse unreachable: {exc}", headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )
    return json_response({"status": "ready"})


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition of the API's metrics (not the pipeline's: see telemetry)."""
    return Response(generate_latest(telemetry.api_metrics_registry()), mimetype=CONTENT_TYPE_LATEST)
