"""The monthly Google Cloud bill of one flightpipe stack, modelled from the program itself.

    .venv/bin/python bench/cost.py [--stack prod] [--events-per-day 6000] [--requests-per-day 10000]

Quantities come from the code, not from this script: the stack's settings through
infra/config.py (instances, CPU, memory, ingest mode), the collector sidecar's size and scrape
interval (infra/components/collector.py), the SQL each endpoint runs and the table's daily
partitions (flightpipe/warehouse/bigquery_sql.py), the API cache's TTL and watermark interval,
and column, row and message sizes measured on a sample of nycflights13 events. Prints one
Markdown table per component and the monthly total; docs/cost.md explains every line and cites
every price (bench/cost_model.py holds them).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn
from unittest import mock

import yaml

ROOT = Path(__file__).resolve().parents[1]
# This script's own folder too: `python -P` (PYTHONSAFEPATH) leaves it off sys.path.
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "infra"), str(ROOT / "services" / "api")]

import cost_model as cm  # noqa: E402

from flightpipe import contract  # noqa: E402
from flightpipe.warehouse import bigquery_sql as sql  # noqa: E402
from flightpipe.warehouse.port import FlightFilter, Selection  # noqa: E402

# The endpoints that query BigQuery and each one's default share of requests.
DEFAULT_MIX = "list=0.5,flight=0.25,events=0.1,stats=0.15"
# A Pub/Sub message id as Pub/Sub issues them (a decimal string; 16 digits assumed).
MESSAGE_ID = "1234567890123456"
SAMPLE_EVENTS = 20_000


class _StackConfig:
    """`pulumi.Config` over one committed Pulumi.<stack>.yaml, so infra/config.py's own defaults
    and validation apply without the Pulumi engine (only the getters config.py calls)."""

    def __init__(self, values: Mapping[str, Any], namespace: str | None = None) -> None:
        self._values = values
        self._namespace = namespace or "flightpipe"

    def get(self, key: str) -> str | None:
        value = self._values.get(f"{self._namespace}:{key}")
        return None if value is None else str(value)

    def require(self, key: str) -> str:
        # Required settings absent from the committed file (analystGroup) never affect cost.
        return self.get(key) or "group:cost-model@flightpipe.invalid"

    def get_int(self, key: str) -> int | None:
        value = self.get(key)
        return None if value is None else int(value)

    def get_bool(self, key: str) -> bool | None:
        value = self.get(key)
        return None if value is None else value.lower() == "true"

    def get_object(self, key: str) -> object:
        return self._values.get(f"{self._namespace}:{key}")


def stack_config(stack: str) -> Any:
    """infra/config.py's StackConfig for the committed stack file (ValueError when invalid)."""
    path = ROOT / "infra" / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise ValueError(f"--stack {stack}: no infra/Pulumi.{stack}.yaml")
    values = (yaml.safe_load(path.read_text()) or {}).get("config", {})
    import config as infra_config
    import pulumi

    with (
        mock.patch.object(pulumi, "Config", lambda ns=None: _StackConfig(values, ns)),
        mock.patch.object(pulumi, "get_stack", lambda: stack),
    ):
        return infra_config._load()


def _quantity(value: str) -> float:
    """A Kubernetes-style CPU or memory quantity as vCPU or GiB ("1", "500m", "512Mi", "1Gi")."""
    units = {"m": 1e-3, "Mi": 1 / 1024, "Gi": 1.0, "": 1.0}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m|Mi|Gi|)", value)
    if match is None:
        raise ValueError(f"unsupported quantity {value!r}")
    return float(match.group(1)) * units[match.group(2)]


def _columns(text: str) -> frozenset[str]:
    return frozenset(c for c in contract.COLUMN_NAMES if re.search(rf"\b{c}\b", text))


def endpoint_queries(list_days: int, stats_days: int) -> dict[str, sql.Query]:
    """Each endpoint's BigQuery statement: a page and stats filtered to their last days."""
    view, events = "`p-cost.d.flights_current`", "`p-cost.d.events`"
    flight = "2013-01-31-UA1545-EWR"
    last = dt.date(2013, 1, 31)

    def days(n: int) -> FlightFilter:
        return FlightFilter(date_from=last - dt.timedelta(days=n - 1), date_to=last)

    return {
        "list": sql.list_flights(view, Selection(days(list_days), limit=101)),
        "flight": sql.get_flight(view, flight),
        "events": sql.flight_events(events, flight),
        "stats": sql.delay_stats(view, days(stats_days), "carrier"),
    }


