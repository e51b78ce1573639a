"""One-flight GET latency on `flightpipe serve` while 8 clients stream 30k-row CSV exports.

Runs the real server on loopback once per FLIGHTPIPE_HTTP_MAX_EXPORTS value, alternating the values
over rounds so machine noise hits them alike, and prints each value's median, p90 and max:

    .venv/bin/python bench/serve_exports.py [--rounds 2] [--limits 8,2,1]

(8 admits every export: waitress without the gate.) Results: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flightpipe.broker.embedded import EmbeddedBroker
from flightpipe.composition import ensure_topology
from tests.faults.harness import backlog, fault_settings, publish_events, valid_events
from tests.processes import Serve, wait_until


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=120) as r:  # noqa: S310 - loopback
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as exc:
        exc.read()
        return exc.code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--limits", default="8,2,1")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp()) / "data"
    settings = fault_settings(data)
    data.mkdir(parents=True)
    broker = EmbeddedBroker(settings.broker_path)
    ensure_topology(broker, settings)
    events = valid_events(30_000, "bench")
    publish_events(broker, events)
    results: dict[str, list[float]] = {}
    for round_ in range(args.rounds):
        for limit in args.limits.split(","):
            env = {
                "FLIGHTPIPE_HTTP_THREADS": "4",
                "FLIGHTPIPE_HTTP_MAX_EXPORTS": limit,
                "FLIGHTPIPE_API_CACHE_TTL_SECONDS": "0",
            }
            server = Serve(data, env=env).start()
            wait_until(lambda: backlog(broker) == 0, 120, "the ingest")
            url = f"{server.base_url}/v1/flights?format=csv&limit=100000"
            exports = [threading.Thread(target=_get, args=(url,)) for _ in range(8)]
            for t in exports:
                t.start()
            time.sleep(0.3)
            latencies = []
            for _ in range(10):
                started = time.perf_counter()
                _get(f"{server.base_url}/v1/flights/{events[0].flight_id}")
                latencies.append(time.perf_counter() - started)
            for t in exports:
                t.join()
            server.stop()
            results.setdefault(limit, []).extend(latencies)
            print(
                f"round {round_} limit {limit}: median {statistics.median(latencies) * 1e3:.0f} ms"
            )
    for limit, latencies in results.items():
        ordered = sorted(latencies)
        print(
            f"max exports {limit}: median {statistics.median(ordered) * 1e3:.0f} ms, "
            f"p90 {ordered[int(len(ordered) * 0.9)] * 1e3:.0f} ms, max {ordered[-1] * 1e3:.0f} ms"
        )
    broker.close()


if __name__ == "__main__":
    main()
