"""A local fake of the two BigQuery REST methods the adapter calls, for the real client library.

It answers tabledata.insertAll and jobs.query and records every request, so the tests assert what
would reach BigQuery: insert ids, table names, parameter names and types, the bytes-billed cap,
the job timeout and the job-creation mode. The fixtures `fake` and `warehouse` are imported by
name by the test modules that use them.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from flightpipe.warehouse import Envelope
from flightpipe.warehouse.bigquery import BigQueryWarehouse
from flightpipe.warehouse.port import STATISTICS
from tests import rpc_log
from tests.factories import make_event

PROJECT = "flightpipe-test"
DATASET = "flights"
INSERT_PATH = f"/bigquery/v2/projects/{PROJECT}/datasets/{DATASET}/tables/events/insertAll"
QUERY_PATH = f"/bigquery/v2/projects/{PROJECT}/queries"
PUBLISHED = dt.datetime(2013, 1, 1, 15, 0, tzinfo=dt.UTC)
# The statistics as BigQuery types their columns (COUNT: INTEGER; AVG, PERCENTILE_CONT: FLOAT).
STATS_SCHEMA = [(n, "INTEGER" if n in ("flights", "cancelled") else "FLOAT") for n in STATISTICS]


@dataclass
class Recorded:
    method: str
    path: str
    body: dict[str, Any]


@dataclass
class FakeBigQuery:
    """Scripted answers per path (consumed in order, then a default) and the requests seen.

    The default answers have the shapes of BigQuery's REST reference: tabledata.insertAll answers
    `{"kind": "bigquery#tableDataInsertAllResponse"}` without `insertErrors` when every row is
    stored (https://cloud.google.com/bigquery/docs/reference/rest/v2/tabledata/insertAll);
    jobs.query answers a `bigquery#queryResponse` with `jobComplete`, `schema`, `totalRows` and
    `rows` of `{"f": [{"v": ...}]}` (https://cloud.google.com/bigquery/docs/reference/rest/v2/jobs/query).
    """

    requests: list[Recorded] = field(default_factory=list)
    script: dict[str, list[tuple[int, dict[str, Any]]]] = field(default_factory=dict)
    query_rows: list[dict[str, Any]] = field(default_factory=list)
    query_schema: list[dict[str, str]] = field(default_factory=list)
    delay_seconds: float = 0.0  # answer insertAll this late (a hanging BigQuery)

    def answer(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.requests.append(Recorded(method, path, body))
        rpc_log.record_rest(method, path)  # for the IAM table check
        scripted = self.script.get(path)
        if scripted:
            return scripted.pop(0)
        if path.endswith("/insertAll"):
            return 200, {"kind": "bigquery#tableDataInsertAllResponse"}
        if path == QUERY_PATH:
            return 200, self._query_response()
        return 404, {"error": {"code": 404, "message": f"no route {path}", "errors": []}}

    def _query_response(self) -> dict[str, Any]:
        names = [f["name"] for f in self.query_schema]
        return {
            "kind": "bigquery#queryResponse",
            "jobComplete": True,
            "queryId": "fake-query-id",
            "schema": {"fields": self.query_schema},
            "totalRows": str(len(self.query_rows)),
            "rows": [{"f": [{"v": row.get(n)} for n in names]} for row in self.query_rows],
        }

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.path == path]


def error(status: int, reason: str) -> tuple[int, dict[str, Any]]:
    return status, {
        "error": {
            "code": status,
            "message": f"fake {reason}",
            "errors": [{"reason": reason, "message": f"fake {reason}"}],
        }
    }


@pytest.fixture
def fake() -> Iterator[tuple[FakeBigQuery, str]]:
    """The fake endpoint on a local port (werkzeug's WSGI server), and its URL."""
    state = FakeBigQuery()

    @Request.application
    def app(request: Request) -> Response:
        status, answer = state.answer(request.method, request.path, request.get_json(force=True))
        if state.delay_seconds:
            time.sleep(state.delay_seconds)
        return Response(json.dumps(answer), status=status, content_type="application/json")

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def client(url: str) -> bigquery.Client:
    """The real client library, anonymous, sending to the fake endpoint at `url`."""
    return bigquery.Client(
        project=PROJECT,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": url},
    )


@pytest.fixture
def warehouse(fake: tuple[FakeBigQuery, str]) -> Iterator[BigQueryWarehouse]:
    wh = BigQueryWarehouse(
        project=PROJECT,
        dataset=DATASET,
        location="EU",
        max_bytes_billed=123_000_000,
        query_timeout=5.0,
        client=client(fake[1]),
        write_timeout=5.0,
        backoff_initial=0.01,
    )
    yield wh
    wh.close()


def envelopes(n: int) -> list[Envelope]:
    return [Envelope(make_event(), f"msg-{i}", PUBLISHED) for i in range(n)]


def schema(*names_types: tuple[str, str]) -> list[dict[str, str]]:
    return [{"name": n, "type": t, "mode": "NULLABLE"} for n, t in names_types]


def micros(value: dt.datetime) -> str:
    return str(int(value.timestamp() * 1_000_000))


def parameters(body: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """A jobs.query request's parameters by name: (type, value as sent)."""
    return {
        p["name"]: (p["parameterType"]["type"], p["parameterValue"]["value"])
        for p in body["queryParameters"]
    }
