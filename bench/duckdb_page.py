"""Where one API page's time goes inside DuckDB: the filter, the sort, and each column fetched.

The page is `DuckDBWarehouse.list_flights`'s own SQL (`duckdb_sql.page` and `READ_COLUMNS`) for
distinct (carrier, origin, one day) filters, limit 100, on one DuckDB thread as the API runs it;
every variant runs the same filters, interleaved, and the medians are printed:
* `filter only`: `count(*)` under the page's WHERE (the scan of the filter columns);
* `sort keys`: the page's ORDER BY ... LIMIT selecting only `flight_id`;
* `page`: the full page as the adapter runs it (all 21 columns, the API's default);
* `page, late materialization off`: the same with `late_materialization_max_rows = 0`;
* `first N columns, no sort`: the matching rows' first N contract columns, without ORDER BY or
  LIMIT (how the cost grows with the columns fetched).

    .venv/bin/python bench/duckdb_page.py [--data-dir build/bench-api] [--pages 300]

Reads the DuckDB file bench/api.py builds (run that first). Prints Markdown for
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import duckdb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# bench/api.py's pages (this script's folder is on sys.path when run as above).
from api import page_filters  # noqa: E402

from flightpipe import contract  # noqa: E402
from flightpipe.warehouse import duckdb_sql  # noqa: E402
from flightpipe.warehouse import query as q  # noqa: E402
from flightpipe.warehouse.port import FlightFilter, Selection  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT / "build" / "bench-api")
    parser.add_argument("--pages", type=int, default=300)
    args = parser.parse_args()
    path = args.data_dir / "warehouse.duckdb"
    if not path.exists():
        sys.exit(f"{path} is missing: run bench/api.py --data-dir {args.data_dir} first")
    filters = page_filters(random.Random(13))[: args.pages]
    con = duckdb.connect(str(path), read_only=True, config={"threads": 1})
    con.execute("SET TimeZone = 'UTC'")  # as DuckDBWarehouse's cursors

    # Each variant: (SELECT list, whether it takes the page's ORDER BY ... LIMIT).
    variants: dict[str, tuple[str, bool]] = {
        "filter only": ("count(*)", False),
        "sort keys": ("flight_id", True),
        "page": (duckdb_sql.READ_COLUMNS, True),
        "page, late materialization off": (duckdb_sql.READ_COLUMNS, True),
    }
    names = contract.COLUMN_NAMES
    for n in (1, 5, 10, 15, len(names)):
        variants[f"first {n} columns, no sort"] = (duckdb_sql.select(names[:n]), False)
    times: dict[str, list[float]] = {name: [] for name in variants}
    matched: list[int] = []
    for c, o, d in filters:
        flt = FlightFilter(carrier=c, origin=o, date_from=d, date_to=d)
        ordered, page_params = duckdb_sql.page(Selection(flt, 100))
        clauses, bound = q.where(flt, "$")
        unordered = f"FROM flights WHERE {' AND '.join(clauses)}"
        params: dict[str, Any] = {b.name: b.value for b in bound}
        for name, (columns, paged) in variants.items():
            off = name == "page, late materialization off"
            if off:
                con.execute("SET late_materialization_max_rows = 0")
            sql = f"SELECT {columns} {ordered if paged else unordered}"
            start = time.perf_counter()
            result = con.execute(sql, page_params if paged else params).fetchall()
            times[name].append(time.perf_counter() - start)
            if off:
                con.execute("RESET late_materialization_max_rows")
            if name == "filter only":
                matched.append(int(result[0][0]))
    con.close()
    medians = {name: statistics.median(values) * 1e3 for name, values in times.items()}
    print(
        f"`{' '.join(sys.argv)}`: {len(filters)} distinct pages, DuckDB {duckdb.__version__}, "
        f"{statistics.mean(matched):.1f} matching rows per page on average\n"
    )
    print("| variant | median ms |")
    print("|---|---:|")
    for name, value in medians.items():
        print(f"| {name} | {value:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
