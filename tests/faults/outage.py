"""Warehouses that fail on demand: DuckDB behind a switch, and a fake BigQuery endpoint.

`SwitchedDuckDB` is the real DuckDB adapter whose writes fail while `outage` is set: at once
("down", like a 503) or after blocking for the write timeout ("hang", like a request that never
answers). `FakeBigQuery` is an HTTP endpoint the real google-cloud-bigquery client talks to: it
answers insertAll with 503, or hangs past the client's timeout, while its outage is on, and
counts every insertId it accepted (so a duplicate write is seen, not assumed).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from flightpipe.warehouse import Envelope, WarehouseUnavailable
from flightpipe.warehouse.bigquery import BigQueryWarehouse
from flightpipe.warehouse.duckdb import DuckDBWarehouse

PROJECT = "flightpipe-faults"
DATASET = "flights"


class SwitchedDuckDB(DuckDBWarehouse):
    """DuckDB whose writes fail while `outage` is set; counts rows written and new."""

    def __init__(self, path: Path, mode: str, hang_seconds: float) -> None:
        super().__init__(path)
        self.mode = mode
        self.hang_seconds = hang_seconds
        self.outage = threading.Event()
        self.rows_written = 0
        self.rows_new = 0
        self.failed_writes = 0

    def write(self, batch: Sequence[Envelope]) -> int:
        if self.outage.is_set():
            self.failed_writes += 1
            if self.mode == "hang":
                time.sleep(self.hang_seconds)
                raise WarehouseUnavailable(f"injected: write timed out after {self.hang_seconds} s")
            raise WarehouseUnavailable("injected: warehouse down (503)")
        new = super().write(batch)
        self.rows_written += len(batch)
        self.rows_new += new
        return new


class FakeBigQuery:
    """The insertAll endpoint, with an outage switch and a count of accepted insertIds."""

    def __init__(self, mode: str, hang_seconds: float) -> None:
        self.mode = mode
        self.hang_seconds = hang_seconds
        self.outage = threading.Event()
        self.accepted: Counter[str] = Counter()
        self.failed_requests = 0
        self._lock = threading.Lock()

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.outage.is_set():
            with self._lock:
                self.failed_requests += 1
            if self.mode == "hang":
                time.sleep(self.hang_seconds)  # the client has given up by now
            return 503, {
                "error": {
                    "code": 503,
                    "message": "injected: backend unavailable",
                    "errors": [{"reason": "backendError", "message": "injected"}],
                }
            }
        with self._lock:
            self.accepted.update(row["insertId"] for row in body.get("rows", ()))
        return 200, {"kind": "bigquery#tableDataInsertAllResponse"}


@contextmanager
def fake_bigquery(mode: str, hang_seconds: float) -> Iterator[tuple[FakeBigQuery, str]]:
    state = FakeBigQuery(mode, hang_seconds)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            status, answer = state.answer(json.loads(self.rfile.read(length) or b"{}"))
            data = json.dumps(answer).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the client timed out first

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def bigquery_warehouse(url: str, write_timeout: float) -> BigQueryWarehouse:
    """The real adapter and client, pointed at the fake endpoint."""
    client = bigquery.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": url},
    )
    return BigQueryWarehouse(
        project=PROJECT, dataset=DATASET, client=client, write_timeout=write_timeout
    )
