"""`BigQueryWarehouse`: the warehouse port on BigQuery (table `events`, view `flights_current`).

Writes use the streaming `insertAll` API with `insertId = event_id` (BigQuery drops a repeated
insertId on a best-effort basis; the view deduplicates by `event_id` for good). A batch is split
into requests under 9 MB and 50,000 rows. Each request is tried once, bounded by `write_timeout`:
a transient failure (429, 5xx, rate limits, a request hanging past the timeout, connection errors)
raises `WarehouseUnavailable` at once and the caller, which owns the messages' leases and keeps
them extended, retries the batch (one retry layer; retrying here for minutes inside the
subscriber's own loop would let leases lapse). `retry=None` turns off the client's own retry
(`google.cloud.bigquery.Client.insert_rows_json(retry=DEFAULT_RETRY, timeout=...)`: "How to
retry the RPC", "The number of seconds to wait for the underlying HTTP transport before using
retry"). Retrying a batch re-sends the same insertIds. Rows BigQuery rejects (`insertErrors`) do not
stop the others (`skipInvalidRows`): `write` then raises `RowErrors` naming each rejected event
and its reason; every other row of the batch is stored.

Reads are parameterised queries on `flights_current` through `jobs.query` in the short-query mode
(`JOB_CREATION_OPTIONAL`), with a `maximumBytesBilled` cap, a job timeout and the query cache.
Their SQL lives in `bigquery_sql` and is also run on DuckDB by the test suite.

`write` returns how many rows BigQuery accepted; unlike DuckDB it cannot tell a duplicate apart.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, TypeVar

import msgspec
import requests
from google.api_core import exceptions as gexc
from google.cloud import bigquery

from flightpipe import retry, telemetry
from flightpipe.warehouse import bigquery_sql, query
from flightpipe.warehouse.port import (
    DelayStats,
    Envelope,
    FlightFilter,
    GroupBy,
    RowErrors,
    Selection,
    WarehouseError,
    WarehouseUnavailable,
)

__all__ = ["BigQueryWarehouse", "RowErrors"]

log = logging.getLogger(__name__)
T = TypeVar("T")

# insertAll allows 10 MB and 50,000 rows per request
# (https://cloud.google.com/bigquery/quotas#streaming_inserts).
MAX_REQUEST_BYTES: Final = 9_000_000
MAX_REQUEST_ROWS: Final = 50_000
# Per-row overhead of the request around the row's JSON: {"insertId": "...", "json": ...},
_ROW_OVERHEAD: Final = 32
_TRANSIENT: Final = (
    gexc.TooManyRequests,
    gexc.InternalServerError,
    gexc.BadGateway,
    gexc.ServiceUnavailable,
    gexc.GatewayTimeout,
    gexc.DeadlineExceeded,
    requests.ConnectionError,
    requests.Timeout,
)
# BigQuery answers some throttling with 403 and one of these reasons.
_THROTTLE_REASONS: Final = frozenset({"rateLimitExceeded", "backendError"})
_encoder: Final = msgspec.json.Encoder()


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _TRANSIENT):
        return True
    if isinstance(exc, gexc.Forbidden):
        return any(e.get("reason") in _THROTTLE_REASONS for e in exc.errors or ())
    return False


@contextmanager
def _port_errors(what: str) -> Iterator[None]:
    """Raise BigQuery's errors as the port's: transient ones as WarehouseUnavailable."""
    try:
        yield
    except Exception as exc:
        if _is_transient(exc) or isinstance(exc, TimeoutError):
            raise WarehouseUnavailable(f"BigQuery {what}: {exc}") from exc
        if isinstance(exc, gexc.GoogleAPIError):
            raise WarehouseError(f"BigQuery {what}: {exc}") from exc
        raise


def _row(envelope: Envelope, ingest_time: str) -> dict[str, Any]:
    row: dict[str, Any] = msgspec.to_builtins(envelope.event)
    row["message_id"] = envelope.message_id
    row["publish_time"] = envelope.publish_time.astimezone(dt.UTC).isoformat()
    row["ingest_time"] = ingest_time
    return row


def _chunks(
    rows: list[dict[str, Any]], ids: list[str], max_bytes: int, max_rows: int
) -> Iterator[tuple[list[dict[str, Any]], list[str]]]:
    """Split rows into requests under `max_bytes` (estimated from the rows' JSON) and `max_rows`."""
    start, size = 0, 0
    for i, row in enumerate(rows):
        row_size = len(_encoder.encode(row)) + len(ids[i]) + _ROW_OVERHEAD
        if i > start and (size + row_size > max_bytes or i - start >= max_rows):
            yield rows[start:i], ids[start:i]
            start, size = i, 0
        size += row_size
    if start < len(rows):
        yield rows[start:], ids[start:]


class BigQueryWarehouse:
    """The warehouse port on BigQuery (see the module docstring)."""

    def __init__(
        self,
        *,
        project: str,
        dataset: str,
        location: str = "US",
        max_bytes_billed: int = 1_000_000_000,
        query_timeout: float = 10.0,
        client: bigquery.Client | None = None,
        write_timeout: float = 60.0,
        backoff_initial: float = 0.5,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_request_rows: int = MAX_REQUEST_ROWS,
    ) -> None:
        self.project = project
        self.location = location
        self.max_bytes_billed = max_bytes_billed
        self.query_timeout = query_timeout
        self.events_table = bigquery_sql.table_ref(project, dataset, bigquery_sql.EVENTS_TABLE)
        self.view = bigquery_sql.table_ref(project, dataset, bigquery_sql.CURRENT_VIEW)
        self._insert_table = f"{project}.{dataset}.{bigquery_sql.EVENTS_TABLE}"
        self._client = client or bigquery.Client(project=project, location=location)
        # Short queries may skip creating a job: lower latency, and no job quota spent.
        self._client.default_job_creation_mode = "JOB_CREATION_OPTIONAL"
        self._write_timeout = write_timeout
        self._backoff_initial = backoff_initial
        self._max_request_bytes = max_request_bytes
        self._max_request_rows = max_request_rows

    # --- calls ---------------------------------------------------------------------------------

    def _read(self, call: Callable[[], T]) -> T:
        """Run a read, retried once on a transient error within the query's time budget."""

        def retried(state: retry.RetryState) -> None:
            log.warning("retrying BigQuery query", extra={"attempt": state.attempt_number})

        with _port_errors("query"):
            return retry.retrying(
                _is_transient,
                initial=self._backoff_initial,
                max_wait=8.0,
                attempts=2,
                budget=self.query_timeout,
                on_retry=retried,
            )(call)

    # --- writes ------------------------------------------------------------------------------

    def write(self, batch: Sequence[Envelope]) -> int:
        """Stream the batch into `events`; return rows accepted; raise RowErrors for rejects."""
        if not batch:
            return 0
        ingest_time = dt.datetime.now(dt.UTC).isoformat()
        rows = [_row(e, ingest_time) for e in batch]
        ids = [e.event.event_id for e in batch]
        errors: dict[str, str] = {}
        for chunk_rows, chunk_ids in _chunks(
            rows, ids, self._max_request_bytes, self._max_request_rows
        ):
            with _port_errors("insertAll"):
                result = self._client.insert_rows_json(
                    self._insert_table,
                    chunk_rows,
                    row_ids=chunk_ids,
                    skip_invalid_rows=True,
                    # One attempt: the subscriber, which keeps the leases, retries the batch
                    # (None is accepted at runtime).
                    retry=None,  # type: ignore[arg-type]
                    timeout=self._write_timeout,
                )
            for failure in result:
                reasons = [
                    f"{e.get('reason', 'invalid')}: {e.get('message', '')}".strip()
                    for e in failure.get("errors", ())
                ]
                errors[chunk_ids[int(failure["index"])]] = "; ".join(reasons) or "invalid"
        written = len(batch) - len(errors)
        if errors:
            log.warning("BigQuery rejected rows", extra={"rejected": len(errors)})
            raise RowErrors(errors, written)
        return written

    # --- reads -------------------------------------------------------------------------------

    def _query(self, statement: bigquery_sql.Query) -> list[dict[str, Any]]:
        config = self._job_config(statement)

        def run() -> list[dict[str, Any]]:
            with telemetry.WAREHOUSE_QUERY_SECONDS.labels(adapter="bigquery").time():
                rows = self._run(statement.sql, config)
                result = [dict(row.items()) for row in rows]
            telemetry.WAREHOUSE_BYTES_PROCESSED.inc(rows.total_bytes_processed or 0)
            return result

        return self._read(run)

    def _run(self, sql: str, config: bigquery.QueryJobConfig, page_size: int | None = None) -> Any:
        return self._client.query_and_wait(
            sql,
            job_config=config,
            location=self.location,
            api_timeout=self.query_timeout,
            wait_timeout=self.query_timeout,
            retry=None,  # type: ignore[arg-type]
            job_retry=None,  # type: ignore[arg-type]
            page_size=page_size,
        )

    def _job_config(self, statement: bigquery_sql.Query) -> bigquery.QueryJobConfig:
        return bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter(p.name, p.type, p.value) for p in statement.params
            ],
            maximum_bytes_billed=self.max_bytes_billed,
            use_query_cache=True,
            job_timeout_ms=int(self.query_timeout * 1000),
        )

    def list_flights(self, selection: Selection) -> list[dict[str, Any]]:
        """The current states `selection` picks, by (sort field, flight_id)."""
        return self._query(bigquery_sql.list_flights(self.view, selection))

    def export_flights(
        self, selection: Selection, *, fmt: query.ExportFormat = "csv", chunk: int = 5000
    ) -> Generator[bytes, None, None]:
        """`list_flights`' rows rendered `chunk` at a time, from one query's result."""
        names = query.checked_columns(selection.columns)
        sql = bigquery_sql.list_flights(self.view, selection)
        return self._export(sql, names, fmt, max(1, chunk))

    def _export(
        self, sql: bigquery_sql.Query, columns: Sequence[str], fmt: query.ExportFormat, chunk: int
    ) -> Generator[bytes, None, None]:
        # One query; its result is read page by page (RowIterator.pages: the first page comes
        # with jobs.query, the next ones by pageToken from the same result, so one snapshot).
        config = self._job_config(sql)
        rows = self._read(lambda: self._run(sql.sql, config, page_size=chunk))
        telemetry.WAREHOUSE_BYTES_PROCESSED.inc(rows.total_bytes_processed or 0)
        pages = iter(rows.pages)
        while True:
            # Not retried: a page is read from the same result, and a failure ends the export.
            with _port_errors("export"):
                page = next(pages, None)
            if page is None:
                return
            yield query.render_rows([dict(row.items()) for row in page], columns, fmt)

    def get_flight(self, flight_id: str) -> dict[str, Any] | None:
        """The current state of one flight, or None."""
        rows = self._query(bigquery_sql.get_flight(self.view, flight_id))
        return rows[0] if rows else None

    def flight_events(self, flight_id: str) -> list[dict[str, Any]]:
        """Every distinct stored event of one flight, in event-time order."""
        return self._query(bigquery_sql.flight_events(self.events_table, flight_id))

    def delay_stats(
        self, flt: FlightFilter, group_by: GroupBy | Sequence[GroupBy]
    ) -> list[DelayStats]:
        """Delay statistics over current states, one row per group, ordered by the group keys."""
        fields = query.group_fields(group_by)
        rows = self._query(bigquery_sql.delay_stats(self.view, flt, group_by))
        return [query.delay_stats_row(r, fields) for r in rows]

    def newest_publish_time(self) -> dt.datetime | None:
        """The newest committed publish_time: the ingest watermark (None while empty)."""
        rows = self._query(bigquery_sql.newest_publish_time(self.events_table))
        return bigquery_sql.as_utc(rows[0]["t"]) if rows else None

    def count_events(self) -> int:
        """How many distinct events are stored (by `event_id`)."""
        rows = self._query(bigquery_sql.count_events(self.events_table))
        return int(rows[0]["n"]) if rows else 0

    def ping(self) -> None:
        """Raise WarehouseUnavailable unless a trivial query succeeds."""
        try:
            self._query(bigquery_sql.PING)
        except WarehouseError as exc:
            raise WarehouseUnavailable(str(exc)) from exc

    def close(self) -> None:
        """Release the HTTP session."""
        self._client.close()  # type: ignore[no-untyped-call]
