"""The SLOs: API availability and latency (request-based), data freshness (windows-based).

Goals and their reasons: `thresholds.py`. The availability SLO carries the burn-rate alerts.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_gcp as gcp

from components.monitoring import metrics as m
from components.monitoring import thresholds as t
from components.monitoring.alerts import burn_rate_alerts
from components.monitoring.scope import Scope


def _service(scope: Scope, suffix: str, title: str) -> gcp.monitoring.CustomService:
    # A custom service with explicit request-based SLIs rather than Cloud Run's basic service
    # (`CLOUD_RUN` also exists): "good" is then written here instead of implied by the basic
    # SLI, and neither a location label nor the auto-detected service is involved.
    return gcp.monitoring.CustomService(
        f"{scope.name}-service-{suffix}",
        project=scope.args.project,
        service_id=f"flightpipe-{suffix}-{scope.args.env}",
        display_name=f"flightpipe {scope.args.env}: {title}",
        user_labels=scope.labels,
        opts=scope.child,
    )


def _slo(
    scope: Scope,
    slo_id: str,
    service: gcp.monitoring.CustomService,
    title: str,
    goal: float,
    *,
    reads: tuple[str, ...],
    **sli: Any,
) -> gcp.monitoring.Slo:
    return gcp.monitoring.Slo(
        f"{scope.name}-slo-{slo_id}",
        project=scope.args.project,
        service=service.service_id,
        slo_id=slo_id,
        display_name=title,
        goal=goal,
        rolling_period_days=t.SLO_PERIOD_DAYS,
        user_labels=scope.labels,
        opts=scope.after(*reads),
        **sli,
    )


def slos(scope: Scope) -> dict[str, pulumi.Output[str]]:
    """Declare the SLOs and the burn-rate alerts; return the SLOs' full names by key."""
    api = _service(scope, "api", "API")
    days = t.SLO_PERIOD_DAYS
    availability = _slo(
        scope,
        "api-availability",
        api,
        f"{t.percent(t.AVAILABILITY_GOAL)} of API requests are not 5xx ({days} days)",
        t.AVAILABILITY_GOAL,
        reads=(m.RUN_REQUESTS,),
        request_based_sli=gcp.monitoring.SloRequestBasedSliArgs(
            good_total_ratio=gcp.monitoring.SloRequestBasedSliGoodTotalRatioArgs(
                bad_service_filter=m.output_filter(m.RUN_REQUESTS, m.RUN, scope.api, [m.IS_5XX]),
                total_service_filter=m.output_filter(m.RUN_REQUESTS, m.RUN, scope.api),
            )
        ),
    )
    latency = _slo(
        scope,
        "api-latency",
        api,
        f"{t.percent(t.LATENCY_GOAL)} of API requests answer in under "
        f"{t.LATENCY_THRESHOLD_MS:g} ms ({days} days)",
        t.LATENCY_GOAL,
        reads=(m.RUN_LATENCIES,),
        request_based_sli=gcp.monitoring.SloRequestBasedSliArgs(
            distribution_cut=gcp.monitoring.SloRequestBasedSliDistributionCutArgs(
                distribution_filter=m.output_filter(m.RUN_LATENCIES, m.RUN, scope.api),
                range=gcp.monitoring.SloRequestBasedSliDistributionCutRangeArgs(
                    max=t.LATENCY_THRESHOLD_MS
                ),
            )
        ),
    )
    names = {"api_availability": availability.name, "api_latency": latency.name}
    if scope.args.has_subscriber:
        freshness = _slo(
            scope,
            "data-freshness",
            _service(scope, "pipeline", "ingest pipeline"),
            f"{t.percent(t.FRESHNESS_GOAL)} of minutes with data fresher than "
            f"{t.FRESHNESS_TARGET_S:g} s ({days} days)",
            t.FRESHNESS_GOAL,
            reads=(m.FRESHNESS,),
            windows_based_sli=gcp.monitoring.SloWindowsBasedSliArgs(
                window_period="60s",
                metric_mean_in_range=gcp.monitoring.SloWindowsBasedSliMetricMeanInRangeArgs(
                    time_series=m.output_filter(m.FRESHNESS, m.PROM, scope.subscriber_namespace),
                    range=gcp.monitoring.SloWindowsBasedSliMetricMeanInRangeRangeArgs(
                        max=t.FRESHNESS_TARGET_S
                    ),
                ),
            ),
        )
        names["data_freshness"] = freshness.name
    burn_rate_alerts(scope, availability.name)
    return names
