"""The symptom alert policies and the SLO burn-rate alerts (thresholds: `thresholds.py`).

Each policy's markdown documentation carries its threshold's argument and first checks for the
on-call; severity is both the `severity` user label (routing) and the policy's `severity` field
(the console).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
import pulumi_gcp as gcp

from components.monitoring import metrics as m
from components.monitoring import thresholds as t
from components.monitoring.scope import Scope

_agg = gcp.monitoring.AlertPolicyConditionConditionThresholdAggregationArgs
_den_agg = gcp.monitoring.AlertPolicyConditionConditionThresholdDenominatorAggregationArgs


def condition(
    name: str,
    flt: pulumi.Input[str],
    value: float | t.Threshold,
    duration_s: int | None = None,
    *,
    aligner: str | None = None,
    reducer: str | None = None,
    period_s: int = 60,
    denominator: pulumi.Input[str] | None = None,
    missing: str | None = None,
) -> gcp.monitoring.AlertPolicyConditionArgs:
    """`flt` (optionally / `denominator`) above `value` for `duration_s` seconds.

    `value` may be a `Threshold`, which brings its own duration.
    """
    if isinstance(value, t.Threshold):
        duration_s = value.held_s
        value = value.value
    agg: dict[str, Any] = {}
    if aligner is not None:
        agg = {
            "alignment_period": f"{period_s}s",
            "per_series_aligner": aligner,
            "cross_series_reducer": reducer,
        }
    ratio = denominator is not None and bool(agg)
    return gcp.monitoring.AlertPolicyConditionArgs(
        display_name=name,
        condition_threshold=gcp.monitoring.AlertPolicyConditionConditionThresholdArgs(
            filter=flt,
            comparison="COMPARISON_GT",
            threshold_value=value,
            duration=f"{duration_s}s",
            aggregations=[_agg(**agg)] if agg else None,
            denominator_filter=denominator,
            denominator_aggregations=[_den_agg(**agg)] if ratio else None,
            evaluation_missing_data=missing,
        ),
    )


def documentation(
    title: str, severity: str, why: str, first: str
) -> gcp.monitoring.AlertPolicyDocumentationArgs:
    """The on-call's note: what fired, why this threshold, where to look first (markdown)."""
    content = (
        f"## {title}\n\n**Severity:** {severity}\n\n**Why this threshold:** {why}\n\n"
        f"**First checks:** {first}\n"
    )
    return gcp.monitoring.AlertPolicyDocumentationArgs(
        content=content, mime_type="text/markdown", subject=f"[{severity}] flightpipe: {title}"
    )


def policy(
    scope: Scope,
    suffix: str,
    title: str,
    *,
    severity: str,
    conditions: list[gcp.monitoring.AlertPolicyConditionArgs],
    why: str,
    first: str,
    combiner: str = "OR",
    reads: Sequence[str] = (),
) -> gcp.monitoring.AlertPolicy:
    """One alert policy named `{component}-alert-{suffix}`, documented for the on-call.

    `reads`: the metric types its conditions read; it is created once Cloud Monitoring has them.
    """
    a = scope.args
    return gcp.monitoring.AlertPolicy(
        f"{scope.name}-alert-{suffix}",
        project=a.project,
        display_name=f"flightpipe {a.env}: {title}",
        combiner=combiner,
        conditions=conditions,
        documentation=documentation(title, severity, why, first),
        notification_channels=list(a.notification_channels),
        severity="CRITICAL" if severity == "page" else "WARNING",
        user_labels={**scope.labels, "severity": severity},
        opts=scope.after(*reads),
    )


