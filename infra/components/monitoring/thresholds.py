"""Every threshold, goal and burn-rate tier of the monitoring, each with its reason, once.

The reasons are written for the on-call: `alerts.py` puts `why` and `first` into the policy's
markdown documentation, which Cloud Monitoring attaches to each notification. Severity is `page`
(act now) or `ticket` (act this working day).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Severity = Literal["page", "ticket"]


def percent(share: float) -> str:
    """`0.995` as `99.5 %`, the way titles and notes write a share."""
    return f"{round(share * 100, 3):g} %"


# --- SLOs -------------------------------------------------------------------------------------
# 28 days = four whole weeks, so every window holds the same weekdays and weekend traffic.
SLO_PERIOD_DAYS: Final = 28
# 99.5 %: 0.5 % of requests, about 3.4 hours of full outage in 28 days. One region, one
# warehouse: a higher goal would promise more than the platform under it and leave no budget to
# deploy. Only 5xx count against it; 4xx are the client's mistakes.
AVAILABILITY_GOAL: Final = 0.995
# 95 % under 300 ms as Cloud Run measures it (what the client waits for, cold starts included):
# a warm paged query takes tens of ms; the 5 % absorbs cold starts and big pages.
LATENCY_GOAL: Final = 0.95
LATENCY_THRESHOLD_MS: Final = 300.0
# Windows-based: freshness is a state, not a request. 99 % of 1-minute windows with a mean
# freshness under 300 s allows about 6.7 hours of stale data in 28 days.
FRESHNESS_GOAL: Final = 0.99
FRESHNESS_TARGET_S: Final = 300.0


@dataclass(frozen=True)
class BurnRate:
    """One tier of the SRE workbook's multi-window burn-rate alerts ("Alerting on SLOs").

    The long window proves the burn is significant, the short one (1/12 of it) that it is still
    happening, so the alert clears soon after a fix.
    """

    factor: float
    long_s: int
    short_s: int
    debounce_s: int
    severity: Severity

    @property
    def budget_spent(self) -> float:
        """The share of the SLO period's error budget spent when this tier fires."""
        return self.factor * self.long_s / (SLO_PERIOD_DAYS * 86400)


BURN_RATES: Final = (
    BurnRate(14.4, 3600, 300, 300, "page"),  # 2.1 % of the budget in 1 h: gone in < 2 days
    BurnRate(6.0, 21600, 1800, 300, "page"),  # 5.4 % in 6 h: gone in < 5 days
    BurnRate(1.0, 259200, 21600, 3600, "ticket"),  # 10.7 % in 3 days: on course to miss the SLO
)


# --- symptom alerts ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Threshold:
    """A value held for `held_s` seconds that raises an alert, and the argument for it."""

    value: float
    held_s: int
    severity: Severity
    why: str
    first: str


OLDEST_UNACKED: Final = Threshold(
    300,
    300,
    "page",
    why="The data-freshness SLO is 5 minutes; a message unacked for longer is already late. A "
    "stuck subscriber (crashed, wedged on the warehouse or a poison message) shows here first, "
    "before freshness or the dead-letter rate move. 5 minutes above it rules out one slow batch.",
    first="Subscriber logs and instance count; warehouse write failures (`{write_failures}`); "
    "the backlog chart.",
)
# Both dead-letter conditions share one policy (and so one argument).
DEAD_LETTER_RATIO: Final = Threshold(
    0.01,
    600,
    "ticket",
    why="Dead-lettered messages wait on the dead-letter subscription and can be replayed, so "
    "this is a ticket (a full stop of ingestion pages through freshness). 1 % of received is far "
    "above the odd malformed record from a publisher; {per_minute:g}/min for 10 minutes on the "
    "topic also catches Pub/Sub forwarding after the maximum delivery attempts, which the "
    "subscriber never counts.",
    first="`flightpipe dlq list` (the `reason` attribute); a publisher or contract change; "
    "subscriber errors in the logs.",
)
DEAD_LETTER_PER_MINUTE: Final = Threshold(
    10.0, 600, DEAD_LETTER_RATIO.severity, DEAD_LETTER_RATIO.why, DEAD_LETTER_RATIO.first
)
FRESHNESS: Final = Threshold(
    600,
    600,
    "page",
    why="Freshness (now minus the newest committed publish time) should stay under 5 minutes; "
    "600 s is twice that, held for 10 minutes, so readers get data 20 minutes old. No data also "
    "fires: no scrape means no running subscriber.",
    first="Is anything being published (the topic's publish rate)? With idle publishers "
    "freshness grows by design. Otherwise: backlog age, subscriber logs, warehouse errors.",
)
API_5XX_RATIO: Final = Threshold(
    0.02,
    300,
    "page",
    why="2 % is four times the 0.5 % error budget of the availability SLO (budget gone in a "
    "week). The burn-rate pages need 3 % errors for 6 hours (6x) or 7.2 % for an hour (14.4x): "
    "without this, a steady 2-3 % would only raise a ticket after 3 days and 3-7 % would page "
    "only after hours. 5 minutes rules out a lone failure at low traffic.",
    first="The latest revision (roll back if it is new); API logs at severity ERROR; warehouse "
    "availability (warehouse errors surface as 503).",
)
API_P95_MS: Final = Threshold(
    500,
    600,
    "ticket",
    why="The latency SLO wants 95 % of requests under 300 ms; a p95 of 500 ms for 10 minutes is "
    "well past it. Slow answers are still answers, so this is a ticket.",
    first="The latency-by-route chart (one route or all?); instance count and cold starts; "
    "warehouse query times; page sizes requested.",
)
UPTIME_FAILING_REGIONS: Final = Threshold(
    1,
    60,
    "page",
    why="More than one checker region has failed /health for a minute. One region failing is "
    "usually its own network; /health depends on nothing but the process, so two regions "
    "failing means users cannot reach the API.",
    first="Cloud Run service status and latest revision; ingress settings; the TLS certificate; "
    "API logs.",
)
BURN_RATE_FIRST: Final = (
    "The API 5xx chart; the latest revision (roll back if it is new); API logs."
)
