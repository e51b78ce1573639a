"""Ingest benchmark: the full nycflights13 replay through `flightpipe serve`, with its bounds.

Measured in one run, on one machine, side by side:
* pipeline: replay start -> every flight committed (the subscriber's written counter), with the
  replay publisher and `flightpipe serve` as separate processes, exactly as `make run` does;
* upper limit: DuckDB bulk-loading the same payloads in one statement (no broker, no Python loop);
* floor: a naive subscriber doing one INSERT (one transaction) per message, on a sample;
* memory: peak RSS of the subscriber service draining a backlog of N messages (--backlog).

    .venv/bin/python bench/ingest.py [--data-dir DIR] [--backlog 1000000] [--repeat 3]

Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flightpipe import contract  # noqa: E402
from flightpipe.replay import nycflights13_payloads  # noqa: E402
from flightpipe.warehouse.duckdb_sql import _JSON_STRUCT, schema_sql  # noqa: E402
from tests.processes import Serve, free_port, metric  # noqa: E402

CLI = [sys.executable, "-m", "flightpipe_local.cli"]


def all_payloads() -> list[bytes]:
    return [p for batch in nycflights13_payloads() for p in batch]


def pipeline_run(data_dir: Path, expected: int) -> float:
    shutil.rmtree(data_dir, ignore_errors=True)
    server = Serve(data_dir).start()
    try:
        started = time.perf_counter()
        replay = subprocess.Popen(
            [*CLI, "replay", "nycflights13", "--no-progress", "--data-dir", str(data_dir)],
            stderr=subprocess.DEVNULL,
        )
        while metric(server.base_url, "flightpipe_messages_written_total") < expected:
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        replay.wait(timeout=60)
    finally:
        server.stop()
    return elapsed


def duckdb_bulk(payloads: list[bytes], path: Path) -> float:
    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    for statement in schema_sql():
        con.execute(statement)
    fields = ", ".join(f"j.{n}" for n in contract.FIELD_NAMES)
    started = time.perf_counter()
    table = pa.table({"payload": pa.array(payloads, pa.binary()).cast(pa.string())})
    con.register("incoming", table)
    con.execute(
        f"INSERT INTO events SELECT {fields}, 'm', now(), now() FROM "
        f"(SELECT json_transform(payload, '{_JSON_STRUCT}') AS j FROM incoming)"
    )
    elapsed = time.perf_counter() - started
    con.close()
    return elapsed


def naive_rate(payloads: list[bytes], path: Path, sample: int) -> float:
    """Messages/s of decode + one INSERT per message (autocommit), on `sample` messages."""
    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    for statement in schema_sql():
        con.execute(statement)
    marks = ", ".join("?" for _ in contract.COLUMN_NAMES)
    started = time.perf_counter()
    for raw in payloads[:sample]:
        event = contract.decode_event(raw)
        row = [getattr(event, n) for n in contract.FIELD_NAMES]
        now = dt.datetime.now(dt.UTC)
        con.execute(f"INSERT INTO events VALUES ({marks})", [*row, "m", now, now])
    elapsed = time.perf_counter() - started
    con.close()
    return sample / elapsed


def backlog_memory(data_dir: Path, payloads: list[bytes], backlog: int) -> tuple[float, float]:
    """Publish `backlog` messages, then drain them with the subscriber service; peak RSS (MB)."""
    from flightpipe.composition import ensure_topology, make_broker
    from flightpipe.settings import load_settings

    shutil.rmtree(data_dir, ignore_errors=True)
    settings = load_settings({}, data_dir=str(data_dir))
    broker = make_broker(settings)
    ensure_topology(broker, settings)
    published = 0
    round_ = 0
    while published < backlog:
        # Distinct event ids per round so every message is a new event for the warehouse.
        chunk = [
            p.replace(b'"event_id":"', f'"event_id":"r{round_}-'.encode(), 1)
            for p in payloads[: backlog - published]
        ]
        for start in range(0, len(chunk), 5000):
            broker.publish(settings.topic, [(p, {}) for p in chunk[start : start + 5000]])
        published += len(chunk)
        round_ += 1
    broker.close()
    port = free_port()
    env = {**os.environ, "FLIGHTPIPE_DATA_DIR": str(data_dir), "PORT": str(port)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flightpipe_subscriber"], env=env, stdout=subprocess.DEVNULL
    )
    peak_kb = 0
    started = time.perf_counter()
    base = f"http://127.0.0.1:{port}"
    try:
        while metric(base, "flightpipe_messages_written_total") < backlog:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            rss = int(
                next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]
            )
            peak_kb = max(peak_kb, rss)
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
        status = Path(f"/proc/{proc.pid}/status").read_text()
        hwm = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    return max(peak_kb, hwm) / 1024, backlog / elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="data-bench")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--naive-sample", type=int, default=3000)
    args = parser.parse_args()
    root = Path(args.data_dir)
    root.mkdir(parents=True, exist_ok=True)
    payloads = all_payloads()
    n = len(payloads)
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    runs = []
    for _ in range(args.repeat):
        runs.append(pipeline_run(root / "pipeline", n))
        print(f"pipeline run: {runs[-1]:.2f} s", flush=True)
    bulk = [duckdb_bulk(payloads, root / "bulk.duckdb") for _ in range(args.repeat)]
    naive = naive_rate(payloads, root / "naive.duckdb", args.naive_sample)
    pipe_s, bulk_s = statistics.median(runs), statistics.median(bulk)
    pipe_rate, bulk_rate = n / pipe_s, n / bulk_s
    print(f"\n| measure ({n:,} flights) | median | messages/s | vs pipeline |")
    print("|---|---|---|---|")
    print(
        f"| pipeline: replay start -> all committed (runs: {', '.join(f'{r:.2f}' for r in runs)} s) | {pipe_s:.2f} s | {pipe_rate:,.0f} | 1.00 |"
    )
    print(
        f"| upper limit: DuckDB bulk load, one statement | {bulk_s:.2f} s | {bulk_rate:,.0f} | {bulk_rate / pipe_rate:.2f}x |"
    )
    print(
        f"| floor: one INSERT per message (sample {args.naive_sample:,}) | {n / naive:.0f} s (extrapolated) | {naive:,.0f} | {naive / pipe_rate:.3f}x |"
    )
    if args.backlog:
        peak_mb, drain_rate = backlog_memory(root / "backlog", payloads, args.backlog)
        print(
            f"\nsubscriber draining a backlog of {args.backlog:,}: peak RSS {peak_mb:.0f} MB, {drain_rate:,.0f} messages/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
