"""API benchmark: flightpipe's /v1 endpoints against a tuned Datasette 0.65, same rows, same run.

Servers, all up at once and measured in alternating rounds (one wrk run of each per round), on the
same 336,776 nycflights13 flights:
* `granian`: the API image's server (`python -m flightpipe_api`'s granian WSGI settings) on a
  read-only DuckDB file loaded through `DuckDBWarehouse.write`;
* `serve`: `flightpipe serve` (waitress, subscriber and broker in the same process) on a copy;
* `datasette`: Datasette 0.65 on a SQLite copy, given its best for each query (docs.datasette.io
  "Performance and caching", "Settings"): immutable mode (`-i`: no locking, counts cached at
  start), `suggest_facets off`, a 200 MB SQLite page cache per connection (`cache_size_kb`), a
  covering index per query shape (see PEER_INDEXES; EXPLAIN QUERY PLAN is printed) and `ANALYZE`.
Our servers run with the result cache off, so every request queries the warehouse.

Scenarios (each server gets exactly the same request sequence: lists drawn once, seeded, and
walked by a wrk Lua script; each wrk thread starts at its own offset, so no page repeats in a run):
* `pages`: distinct filtered pages (carrier, origin, one day; 100 rows, sorted by departure);
* `stats`: delay statistics by carrier over random 30-day windows (ours also computes medians and
  90th percentiles; Datasette's SQL only counts and averages);
* `flight during exports` (ours only): one-flight GETs at 4 connections while 8 clients stream
  100,000-row CSV exports in a loop; `flight alone` is the same without the exports;
* `floor`: each server's cheapest answer at the same 32 connections (ours: `/healthz`, a constant
  JSON body through the whole WSGI stack and no query; Datasette: `/-/versions.json`), measured in
  the same rounds: the most any endpoint can do on this host, so a target above it is visibly out
  of reach here rather than missed by the code.

    .venv/bin/python bench/api.py [--data-dir build/bench-api] [--duration 10] [--rounds 3]

Prints a markdown table (medians over the rounds, with each round's figures) for
docs/benchmarks.md. Needs wrk and curl (`apt-get install wrk curl`).

What is measured lives here (rows, peer settings, request lists, report); bench/wrk_rig.py
starts the servers and drives the load.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "services" / "api"))

from wrk_rig import count_exports, exporting, lua, progress, running, wrk  # noqa: E402

from flightpipe.contract import COLUMN_NAMES, decode_event  # noqa: E402
from flightpipe.replay import nycflights13_payloads  # noqa: E402
from flightpipe.settings import Settings  # noqa: E402
from flightpipe.warehouse import Envelope  # noqa: E402
from flightpipe.warehouse.duckdb import DuckDBWarehouse  # noqa: E402
from tests.processes import free_port  # noqa: E402

BIN = Path(sys.executable).parent
CARRIERS = ["UA", "AA", "B6", "DL", "EV", "MQ", "US", "WN", "VX", "FL", "AS", "9E", "F9", "HA"]
ORIGINS = ["EWR", "JFK", "LGA"]
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
OURS_PAGE = "/v1/flights?carrier={c}&origin={o}&date_from={d}&date_to={d}&limit=100"
# One day: equality on flight_date, so the covering index also gives the order.
PEER_PAGE = (
    "/flights/flights.json?carrier={c}&origin={o}&flight_date={d}"
    "&_sort=scheduled_departure&_size=100&_nocount=1&_nosuggest=1"
)
OURS_STATS = "/v1/stats/delays?date_from={a}&date_to={b}&group_by=carrier"
PEER_STATS_SQL = (
    "select carrier, count(*) as flights, sum(status = 'cancelled') as cancelled, "
    "avg(dep_delay_min) as avg_dep, avg(arr_delay_min) as avg_arr, "
    "avg(arr_delay_min <= 15) as on_time from flights indexed by peer_stats "
    "where flight_date between :a and :b group by carrier order by carrier"
)
PEER_STATS = "/flights.json?sql=" + urllib.parse.quote(PEER_STATS_SQL) + "&a={a}&b={b}"
PEER_INDEXES = {
    # pages: equality on (carrier, origin, flight_date), then the sort key and Datasette's tie-break.
    "pages": "flights (carrier, origin, flight_date, scheduled_departure, flight_id)",
    # stats: a range of flight_date, and every column the SQL reads: the index alone answers.
    # SQLite's planner prefers a skip-scan of peer_pages, which is slower than this index (and
    # than (carrier, flight_date, ...)), hence INDEXED BY in the SQL.
    "stats": "flights (flight_date, carrier, status, dep_delay_min, arr_delay_min)",
}
EXPORT = "/v1/flights?format=csv&limit=100000"
DAYS = [dt.date(2013, 1, 1) + dt.timedelta(n) for n in range(365)]  # nycflights13's year
# The `floor` scenario: an answer that does no work (flightpipe_api/health.py; Datasette's
# introspection endpoint, docs.datasette.io "Introspection": /-/versions.json).
FLOOR = {"ours": "/healthz", "peer": "/-/versions.json"}
EXPORTERS = 8


def page_filters(rng: random.Random) -> list[tuple[str, str, dt.date]]:
    """Every (carrier, origin, day) of the pages scenario, shuffled by `rng`
    (bench/duckdb_page.py draws the same list)."""
    filters = [(c, o, d) for c in CARRIERS for o in ORIGINS for d in DAYS]
    rng.shuffle(filters)
    return filters


def load(data_dir: Path) -> tuple[Path, Path]:
    """The DuckDB warehouse and the tuned SQLite copy, built once and reused."""
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
        con.commit()
        con.close()
    con = sqlite3.connect(lite)
    for name, spec in PEER_INDEXES.items():
        con.execute(f"CREATE INDEX IF NOT EXISTS peer_{name} ON {spec}")
    con.execute("ANALYZE")
    con.commit()
    con.close()
    return duck, lite


def explain(lite: Path) -> list[str]:
    """SQLite's plan for each peer query shape (the index it uses)."""
    con = sqlite3.connect(lite)
    page = (
        "select * from flights where carrier = 'UA' and origin = 'EWR' and flight_date = "
        "'2013-03-01' order by scheduled_departure limit 101"  # Datasette 0.65's own SQL
    )
    plans = []
    for name, sql, args in (
        ("pages", page, {}),
        ("stats", PEER_STATS_SQL, {"a": "2013-03-01", "b": "2013-03-30"}),
    ):
        detail = "; ".join(r[3] for r in con.execute(f"EXPLAIN QUERY PLAN {sql}", args))
        plans.append(f"{name}: {detail}")
    con.close()
    return plans


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    # SystemExit unwinds the ExitStack, so a `timeout` or a kill stops every server it started.
    raise SystemExit(128 + signum)


