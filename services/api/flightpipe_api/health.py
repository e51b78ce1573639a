"""Probes and metrics: /healthz and /health (alive), /readyz (warehouse reachable), /metrics."""

from __future__ import annotations

import logging
import time
from typing import Final

from flask import Blueprint, Response, current_app
from flask.blueprints import BlueprintSetupState
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from flightpipe import telemetry
from flightpipe.warehouse import WarehouseError
from flightpipe_api.context import get_warehouse
from flightpipe_api.errors import RETRY_AFTER_SECONDS, error_response
from flightpipe_api.json import json_response

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)

# A new revision starts seconds after the grants its account needs are made, and IAM applies a
# grant "typically in 2 minutes, potentially 7 minutes or longer"
# (https://cloud.google.com/iam/docs/access-change-propagation), longer than Cloud Run lets a
# startup probe fail before it stops the container and fails the revision. So for this long
# after start a permission denial reads as "starting" (200): restarting cannot fix it, waiting
# can. Any other warehouse failure, or a denial after it, is 503 as before.
IAM_PROPAGATION_GRACE_SECONDS: Final = 600.0
_STARTED: Final = "flightpipe.health.started"


@bp.record_once
def _record_start(state: BlueprintSetupState) -> None:
    state.app.extensions[_STARTED] = time.monotonic()


def _permission_denied(exc: BaseException) -> bool:
    """Whether Google refused the caller (HTTP 403 without a throttling reason) in `exc`'s chain.

    BigQuery answers a caller without the permission with 403 `accessDenied`, and throttling
    with 403 `rateLimitExceeded`/`backendError`
    (https://cloud.google.com/bigquery/docs/error-messages).
    """
    from google.api_core import exceptions as gexc

    seen: BaseException | None = exc
    visited: set[int] = set()
    while seen is not None and id(seen) not in visited:
        if isinstance(seen, gexc.Forbidden):
            reasons = {e.get("reason") for e in seen.errors or ()}
            return not reasons & {"rateLimitExceeded", "backendError"}
        visited.add(id(seen))
        seen = seen.__cause__ or seen.__context__
    return False


@bp.get("/healthz")
# The same check under a name Cloud Run's front end passes on: it reserves "some paths ending
# with z" (https://cloud.google.com/run/docs/known-issues, "Reserved URL paths"), so checks from
# outside (the uptime check) use /health; the platform's probes reach the container directly.
@bp.get("/health")
def healthz() -> Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """Readiness: the warehouse answers a trivial query."""
    try:
        get_warehouse().ping()
    except WarehouseError as exc:
        age = time.monotonic() - current_app.extensions[_STARTED]
        if age < IAM_PROPAGATION_GRACE_SECONDS and _permission_denied(exc):
            log.warning(
                "warehouse denies this identity %.0f s after start: IAM grants may still be "
                "propagating",
                age,
                extra={"error": str(exc)},
            )
            return json_response({"status": "starting"})
        return error_response(
            503, f"warehouse unreachable: {exc}", headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )
    return json_response({"status": "ready"})


@bp.get("/metrics")
def metrics() -> Response:
    """Prometheus text exposition of the API's metrics (not the pipeline's: see telemetry)."""
    return Response(generate_latest(telemetry.api_metrics_registry()), mimetype=CONTENT_TYPE_LATEST)