def pipeline_alerts(scope: Scope) -> None:
    """Backlog age, dead-lettering and (with a subscriber) data freshness."""
    a, ns = scope.args, scope.subscriber_namespace
    old = t.OLDEST_UNACKED
    policy(
        scope,
        "oldest-unacked",
        f"Pub/Sub oldest unacked message > {old.value:g} s for {old.held_s // 60} min",
        severity=old.severity,
        conditions=[
            condition(
                f"oldest unacked message age > {old.value:g} s",
                m.output_filter(
                    m.OLDEST_UNACKED, m.SUBSCRIPTION, {"subscription_id": a.subscription_name}
                ),
                old,
                aligner="ALIGN_MAX",
                reducer="REDUCE_MAX",
            )
        ],
        why=old.why,
        first=old.first.format(write_failures=m.WRITE_FAILURES),
        reads=[m.OLDEST_UNACKED],
    )
    ratio, per_minute = t.DEAD_LETTER_RATIO, t.DEAD_LETTER_PER_MINUTE
    conditions = [
        condition(
            f"dead-letter topic > {per_minute.value:g} msg/min",
            m.output_filter(m.TOPIC_SENDS, m.TOPIC, {"topic_id": a.dead_letter_topic_name}),
            per_minute,
            aligner="ALIGN_DELTA",  # messages per 60 s alignment period
            reducer="REDUCE_SUM",
        )
    ]
    if a.has_subscriber:
        received_share = condition(
            f"dead-lettered / received > {t.percent(ratio.value)}",
            m.output_filter(m.DEAD_LETTERED, m.PROM, ns),
            ratio,
            aligner="ALIGN_RATE",
            reducer="REDUCE_SUM",
            period_s=300,
            denominator=m.output_filter(m.RECEIVED, m.PROM, ns),
        )
        conditions.insert(0, received_share)
    reads = [m.TOPIC_SENDS, *((m.DEAD_LETTERED, m.RECEIVED) if a.has_subscriber else ())]
    policy(
        scope,
        "dead-letter",
        f"Dead-letter rate > {t.percent(ratio.value)} of received or > {per_minute.value:g}/min "
        f"for {ratio.held_s // 60} min",
        severity=ratio.severity,
        conditions=conditions,
        why=ratio.why.format(per_minute=per_minute.value),
        first=ratio.first,
        reads=reads,
    )
    if not a.has_subscriber:
        return
    fresh = t.FRESHNESS
    policy(
        scope,
        "freshness",
        f"Data freshness > {fresh.value:g} s for {fresh.held_s // 60} min",
        severity=fresh.severity,
        conditions=[
            condition(
                f"data freshness > {fresh.value:g} s",
                m.output_filter(m.FRESHNESS, m.PROM, ns),
                fresh,
                aligner="ALIGN_MAX",
                # Each instance reports its own newest commit; the warehouse is as fresh as the
                # freshest of them (an idle instance's gauge grows while others commit).
                reducer="REDUCE_MIN",
                missing="EVALUATION_MISSING_DATA_ACTIVE",
            )
        ],
        why=fresh.why,
        first=fresh.first,
        reads=[m.FRESHNESS],
    )


def api_alerts(scope: Scope) -> None:
    """The API's 5xx ratio and p95 latency, as Cloud Run measures them."""
    errors, slow = t.API_5XX_RATIO, t.API_P95_MS
    policy(
        scope,
        "api-5xx",
        f"API 5xx ratio > {t.percent(errors.value)} for {errors.held_s // 60} min",
        severity=errors.severity,
        conditions=[
            condition(
                f"5xx / all requests > {t.percent(errors.value)}",
                m.output_filter(m.RUN_REQUESTS, m.RUN, scope.api, [m.IS_5XX]),
                errors,
                aligner="ALIGN_RATE",
                reducer="REDUCE_SUM",
                period_s=300,
                denominator=m.output_filter(m.RUN_REQUESTS, m.RUN, scope.api),
            )
        ],
        why=errors.why,
        first=errors.first,
        reads=[m.RUN_REQUESTS],
    )
    policy(
        scope,
        "api-latency",
        f"API p95 latency > {slow.value:g} ms for {slow.held_s // 60} min",
        severity=slow.severity,
        conditions=[
            condition(
                f"p95 request latency > {slow.value:g} ms",
                m.output_filter(m.RUN_LATENCIES, m.RUN, scope.api),
                slow,
                aligner="ALIGN_DELTA",
                reducer="REDUCE_PERCENTILE_95",
            )
        ],
        why=slow.why,
        first=slow.first,
        reads=[m.RUN_LATENCIES],
    )


def _burn_rate(slo_name: pulumi.Output[str], window_s: int) -> pulumi.Output[str]:
    return slo_name.apply(lambda n: f'select_slo_burn_rate("{n}", "{window_s}s")')


def burn_rate_alerts(scope: Scope, slo_name: pulumi.Output[str]) -> None:
    """One policy per tier of `thresholds.BURN_RATES` on the availability SLO."""
    for tier in t.BURN_RATES:
        hours = tier.long_s // 3600
        conditions = [
            condition(
                f"burn rate over {window}s > {tier.factor:g}x",
                _burn_rate(slo_name, window),
                tier.factor,
                tier.debounce_s,
            )
            for window in (tier.long_s, tier.short_s)
        ]
        policy(
            scope,
            f"burn-{hours}h",
            f"API availability budget burning {tier.factor:g}x over {hours} h",
            severity=tier.severity,
            conditions=conditions,
            why=f"At {tier.factor:g}x the {t.percent(1 - t.AVAILABILITY_GOAL)} error budget of the "
            f"{t.SLO_PERIOD_DAYS}-day availability SLO, {tier.budget_spent:.1%} of the budget "
            f"goes in {hours} h and all of it in {t.SLO_PERIOD_DAYS / tier.factor:.1f} days. "
            f"Both the {hours} h window and its {tier.short_s // 60}-minute short window must burn "
            "that fast, so the alert clears soon after the errors stop.",
            first=t.BURN_RATE_FIRST,
            combiner="AND",
        )