def _partitions(statement: sql.Query, history_days: int) -> int:
    """Daily partitions a statement reads: its `flight_date` parameters' span, else them all."""
    dates = [p.value for p in statement.params if p.type == "DATE" and p.value is not None]
    if not dates:
        return history_days
    span: int = (max(dates) - min(dates)).days + 1
    return min(span, history_days)


def model_queries(list_days: int, stats_days: int, history_days: int) -> dict[str, cm.Query]:
    """Columns read and partitions scanned by each endpoint's SQL.

    A query on the view also reads the columns of the view's window clauses (dedup and
    latest-state order), which BigQuery cannot prune. Partitions: `flight_date` partitions the
    table and every date bound the SQL binds prunes them (bigquery_sql `_BY_ID`,
    `current_view_sql`); clustering is not counted (see docs/cost.md).
    """
    window = _columns(sql.current_view_sql("`p-cost.d.events`").split("QUALIFY", 1)[1])
    result = {}
    for name, statement in endpoint_queries(list_days, stats_days).items():
        reads = _columns(statement.sql)
        if sql.CURRENT_VIEW in statement.sql:
            reads |= window
        result[name] = cm.Query(reads, _partitions(statement, history_days))
    return result


def watermark_query(history_days: int) -> cm.Query:
    """The cache's watermark check: its column over every partition (it has no date bound)."""
    statement = sql.newest_publish_time("`p-cost.d.events`")
    return cm.Query(_columns(statement.sql), _partitions(statement, history_days))


def _bq_size(kind: str, value: object) -> int:
    """BigQuery's data size of one value: STRING 2 + UTF-8 bytes, INT64/TIMESTAMP/DATE 8, NULL 0."""
    if value is None:
        return 0
    if kind == "string":
        return 2 + len(str(value).encode())
    return 8


def measured_sizes(sample: int) -> tuple[dict[str, float], float, float]:
    """(average bytes per column, insertAll row JSON bytes, Pub/Sub message bytes) over a sample."""
    from flightpipe.replay import nycflights13_payloads

    kinds = {c.name: c.kind for c in contract.COLUMNS}
    totals = dict.fromkeys(kinds, 0)
    rows, json_bytes, message_bytes = 0, 0, 0
    timestamp = "2013-01-01T14:30:00.123456+00:00"
    for batch in nycflights13_payloads(sample):
        for payload in batch:
            row = json.loads(payload)
            row |= {"message_id": MESSAGE_ID, "publish_time": timestamp, "ingest_time": timestamp}
            for name, kind in kinds.items():
                totals[name] += _bq_size(kind, row.get(name))
            json_bytes += len(json.dumps(row, separators=(",", ":")))
            message_bytes += len(payload)
            rows += 1
    if not rows:
        raise ValueError("the event sample is empty")
    columns = {name: total / rows for name, total in totals.items()}
    return columns, json_bytes / rows, message_bytes / rows + len(MESSAGE_ID)