def main() -> int:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / "build" / "bench-api")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for tool in ("wrk", "curl"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: apt-get install {tool}")
    started = dt.datetime.now(dt.UTC)
    load_before = os.getloadavg()[0]
    progress(f"loading nycflights13 into DuckDB and SQLite under {args.data_dir}")
    duck, lite = load(args.data_dir)
    rng = random.Random(13)
    filters = [(c, o, d.isoformat()) for c, o, d in page_filters(rng)]
    windows = [(d.isoformat(), (d + dt.timedelta(29)).isoformat()) for d in DAYS[:336]]
    rng.shuffle(windows)
    wh = DuckDBWarehouse(duck, read_only=True)
    ids = [r["flight_id"] for r in wh._query("SELECT flight_id FROM flights ORDER BY flight_id")]
    wh.close()
    tmp = Path(tempfile.mkdtemp())
    scripts = {
        ("pages", "ours"): lua(
            tmp, "pages-ours", [OURS_PAGE.format(c=c, o=o, d=d) for c, o, d in filters]
        ),
        ("pages", "peer"): lua(
            tmp, "pages-peer", [PEER_PAGE.format(c=c, o=o, d=d) for c, o, d in filters]
        ),
        ("stats", "ours"): lua(
            tmp, "stats-ours", [OURS_STATS.format(a=a, b=b) for a, b in windows]
        ),
        ("stats", "peer"): lua(
            tmp, "stats-peer", [PEER_STATS.format(a=a, b=b) for a, b in windows]
        ),
        ("flight", "ours"): lua(tmp, "flight", [f"/v1/flights/{i}" for i in rng.sample(ids, 5000)]),
        ("floor", "ours"): lua(tmp, "floor-ours", [FLOOR["ours"]]),
        ("floor", "peer"): lua(tmp, "floor-peer", [FLOOR["peer"]]),
    }
    (tmp / "api_app.py").write_text(API_APP)
    serve_dir = tmp / "serve"
    serve_dir.mkdir()
    shutil.copy(duck, serve_dir / duck.name)  # DuckDB: one writing process per file
    pythonpath = os.pathsep.join([str(tmp), str(ROOT), str(ROOT / "services/api")])
    ours_env = {
        "FLIGHTPIPE_LOG_LEVEL": "WARNING",
        "FLIGHTPIPE_API_KEYS": "",
        "FLIGHTPIPE_API_CACHE_TTL_SECONDS": "0",
        "PYTHONPATH": pythonpath,
    }
    threads = str(Settings().http_threads)  # the image's default (python -m flightpipe_api)
    ports = {name: free_port() for name in ("granian", "serve", "datasette")}
    bases = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    servers = {
        "granian": (
            [
                str(BIN / "granian"),
                "--interface",
                "wsgi",
                "--host",
                "127.0.0.1",
                "--port",
                str(ports["granian"]),
                "--workers",
                "1",
                "--blocking-threads",
                threads,
                "api_app:app",
            ],
            {**ours_env, "FLIGHTPIPE_DATA_DIR": str(duck.parent)},
            "/readyz",
        ),
        "serve": (
            [
                str(BIN / "flightpipe"),
                "serve",
                "--port",
                str(ports["serve"]),
                "--data-dir",
                str(serve_dir),
            ],
            ours_env,
            "/readyz",
        ),
        "datasette": (
            [
                str(BIN / "datasette"),
                "serve",
                "-i",
                str(lite),
                "--port",
                str(ports["datasette"]),
                "--setting",
                "sql_time_limit_ms",
                "10000",
                "--setting",
                "suggest_facets",
                "off",
                "--setting",
                "cache_size_kb",
                "200000",
            ],
            {},
            "/-/versions.json",
        ),
    }
    plans = explain(lite)
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    d = args.duration
    with ExitStack() as stack:
        for name, (command, env, probe) in servers.items():
            stack.enter_context(running(command, env, bases[name] + probe))
        progress("servers up; warming their caches")
        for name in servers:  # warm every server's caches once, outside the measurement
            side = "peer" if name == "datasette" else "ours"
            for scenario in ("pages", "stats"):
                wrk(bases[name], 2, scripts[(scenario, side)])
        for round_ in range(1, args.rounds + 1):
            for scenario in ("floor", "pages", "stats"):
                for name in servers:
                    side = "peer" if name == "datasette" else "ours"
                    runs.setdefault((scenario, name), []).append(
                        wrk(bases[name], d, scripts[(scenario, side)])
                    )
                    rate, p99 = runs[(scenario, name)][-1]
                    progress(
                        f"round {round_}/{args.rounds} {scenario} {name}: {rate:.0f} req/s, p99 {p99:.0f} ms"
                    )
            for name in ("granian", "serve"):
                flight = scripts[("flight", "ours")]
                runs.setdefault(("flight alone", name), []).append(
                    wrk(bases[name], d, flight, connections=4)
                )
                with exporting(bases[name] + EXPORT, tmp / f"exports-{name}.log", EXPORTERS):
                    runs.setdefault(("flight during exports", name), []).append(
                        wrk(bases[name], d, flight, connections=4)
                    )
    exported = {name: count_exports(tmp / f"exports-{name}.log") for name in ("granian", "serve")}
    report(args, started, load_before, runs=runs, plans=plans, exported=exported)
    return 0


def _median(values: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(v[0] for v in values), statistics.median(v[1] for v in values)


def report(
    args: argparse.Namespace,
    started: dt.datetime,
    load_before: float,
    *,
    runs: dict[tuple[str, str], list[tuple[float, float]]],
    plans: list[str],
    exported: dict[str, dict[str, int]],
) -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    print(
        f"`{' '.join(sys.argv)}` at {commit}, {started:%Y-%m-%d %H:%M} UTC, {platform.node()}, "
        f"{os.cpu_count()} CPUs, load average before {load_before:.2f}, Python "
        f"{platform.python_version()}; wrk {args.duration} s runs, {args.rounds} alternating "
        f"rounds, medians (each round in brackets)\n"
    )
    print("| scenario | server | req/s | p99 ms | ratio | rounds (req/s @ p99 ms) |")
    print("|---|---|---:|---:|---:|---|")
    for scenario in ("floor", "pages", "stats", "flight alone", "flight during exports"):
        peer = runs.get((scenario, "datasette"))
        for name in ("granian", "serve", "datasette"):
            if (scenario, name) not in runs:
                continue
            rate, p99 = _median(runs[(scenario, name)])
            ratio = f"{rate / max(_median(peer)[0], 1e-9):.2f}x" if peer else ""
            each = ", ".join(f"{r:,.0f} @ {p:.1f}" for r, p in runs[(scenario, name)])
            print(f"| {scenario} | {name} | {rate:,.0f} | {p99:.1f} | {ratio} | {each} |")
    print(f"\nExports completed during the measurements: {exported}")
    print("\nPeer plans: " + " | ".join(plans))
    print(f"Load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
