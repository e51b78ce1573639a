"""BigQueryWarehouse writes: the real client library's tabledata.insertAll requests to the fake
endpoint (tests/unit/fake_bigquery.py): insert ids, request splitting, one attempt per request,
rejected rows by event id.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from flightpipe.contract import COLUMN_NAMES
from flightpipe.warehouse import WarehouseError, WarehouseUnavailable
from flightpipe.warehouse.bigquery import BigQueryWarehouse, RowErrors
from tests.unit import fake_bigquery as bq
from tests.unit.fake_bigquery import FakeBigQuery, fake, warehouse

__all__ = ["fake", "warehouse"]  # fixtures used by name


def test_write_streams_rows_to_the_events_table_with_event_id_as_insert_id(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    batch = bq.envelopes(3)

    assert warehouse.write(batch) == 3

    (body,) = state.bodies(bq.INSERT_PATH)
    assert body["skipInvalidRows"] is True
    assert [r["insertId"] for r in body["rows"]] == [e.event.event_id for e in batch]
    first = body["rows"][0]["json"]
    assert set(first) == set(COLUMN_NAMES)
    assert first["message_id"] == "msg-0"
    assert first["flight_id"] == batch[0].event.flight_id
    assert dt.datetime.fromisoformat(first["publish_time"]) == bq.PUBLISHED
    assert dt.datetime.fromisoformat(first["scheduled_departure"]) == (
        batch[0].event.scheduled_departure
    )
    assert first["flight_date"] == "2013-01-01"
    assert dt.datetime.fromisoformat(first["ingest_time"]).tzinfo is not None


def test_write_splits_a_batch_into_requests_under_the_byte_and_row_limits(
    fake: tuple[FakeBigQuery, str],
) -> None:
    state, url = fake
    wh = BigQueryWarehouse(
        project=bq.PROJECT,
        dataset=bq.DATASET,
        client=bq.client(url),
        max_request_bytes=3000,
        max_request_rows=4,
    )
    batch = bq.envelopes(10)

    assert wh.write(batch) == 10

    bodies = state.bodies(bq.INSERT_PATH)
    assert len(bodies) >= 3
    assert all(len(b["rows"]) <= 4 for b in bodies)
    assert all(len(json.dumps(b)) < 3000 for b in bodies)
    sent = [r["insertId"] for b in bodies for r in b["rows"]]
    assert sent == [e.event.event_id for e in batch]
    wh.close()


@pytest.mark.parametrize(
    "failure",
    [bq.error(500, "backendError"), bq.error(429, "rateLimitExceeded"), bq.error(503, "x")],
)
def test_a_transient_error_is_unavailable_after_one_request_and_a_retry_resends_the_ids(
    fake: tuple[FakeBigQuery, str],
    warehouse: BigQueryWarehouse,
    failure: tuple[int, dict[str, Any]],
) -> None:
    # One retry layer: the adapter tries once; the subscriber (which keeps the leases) retries.
    state, _ = fake
    state.script[bq.INSERT_PATH] = [failure]
    batch = bq.envelopes(2)

    with pytest.raises(WarehouseUnavailable):
        warehouse.write(batch)
    assert len(state.bodies(bq.INSERT_PATH)) == 1
    assert warehouse.write(batch) == 2

    bodies = state.bodies(bq.INSERT_PATH)
    assert len(bodies) == 2
    # The same insert ids again, so BigQuery can deduplicate.
    assert [r["insertId"] for r in bodies[0]["rows"]] == [r["insertId"] for r in bodies[1]["rows"]]


def test_a_request_hanging_past_the_write_timeout_is_unavailable(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    state.delay_seconds = 1.5
    warehouse._write_timeout = 0.3

    with pytest.raises(WarehouseUnavailable, match="insertAll"):
        warehouse.write(bq.envelopes(1))
    assert len(state.bodies(bq.INSERT_PATH)) == 1


def test_write_reports_rejected_rows_by_event_id_and_stores_the_rest(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    batch = bq.envelopes(3)
    state.script[bq.INSERT_PATH] = [
        (
            200,
            {
                "insertErrors": [
                    {"index": 1, "errors": [{"reason": "invalid", "message": "no such field"}]}
                ]
            },
        )
    ]

    with pytest.raises(RowErrors) as caught:
        warehouse.write(batch)

    assert caught.value.errors == {batch[1].event.event_id: "invalid: no such field"}
    assert caught.value.written == 2
    assert len(state.bodies(bq.INSERT_PATH)) == 1  # a row error is permanent: no retry


def test_write_to_a_missing_table_is_a_permanenterror(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    state.script[bq.INSERT_PATH] = [bq.error(404, "notFound")]

    with pytest.raises(WarehouseError) as caught:
        warehouse.write(bq.envelopes(1))

    assert not isinstance(caught.value, WarehouseUnavailable)
    assert len(state.bodies(bq.INSERT_PATH)) == 1


def test_empty_write_sends_nothing(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    assert warehouse.write([]) == 0
    assert fake[0].requests == []