def _mix(text: str) -> dict[str, float]:
    try:
        pairs = dict(item.split("=", 1) for item in text.split(","))
        mix = {k.strip(): float(v) for k, v in pairs.items()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected endpoint=share,..., got {text!r}") from None
    unknown = set(mix) - {"list", "flight", "events", "stats"}
    if unknown or any(v < 0 for v in mix.values()) or abs(sum(mix.values()) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(
            f"--mix {text!r}: shares of list, flight, events, stats, >= 0, summing to 1"
        )
    return mix


def _number(kind: Callable[[str], float], ok: Callable[[float], bool], want: str) -> Any:
    """An argparse type: `kind(text)` when `ok` accepts it, else a one-line error naming `want`."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = math.nan
        if not ok(value):  # NaN fails every comparison
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        return value

    return parse


def _positive(kind: Callable[[str], float]) -> Any:
    return _number(kind, lambda v: v > 0, "a number > 0")


_share = _number(float, lambda v: 0 <= v < 1, "a share in [0, 1)")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """Bad input: one line on stderr and exit 2, without the usage block."""
        self.exit(2, f"cost.py: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(description=__doc__.splitlines()[0])
    p.add_argument("--stack", default="prod", help="infra/Pulumi.<stack>.yaml (default prod)")
    p.add_argument(
        "--events-per-day",
        type=_positive(float),
        default=6000.0,
        help="events published a day (default: 1,500 flights x 4 state changes)",
    )
    p.add_argument("--requests-per-day", type=_positive(float), default=10_000.0)
    p.add_argument("--mix", type=_mix, default=_mix(DEFAULT_MIX), help=f"default {DEFAULT_MIX}")
    p.add_argument("--list-days", type=_positive(int), default=1, help="days a list page spans")
    p.add_argument("--stats-days", type=_positive(int), default=30, help="days stats span")
    p.add_argument("--history-days", type=_positive(int), default=365, help="days stored")
    p.add_argument("--busy-hours", type=_positive(float), default=12.0, help="hours/day of use")
    p.add_argument("--request-seconds", type=_positive(float), default=0.5)
    p.add_argument("--cache-hit-rate", type=_share, default=0.0)
    p.add_argument("--publish-batch", type=_positive(int), default=1)
    # What-ifs on the deployed program (default: what the code and the stack say).
    p.add_argument("--watermark-interval", type=_positive(float), help="seconds between checks")
    p.add_argument("--subscriber-instances", type=_positive(int), help="worker pool instances")
    p.add_argument("--sample", type=_positive(int), default=SAMPLE_EVENTS, help="events measured")
    p.add_argument("--api-samples", type=_positive(int), default=397, help="series per API scrape")
    p.add_argument(
        "--subscriber-samples", type=_positive(int), default=94, help="series per subscriber scrape"
    )
    return p


def runtime(args: argparse.Namespace) -> cm.Runtime:
    from components import collector

    from flightpipe.settings import load_settings

    cfg = stack_config(args.stack)
    size = cfg.sizing
    sidecar = collector.container("app", {})["resources"]["limits"]
    interval = load_settings({}).api_cache_check_seconds
    return cm.Runtime(
        api=(
            size.api_min_instances,
            _quantity(size.api_cpu) + _quantity(sidecar["cpu"]),
            _quantity(size.api_memory) + _quantity(sidecar["memory"]),
        ),
        subscriber=(
            args.subscriber_instances or size.subscriber_instances,
            _quantity(size.subscriber_cpu) + _quantity(sidecar["cpu"]),
            _quantity(size.subscriber_memory) + _quantity(sidecar["memory"]),
        ),
        ingest_mode=cfg.ingest_mode,
        scrape_seconds=_quantity(collector.SCRAPE_INTERVAL.removesuffix("s")),
        api_samples_per_scrape=args.api_samples,
        subscriber_samples_per_scrape=args.subscriber_samples,
        watermark_interval_s=args.watermark_interval or float(interval),
    )


def components(args: argparse.Namespace) -> Iterator[cm.Component]:
    prices = cm.Prices()
    rt = runtime(args)
    traffic = cm.Traffic(
        events_per_day=args.events_per_day,
        requests_per_day=args.requests_per_day,
        mix=args.mix,
        history_days=args.history_days,
        busy_hours=min(args.busy_hours, 24.0),
        request_seconds=args.request_seconds,
        cache_hit_rate=args.cache_hit_rate,
        publish_batch=args.publish_batch,
    )
    columns, row_json, message = measured_sizes(args.sample)
    row_bytes = sum(columns.values())
    queries = model_queries(args.list_days, args.stats_days, args.history_days)
    yield cm.queries(
        queries,
        watermark_query(args.history_days),
        columns,
        traffic=traffic,
        runtime=rt,
        prices=prices,
    )
    yield cm.ingestion(row_json, traffic, prices)
    yield cm.storage(row_bytes, traffic, prices)
    yield cm.pubsub(message, traffic, prices)
    yield cm.cloud_run(traffic, rt, prices)
    yield cm.prometheus(rt, prices)


def render(parts: Sequence[cm.Component]) -> str:
    out: list[str] = []
    for part in parts:
        out += [f"### {part.name}", "", "| item | quantity | USD/month |", "|---|---|---:|"]
        out += [f"| {line.item} | {line.quantity} | {line.usd:,.2f} |" for line in part.lines]
        out += [f"| **total** | | **{part.usd:,.2f}** |", ""]
    out.append(f"**Monthly total: ${sum(p.usd for p in parts):,.2f}**")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        parts = list(components(args))
    except ValueError as exc:
        print(f"cost.py: {exc}", file=sys.stderr)
        return 2
    print(render(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
