"""DuckDB adapter of the warehouse port: one file, columnar bulk writes, current state on write.

Tables (DDL derived from `flightpipe.contract`):
* `events`: append-only, one row per distinct `event_id` (a redelivery or re-publish of the same
  event is skipped inside the same transaction that stores the batch);
* `flights`: the current state per `flight_id`, updated in that transaction with only the newly
  stored events, and only where the new event is newer (event_time, then publish_time). Keeping it
  as a table rather than a window-function view keeps API reads at a few milliseconds.

DuckDB allows one writing process per file; the API alone may open the file read-only. Every query
binds its values as parameters. The SQL text itself (DDL, write steps, reads, the export's row
rendering) is in `duckdb_sql`; this module runs it: cursors, transactions, timeouts, errors.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import duckdb
import numpy as np

from flightpipe import contract, telemetry
from flightpipe.warehouse import duckdb_sql, duckdb_upgrade
from flightpipe.warehouse import query as q
from flightpipe.warehouse.duckdb_sql import TYPES, columns_ddl

# A name of this module on purpose: `write` looks it up at each call, and the fault-injection
# subscriber (tests/faults/subscriber_with_faults.py) replaces it here to stall a write.
from flightpipe.warehouse.duckdb_sql import write_steps as _write_steps
from flightpipe.warehouse.port import (
    DelayStats,
    Envelope,
    FlightFilter,
    GroupBy,
    Selection,
    WarehouseError,
    WarehouseUnavailable,
)
from flightpipe.warehouse.watchdog import WATCHDOG

__all__ = ["TYPES", "DuckDBWarehouse", "columns_ddl"]

log = logging.getLogger(__name__)
# Errors a later attempt may not meet (WarehouseUnavailable): I/O, a transaction conflict, memory,
# an interrupt (the query timeout's watchdog), a closed connection.
_TRANSIENT: Final = (
    duckdb.IOException,
    duckdb.TransactionException,
    duckdb.OutOfMemoryException,
    duckdb.InterruptException,
    duckdb.ConnectionException,
)
# Parsed read statements kept per thread (see DuckDBWarehouse._parsed).
_PARSED_PER_THREAD: Final = 256


def _rollback(cur: duckdb.DuckDBPyConnection) -> None:
    """Roll back after a failed statement without hiding why it failed.

    A failed COMMIT (a full disk: the WAL cannot grow) has already ended the transaction, and
    ROLLBACK then raises "cannot rollback - no transaction is active", which would replace the
    real error in the traceback and the logs. The caller re-raises the original error.
    """
    try:
        cur.execute("ROLLBACK")
    except duckdb.Error as exc:
        log.debug("rollback after a failed write: %s", exc)


def _attach_utc(rows: list[dict[str, Any]], naive: Sequence[str]) -> None:
    """Naive timestamps are UTC (see `duckdb_sql.select`): attach the zone in place."""
    for row in rows:
        for name in naive:
            value = row[name]
            if value is not None:
                row[name] = value.replace(tzinfo=dt.UTC)


class DuckDBWarehouse:
    """The embedded warehouse (see the module docstring)."""

    def __init__(
        self,
        path: str | Path,
        *,
        read_only: bool = False,
        query_timeout: float = 10.0,
        memory_limit: str = "96MB",
        threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self.query_timeout = query_timeout
        try:
            self._conn = duckdb.connect(str(self.path), read_only=read_only)
            self._conn.execute("SET TimeZone = 'UTC'")
            # Bounded memory: DuckDB's buffer pool defaults to 80 % of RAM; the subscriber must stay
            # small next to a large backlog (pages beyond the limit are evicted, not lost).
            self._conn.execute(f"SET memory_limit = '{memory_limit}'")
            if threads is not None:
                self._conn.execute(f"SET threads = {int(threads)}")
            # A checkpoint rewrites the changed row groups of both tables; at the default 16 MB
            # of WAL (https://duckdb.org/docs/stable/configuration/overview) it would run every
            # few batches and dominate ingest. The WAL keeps commits durable in between; DuckDB
            # checkpoints on close and at this threshold.
            self._conn.execute("SET checkpoint_threshold = '1GB'")
            if not read_only:
                for statement in duckdb_sql.schema_sql():
                    self._conn.execute(statement)
                duckdb_upgrade.upgrade(self._conn)  # an earlier release's data dir
        except duckdb.Error as exc:
            raise WarehouseUnavailable(f"cannot open {self.path}: {exc}") from exc
        self._local = threading.local()
        self._write_lock = threading.Lock()

    # --- connections -------------------------------------------------------------------------

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        """One cursor per thread: DuckDB connections are not shared across threads."""
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._conn.cursor()
            cur.execute("SET TimeZone = 'UTC'")
            self._local.cursor = cur
            self._local.statements = {}
        return cur

    def _parsed(self, cur: duckdb.DuckDBPyConnection, sql: str) -> duckdb.Statement:
        """`sql` parsed once per thread, then reused with new parameters.

        Parsing a 21-column SELECT is a sizeable share of an API page's warehouse time
        (docs/benchmarks.md); executing a parsed statement skips it (binding and planning still run
        per call, so the parameters' values still steer the plan). The text comes only from
        `duckdb_sql`'s templates, so the distinct texts are few; the bound keeps an odd caller
        finite.
        """
        statements: dict[str, duckdb.Statement] = self._local.statements
        statement = statements.get(sql)
        if statement is None:
            if len(statements) >= _PARSED_PER_THREAD:
                statements.clear()
            (statement,) = cur.extract_statements(sql)
            statements[sql] = statement
        return statement

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except _TRANSIENT as exc:
            raise WarehouseUnavailable(str(exc).splitlines()[0]) from exc
        except duckdb.Error as exc:
            raise WarehouseError(str(exc).splitlines()[0]) from exc

    def _query(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[dict[str, Any]]:
        with self._errors():  # a closed connection refuses even a new thread's cursor
            cur = self._cursor()
        # DuckDB has no statement timeout; the watchdog interrupts the cursor instead.
        with (
            WATCHDOG.guard(self.query_timeout, cur.interrupt),
            self._errors(),
            telemetry.WAREHOUSE_QUERY_SECONDS.labels(adapter="duckdb").time(),
        ):
            cur.execute(
                self._parsed(cur, sql),
                dict(params) if isinstance(params, Mapping) else list(params),
            )
            description = cur.description or ()
            names = [d[0] for d in description]
            rows = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        _attach_utc(rows, [d[0] for d in description if d[1] == "TIMESTAMP"])
        return rows

    # --- writes ------------------------------------------------------------------------------

    @staticmethod
    def _columns(batch: Sequence[Envelope]) -> dict[str, np.ndarray[Any, Any]]:
        """The batch as three columns DuckDB scans in place.

        Normalised JSON (msgspec re-encodes the validated event) parsed column-wise by DuckDB is
        cheaper than building 18 typed columns from Python objects. NumPy rather than Arrow:
        pyarrow's conversion of Python lists imports pandas, and pyarrow itself costs memory in
        the subscriber for no speed gain (docs/benchmarks.md).
        """
        return {
            "payload": np.array([contract.encode_event(e.event).decode() for e in batch], object),
            "message_id": np.array([e.message_id for e in batch], object),
            "publish_us": np.array(
                [round(e.publish_time.timestamp() * 1_000_000) for e in batch], np.int64
            ),
        }

    def write(self, batch: Sequence[Envelope]) -> int:
        """Store the batch in one transaction; return how many events were new."""
        if self.read_only:
            raise WarehouseError("this warehouse was opened read-only")
        if not batch:
            return 0
        columns = self._columns(batch)
        steps = _write_steps(
            distinct_events=len({e.event.event_id for e in batch}) == len(batch),
            distinct_flights=len({e.event.flight_id for e in batch}) == len(batch),
        )
        with self._write_lock, self._errors():
            cur = self._cursor()
            cur.register("incoming", columns)
            try:
                cur.execute("BEGIN TRANSACTION")
                try:
                    for statement in steps:
                        cur.execute(statement)
                    row = cur.execute("SELECT count(*) FROM fresh").fetchone()
                    cur.execute("COMMIT")
                except BaseException:
                    _rollback(cur)
                    raise
            finally:
                cur.unregister("incoming")
        return int(row[0]) if row else 0

    # --- reads -------------------------------------------------------------------------------

    def list_flights(self, selection: Selection) -> list[dict[str, Any]]:
        """The current states `selection` picks, by (sort field, flight_id)."""
        return self._query(*duckdb_sql.list_flights(selection))

    def export_flights(
        self, selection: Selection, *, fmt: q.ExportFormat = "csv", chunk: int = 5000
    ) -> Generator[bytes, None, None]:
        """`list_flights`' rows rendered as `q.render_rows` does, `chunk` rows per piece.

        One query on one snapshot, read as the client takes it: the export's own cursor in a
        read transaction (DuckDB's MVCC: the export sees the data as of its start, whatever the
        subscriber commits meanwhile), its streaming result fetched `chunk` rows at a time, so
        memory stays at a chunk. DuckDB renders each row's text itself (`duckdb_sql.rendered`), so
        Python only joins rendered lines instead of converting every value to a Python object and
        encoding it again while holding the GIL (docs/benchmarks.md). Nothing runs until the
        first `next()`; the cursor is closed when the generator ends or is closed.
        """
        text, params = duckdb_sql.export(selection, fmt)
        return self._export(text, params, max(1, chunk))

    def _export(
        self, text: str, params: dict[str, Any], chunk: int
    ) -> Generator[bytes, None, None]:
        with self._errors():
            cur = self._conn.cursor()
        try:
            with WATCHDOG.guard(self.query_timeout, cur.interrupt), self._errors():
                cur.execute("SET TimeZone = 'UTC'")
                cur.execute("BEGIN TRANSACTION")
                cur.execute(text, params)
            while True:
                # Each fetch gets the query timeout afresh: a slow client is not a slow query.
                with WATCHDOG.guard(self.query_timeout, cur.interrupt), self._errors():
                    fetched = cur.fetchmany(chunk)
                if not fetched:
                    return
                yield "".join([row[0] for row in fetched]).encode()
                if len(fetched) < chunk:
                    return
        finally:
            try:
                cur.execute("ROLLBACK")
            except duckdb.Error as exc:
                log.debug("closing an export's transaction: %s", exc)
            cur.close()

    def get_flight(self, flight_id: str) -> dict[str, Any] | None:
        """The current state of one flight, or None (pruned to its date: `duckdb_sql.BY_ID`)."""
        rows = self._query(
            f"SELECT {duckdb_sql.READ_COLUMNS} FROM flights WHERE {duckdb_sql.BY_ID}",
            duckdb_sql.id_params(flight_id),
        )
        return rows[0] if rows else None

    def flight_events(self, flight_id: str) -> list[dict[str, Any]]:
        """Every stored event of one flight, in event-time order (pruned to its date)."""
        return self._query(
            f"SELECT {duckdb_sql.READ_COLUMNS} FROM events WHERE {duckdb_sql.BY_ID}"
            " ORDER BY event_time, publish_time, event_id",
            duckdb_sql.id_params(flight_id),
        )

    def delay_stats(
        self, flt: FlightFilter, group_by: GroupBy | Sequence[GroupBy]
    ) -> list[DelayStats]:
        """Delay statistics over current states, one row per group, ordered by the group keys."""
        fields = q.group_fields(group_by)
        rows = self._query(*duckdb_sql.delay_stats(flt, fields))
        return [q.delay_stats_row(duckdb_sql.unpack_quantiles(r), fields) for r in rows]

    def newest_publish_time(self) -> dt.datetime | None:
        """The newest committed publish_time (the ingest watermark)."""
        rows = self._query("SELECT max(publish_time) AS t FROM events")
        value = rows[0]["t"] if rows else None
        return value if isinstance(value, dt.datetime) else None

    def count_events(self) -> int:
        """How many distinct events are stored."""
        return int(self._query("SELECT count(*) AS n FROM events")[0]["n"])

    def ping(self) -> None:
        """Raise WarehouseUnavailable unless a trivial query succeeds."""
        try:
            self._query("SELECT 1 AS ok")
        except WarehouseError as exc:
            raise WarehouseUnavailable(str(exc)) from exc

    def close(self) -> None:
        """Close the connection (cursors of other threads die with it)."""
        self._conn.close()
