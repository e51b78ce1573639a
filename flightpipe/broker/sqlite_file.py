"""`SqliteFile`: one SQLite file in WAL mode, shared by the threads and processes of a machine.

What `EmbeddedBroker` stores its tables in; it knows nothing of topics or messages.
* Durability: WAL with synchronous=NORMAL. A committed transaction is in the WAL file before
  `write` returns, so a killed process (SIGKILL) loses nothing it committed; a power loss may lose
  the last commits, which the local mode accepts (Pub/Sub is the durable broker). FULL would add
  an fsync to every commit for no gain against process crashes
  (https://www.sqlite.org/pragma.html#pragma_synchronous).
* Concurrency: one connection per thread; every change is one short `BEGIN IMMEDIATE` transaction.
  A writer that finds the lock taken retries every millisecond (up to `busy_timeout` seconds, then
  `BrokerError`), rather than SQLite's backing-off busy handler, which starves a publisher next to
  a busy subscriber. `close()` closes the connections of every thread; call it when they are done.
* Errors: every SQLite error is raised as `BrokerError` with SQLite's extended code.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

import msgspec

from flightpipe.broker import BrokerError

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_LOCK_RETRY: Final = 0.001
# SQLite's own busy wait, kept short: lock waits are retried by `_retrying` instead.
_SQLITE_BUSY_WAIT: Final = 0.005
_encode_ids: Final = msgspec.json.Encoder().encode


class SqliteFile:
    """Per-thread connections to one SQLite file, write transactions retried on a taken lock."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 30.0) -> None:
        self._path = str(path)
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise BrokerError("broker is closed")
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves so the write lock is taken at
        # the start of a transaction, never upgraded halfway (which can deadlock across processes).
        conn = sqlite3.connect(
            self._path, timeout=_SQLITE_BUSY_WAIT, isolation_level=None, check_same_thread=False
        )
        # Switching a new file to WAL needs a brief exclusive lock, hence the retry.
        self._retrying(lambda: conn.execute("PRAGMA journal_mode=WAL"))
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA cache_size=-65536")
        conn.execute("PRAGMA journal_size_limit=67108864")
        self._local.conn = conn
        with self._lock:
            self._connections.append(conn)
        return conn

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection inside one `BEGIN IMMEDIATE` transaction, committed on exit."""
        conn = self._conn()
        self._retrying(lambda: conn.execute("BEGIN IMMEDIATE"))
        try:
            yield conn
        except BaseException as exc:
            _rollback(conn)
            if isinstance(exc, sqlite3.Error):
                raise BrokerError(_describe(exc)) from exc
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise BrokerError(f"commit failed: {_describe(exc)}") from exc

    def _retrying(self, operation: Callable[[], _T]) -> _T:
        # SQLite's own busy handler backs off to sleeps of up to 100 ms (sqliteDefaultBusyCallback,
        # sqlite/sqlite src/main.c), so a process waiting for the write lock keeps missing the
        # short gaps between another process's back-to-back transactions and starves. Retrying
        # every millisecond here is fair enough and costs one failed lock attempt each.
        give_up = time.monotonic() + self._busy_timeout
        while True:
            try:
                return operation()
            except sqlite3.OperationalError as exc:
                if time.monotonic() > give_up or "locked" not in str(exc):
                    raise BrokerError(_describe(exc)) from exc
            except sqlite3.Error as exc:
                raise BrokerError(_describe(exc)) from exc
            time.sleep(_LOCK_RETRY)

    def read_one(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """The first row of a query outside any transaction."""
        conn = self._conn()
        row: tuple[Any, ...] | None = self._retrying(lambda: conn.execute(sql, params).fetchone())
        return row

    def close(self) -> None:
        """Close every connection this file opened, in any thread."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()


def in_ids(column: str, ids: Sequence[int]) -> tuple[str, tuple[int | bytes, ...]]:
    """An SQL condition selecting `ids` in `column`, and its parameters."""
    # A batch is usually one run of consecutive ids: one range seek is cheaper than looking up
    # each id (a list of ranges joined by OR would make SQLite scan the subscription).
    low, high = min(ids, default=0), max(ids, default=-1)
    if high - low + 1 == len(ids) and len(set(ids)) == len(ids):
        return f"{column} BETWEEN ? AND ?", (low, high)
    return f"{column} IN (SELECT value FROM json_each(?))", (_encode_ids(ids),)


def _describe(exc: sqlite3.Error) -> str:
    """SQLite's message plus its extended code (`disk I/O error (SQLITE_IOERR_WRITE)`)."""
    name = getattr(exc, "sqlite_errorname", None)
    return f"{exc} ({name})" if name else str(exc)


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back without replacing the error that brought us here (see DuckDB's `_rollback`)."""
    if not conn.in_transaction:
        return
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        log.debug("rollback failed: %s", exc)
