"""Per-request cost of parsing the API's query strings into the endpoints' query Structs.

    .venv/bin/python bench/api_parse.py

Times werkzeug's query-string parse (MultiDict, as Flask's `request.args` builds it) plus
`params.parse_query` and the cross-parameter rules, for a typical /v1/flights query (7 parameters)
and a /v1/stats/delays query (4). Prints microseconds per request, best of 7 x 20,000.
"""

from __future__ import annotations

import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "services" / "api"))

from flightpipe_api.params import FlightsQuery, StatsQuery, parse_query  # noqa: E402
from werkzeug.datastructures import MultiDict  # noqa: E402

LIST = (
    "carrier=UA&origin=EWR&date_from=2013-03-01&date_to=2013-03-01&limit=100"
    "&sort=-dep_delay_min&fields=flight_id,carrier,dep_delay_min"
)
STATS = "date_from=2013-03-01&date_to=2013-03-31&group_by=carrier,origin&min_dep_delay=0"


def parse_list() -> None:
    query = parse_query(MultiDict(parse_qsl(LIST)), FlightsQuery)
    query.flight_filter()
    query.limit_for("json")


def parse_stats() -> None:
    parse_query(MultiDict(parse_qsl(STATS)), StatsQuery).flight_filter()


def main() -> int:
    cases: tuple[tuple[str, Callable[[], None]], ...] = (
        ("list", parse_list),
        ("stats", parse_stats),
    )
    for name, call in cases:
        n = 20_000
        best = min(timeit.repeat(call, number=n, repeat=7))
        print(f"{name}: {best / n * 1e6:.2f} us per request (best of 7 x {n})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
