"""The cost model (bench/cost_model.py, bench/cost.py): its arithmetic on hand-computed cases,
what it derives from the program's SQL, and the command line's answer to bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "cost.py"
sys.path.insert(0, str(ROOT / "bench"))

import cost  # noqa: E402
import cost_model as cm  # noqa: E402

MIB = 2**20


def traffic(**overrides: object) -> cm.Traffic:
    values: dict[str, object] = {
        "events_per_day": 1000.0,
        "requests_per_day": 43_200.0,  # one request a second over 12 busy hours
        "mix": {"list": 1.0},
        "history_days": 10,
        "busy_hours": 12.0,
        "request_seconds": 0.5,
        "cache_hit_rate": 0.0,
    }
    values.update(overrides)
    return cm.Traffic(**values)  # type: ignore[arg-type]


def runtime(**overrides: object) -> cm.Runtime:
    values: dict[str, object] = {
        "api": (0, 1.0, 1.0),
        "subscriber": (1, 1.0, 1.0),
        "ingest_mode": "subscriber",
        "scrape_seconds": 30.0,
        "api_samples_per_scrape": 100,
        "subscriber_samples_per_scrape": 50,
        "watermark_interval_s": 1.0,
    }
    values.update(overrides)
    return cm.Runtime(**values)  # type: ignore[arg-type]


def test_small_queries_bill_the_minimum_and_larger_ones_round_up_to_a_mib() -> None:
    prices = cm.Prices()
    assert cm.bytes_billed(1, prices) == 10 * MIB
    assert cm.bytes_billed(10 * MIB + 1, prices) == 11 * MIB


def test_watermark_checks_follow_the_renewal_count() -> None:
    # 1 request/s on one instance, a 1 s interval: every other request finds the check due.
    assert cm.watermark_checks_per_day(traffic(), runtime()) == pytest.approx(21_600)
    # Two warm instances halve each one's rate: 43,200 / (1 + 0.5).
    two = runtime(api=(2, 1.0, 1.0))
    assert cm.watermark_checks_per_day(traffic(), two) == pytest.approx(28_800)


def test_query_bill_by_hand() -> None:
    # list: 8 B x 1,000 rows x 1 partition, billed 10 MiB, 43,200 x 30 = 1,296,000 a month;
    # watermark: 4 B x 1,000 x 10 partitions, billed 10 MiB, 21,600 x 30 = 648,000 a month.
    # (1,944,000 x 10 MiB) = 18.5394 TiB, less 1 free TiB, x $6.25 = $109.6214.
    part = cm.queries(
        {"list": cm.Query(frozenset({"a"}), 1)},
        cm.Query(frozenset({"t"}), 10),
        {"a": 8.0, "t": 4.0},
        traffic=traffic(),
        runtime=runtime(),
        prices=cm.Prices(),
    )
    assert part.usd == pytest.approx((1_944_000 * 10 / 2**20 - 1) * 6.25)
    assert [line.usd for line in part.lines] == pytest.approx([part.usd * 2 / 3, part.usd * 1 / 3])


def test_cache_hits_skip_the_endpoint_query_not_the_watermark_check() -> None:
    half = cm.queries(
        {"list": cm.Query(frozenset({"a"}), 1)},
        cm.Query(frozenset({"t"}), 1),
        {"a": 1.0, "t": 1.0},
        traffic=traffic(cache_hit_rate=0.5),
        runtime=runtime(),
        prices=cm.Prices(),
    )
    assert [line.quantity.split()[0] for line in half.lines] == ["648,000", "648,000"]


def test_insert_all_counts_a_kilobyte_per_row_and_the_write_api_its_free_tier() -> None:
    part = cm.ingestion(300.0, traffic(), cm.Prices())
    insert_all, write_api = part.lines
    assert insert_all.usd == pytest.approx(30_000 * 1024 / (200 * MIB) * 0.01)
    assert write_api.usd == 0.0


def test_pubsub_publishes_at_least_1000_bytes_a_request() -> None:
    big = traffic(events_per_day=1_000_000.0)  # 30 M messages of 500 B
    part = cm.pubsub(500.0, big, cm.Prices())
    total = 30_000_000 * (1000 + 500)
    assert part.usd == pytest.approx((total - 10 * 2**30) / 2**40 * 40)


def test_an_always_on_worker_pays_instance_rates_after_the_free_tier() -> None:
    quiet = traffic(requests_per_day=1.0)
    _, always = cm.cloud_run(quiet, runtime(), cm.Prices()).lines
    month = 30 * 86_400
    assert always.usd == pytest.approx((month - 240_000) * 0.000018 + (month - 450_000) * 0.000002)
    none = cm.cloud_run(quiet, runtime(ingest_mode="bigquery-subscription"), cm.Prices()).lines
    assert none[1].usd == 0.0


def test_the_endpoints_partitions_and_columns_come_from_their_sql() -> None:
    queries = cost.model_queries(list_days=3, stats_days=30, history_days=365)
    assert {name: q.partitions for name, q in queries.items()} == {
        "list": 3,
        "flight": 1,
        "events": 1,
        "stats": 30,
    }
    # The stats read the aggregates' inputs and the view's window columns, not the whole row.
    assert "tail_number" not in queries["stats"].columns
    assert {"event_id", "publish_time", "arr_delay_min"} <= queries["stats"].columns
    watermark = cost.watermark_query(365)
    assert (watermark.columns, watermark.partitions) == (frozenset({"publish_time"}), 365)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--events-per-day", "-5"], "--events-per-day"),
        (["--mix", "list=2"], "--mix"),
        (["--cache-hit-rate", "1.5"], "--cache-hit-rate"),
        (["--stack", "nope"], "Pulumi.nope.yaml"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], needle: str) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
