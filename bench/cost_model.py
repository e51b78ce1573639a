"""The cost model behind bench/cost.py: prices, inputs, and one function per bill line.

Pure arithmetic, no I/O: bench/cost.py derives the quantities from the program (stack config,
SQL, settings, a sample of real events) and prints what these functions return. Every price
is Google's list price for us-central1 / the US multi-region; docs/cost.md cites each page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

MIB = 2**20
GIB = 2**30
TIB = 2**40
SECONDS_PER_MONTH = 30 * 86_400
DAYS_PER_MONTH = 30


@dataclass(frozen=True)
class Prices:
    """USD list prices (docs/cost.md, "Prices", cites each one)."""

    # BigQuery on-demand analysis: per TiB billed, 1 TiB free a month; at least 10 MB per table
    # referenced per query.
    query_per_tib: float = 6.25
    query_free_tib: float = 1.0
    query_min_bytes: int = 10 * MIB
    # insertAll: $0.01 per 200 MB, each row counted as at least 1 KB.
    insert_all_per_200mb: float = 0.01
    insert_all_min_row_bytes: int = 1024
    # Storage Write API: per GiB ingested, first 2 TiB a month free.
    write_api_per_gib: float = 0.025
    write_api_free_tib: float = 2.0
    # Logical storage per GiB-month, first 10 GiB free; long-term after 90 days unmodified.
    storage_active_per_gib: float = 0.02
    storage_long_term_per_gib: float = 0.01
    storage_free_gib: float = 10.0
    # Pub/Sub throughput per TiB (publish and delivery), first 10 GiB free, 1000 bytes at least
    # per publish/pull request; a message counts its data, attributes, 20 B and its id.
    pubsub_per_tib: float = 40.0
    pubsub_free_gib: float = 10.0
    pubsub_min_request_bytes: int = 1000
    pubsub_timestamp_bytes: int = 20
    # Cloud Run tier 1: request-based billing, then instance-based (worker pools are billed
    # as instance-based: an assumption docs/cost.md states).
    # Each pair is (per vCPU-second, per GiB-second); the free tiers in the same units.
    run_request: tuple[float, float] = (0.000024, 0.0000025)
    run_request_free: tuple[float, float] = (180_000, 360_000)
    run_instance: tuple[float, float] = (0.000018, 0.000002)
    run_instance_free: tuple[float, float] = (240_000, 450_000)
    run_per_million_requests: float = 0.40
    run_free_requests: float = 2_000_000
    # Managed Service for Prometheus: per million samples ingested (first tier).
    prometheus_per_million: float = 0.06


@dataclass(frozen=True)
class Query:
    """One statement an endpoint runs: the columns it reads and how many daily partitions."""

    columns: frozenset[str]
    partitions: int


@dataclass(frozen=True)
class Traffic:
    """The inputs the operator chooses (bench/cost.py's options)."""

    events_per_day: float
    requests_per_day: float
    # Share of API requests per endpoint (sums to 1).
    mix: Mapping[str, float]
    history_days: int
    busy_hours: float
    request_seconds: float
    cache_hit_rate: float
    # Publishers' messages per publish request (1: each event published alone).
    publish_batch: int = 1


@dataclass(frozen=True)
class Runtime:
    """What the stack deploys (infra/Pulumi.<stack>.yaml through infra/config.py)."""

    # (instances, vCPU, GiB) per instance, sidecar included; the API's count is its minimum.
    api: tuple[int, float, float]
    subscriber: tuple[int, float, float]
    ingest_mode: str
    scrape_seconds: float
    api_samples_per_scrape: int
    subscriber_samples_per_scrape: int
    watermark_interval_s: float


class Line(NamedTuple):
    """One row of a component's table: what, how much, and what it costs a month."""

    item: str
    quantity: str
    usd: float


@dataclass(frozen=True)
class Component:
    name: str
    lines: tuple[Line, ...] = field(default_factory=tuple)

    @property
    def usd(self) -> float:
        return sum(line.usd for line in self.lines)


def bytes_scanned(query: Query, column_bytes: Mapping[str, float], events_per_day: float) -> float:
    """Bytes BigQuery reads: the columns' average sizes x rows in the partitions read."""
    per_row = sum(column_bytes[c] for c in query.columns)
    return per_row * events_per_day * query.partitions


def bytes_billed(scanned: float, prices: Prices) -> float:
    """On-demand bills at least the minimum per (single-table) query, rounded up to a MiB."""
    return max(float(prices.query_min_bytes), math.ceil(scanned / MIB) * MIB)


def watermark_checks_per_day(traffic: Traffic, runtime: Runtime) -> float:
    """Watermark queries a day: at most one per interval per instance, only when a request comes.

    With requests arriving at rate r per instance, a check is followed by the first request
    after the interval, so a cycle holds 1 + r x interval requests on average (a renewal
    argument): checks = requests / (1 + r x interval).
    """
    instances = max(runtime.api[0], 1)
    rate = traffic.requests_per_day / (traffic.busy_hours * 3600) / instances
    return traffic.requests_per_day / (1 + rate * runtime.watermark_interval_s)


def queries(
    endpoint_queries: Mapping[str, Query],
    watermark: Query,
    column_bytes: Mapping[str, float],
    *,
    traffic: Traffic,
    runtime: Runtime,
    prices: Prices,
) -> Component:
    """BigQuery analysis: each endpoint's query per cache miss, and the watermark checks."""
    misses = traffic.requests_per_day * (1 - traffic.cache_hit_rate)
    rows: list[tuple[str, float, float]] = []
    for endpoint, query in endpoint_queries.items():
        count = misses * traffic.mix.get(endpoint, 0.0) * DAYS_PER_MONTH
        billed = bytes_billed(bytes_scanned(query, column_bytes, traffic.events_per_day), prices)
        rows.append((endpoint, count, billed))
    checks = watermark_checks_per_day(traffic, runtime) * DAYS_PER_MONTH
    scanned = bytes_scanned(watermark, column_bytes, traffic.events_per_day)
    rows.append(("watermark check", checks, bytes_billed(scanned, prices)))
    total_tib = sum(count * billed for _, count, billed in rows) / TIB
    free_share = min(1.0, prices.query_free_tib / total_tib) if total_tib else 0.0
    lines = [
        Line(
            f"{name} ({billed / MIB:,.0f} MiB billed each)",
            f"{count:,.0f} queries, {count * billed / TIB:,.3f} TiB",
            count * billed / TIB * prices.query_per_tib * (1 - free_share),
        )
        for name, count, billed in rows
    ]
    return Component("BigQuery queries (on-demand, free TiB shared pro rata)", tuple(lines))


def ingestion(row_bytes: float, traffic: Traffic, prices: Prices) -> Component:
    """insertAll (what the subscriber uses) against the Storage Write API for the same rows."""
    rows = traffic.events_per_day * DAYS_PER_MONTH
    insert_bytes = rows * max(row_bytes, prices.insert_all_min_row_bytes)
    write_bytes = rows * row_bytes
    write_billed = max(0.0, write_bytes - prices.write_api_free_tib * TIB)
    return Component(
        "BigQuery ingestion",
        (
            Line(
                "insertAll (in use)",
                f"{rows:,.0f} rows x {max(row_bytes, prices.insert_all_min_row_bytes):,.0f} B",
                insert_bytes / (200 * MIB) * prices.insert_all_per_200mb,
            ),
            Line(
                "Storage Write API (alternative, not added)",
                f"{write_bytes / GIB:,.3f} GiB",
                write_billed / GIB * prices.write_api_per_gib,
            ),
        ),
    )


def storage(row_bytes: float, traffic: Traffic, prices: Prices) -> Component:
    """Logical storage of `history_days` of events: the last 90 days active, older long-term."""
    per_day = traffic.events_per_day * row_bytes
    active_gib = per_day * min(traffic.history_days, 90) / GIB
    long_term_gib = per_day * max(traffic.history_days - 90, 0) / GIB
    free_active = min(active_gib, prices.storage_free_gib)
    free_long = min(long_term_gib, prices.storage_free_gib)
    return Component(
        "BigQuery storage",
        (
            Line(
                "active (last 90 days)",
                f"{active_gib:,.3f} GiB",
                (active_gib - free_active) * prices.storage_active_per_gib,
            ),
            Line(
                "long-term",
                f"{long_term_gib:,.3f} GiB",
                (long_term_gib - free_long) * prices.storage_long_term_per_gib,
            ),
        ),
    )


def pubsub(message_bytes: float, traffic: Traffic, prices: Prices) -> Component:
    """Publish (per request, at least 1000 B) and one delivery (streaming pull, batched)."""
    messages = traffic.events_per_day * DAYS_PER_MONTH
    requests = messages / traffic.publish_batch
    publish = requests * max(
        float(prices.pubsub_min_request_bytes), message_bytes * traffic.publish_batch
    )
    deliver = messages * message_bytes
    total = publish + deliver
    billed = max(0.0, total - prices.pubsub_free_gib * GIB)
    quantity = f"{publish / GIB:,.3f} + {deliver / GIB:,.3f} GiB"
    line = Line("publish + delivery", quantity, billed / TIB * prices.pubsub_per_tib)
    return Component("Pub/Sub", (line,))


def _run_usd(
    used: tuple[float, float], price: tuple[float, float], free: tuple[float, float]
) -> float:
    """(vCPU-s, GiB-s) used, billed beyond the free tier."""
    return sum(max(0.0, u - f) * p for u, p, f in zip(used, price, free, strict=True))


def cloud_run(traffic: Traffic, runtime: Runtime, prices: Prices) -> Component:
    """The API (request-based) and the subscriber worker pool (always on), sidecars included.

    The API's busy time is requests x duration with no overlap (an upper bound); a minimum
    instance idle between requests is billed at the instance-based rate (an upper bound).
    """
    requests = traffic.requests_per_day * DAYS_PER_MONTH
    busy_s = requests * traffic.request_seconds
    api_min, api_vcpu, api_gib = runtime.api
    count, sub_vcpu, sub_gib = runtime.subscriber
    api_vcpu_s = busy_s * api_vcpu
    api_gib_s = busy_s * api_gib
    api = _run_usd((api_vcpu_s, api_gib_s), prices.run_request, prices.run_request_free) + (
        max(0.0, requests - prices.run_free_requests) / 1e6 * prices.run_per_million_requests
    )
    idle_s = max(0.0, api_min * SECONDS_PER_MONTH - busy_s)
    workers = count if runtime.ingest_mode == "subscriber" else 0
    always_s = workers * SECONDS_PER_MONTH
    vcpu_s = always_s * sub_vcpu + idle_s * api_vcpu
    gib_s = always_s * sub_gib + idle_s * api_gib
    always = _run_usd((vcpu_s, gib_s), prices.run_instance, prices.run_instance_free)
    return Component(
        "Cloud Run",
        (
            Line(
                f"API, request-based ({api_vcpu:g} vCPU, {api_gib:g} GiB)",
                f"{requests:,.0f} requests, {busy_s / 3600:,.1f} busy h",
                api,
            ),
            Line(
                f"always on: {workers} subscriber(s) ({sub_vcpu:g} vCPU, {sub_gib:g} GiB)"
                f" + {api_min} idle API min",
                f"{vcpu_s:,.0f} vCPU-s, {gib_s:,.0f} GiB-s",
                always,
            ),
        ),
    )


def prometheus(runtime: Runtime, prices: Prices) -> Component:
    """Samples written by the collectors: one per exported series per scrape, per instance.

    The API is counted as one instance all month (at least its minimum): an upper bound for a
    service that scales to zero, whose throttled idle CPU may also skip scrapes.
    """
    scrapes = SECONDS_PER_MONTH / runtime.scrape_seconds
    api = max(runtime.api[0], 1) * runtime.api_samples_per_scrape * scrapes
    workers = runtime.subscriber[0] if runtime.ingest_mode == "subscriber" else 0
    sub = workers * runtime.subscriber_samples_per_scrape * scrapes
    return Component(
        "Managed Service for Prometheus",
        (
            Line("API samples", f"{api / 1e6:,.1f} M", api / 1e6 * prices.prometheus_per_million),
            Line(
                "subscriber samples",
                f"{sub / 1e6:,.1f} M",
                sub / 1e6 * prices.prometheus_per_million,
            ),
        ),
    )
