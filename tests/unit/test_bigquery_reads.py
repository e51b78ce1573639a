"""BigQueryWarehouse reads: the real client library's jobs.query requests to the fake endpoint
(tests/unit/fake_bigquery.py): parameterised short queries on the view, the bytes-billed cap, the
job timeout, retries, result parsing and the paged export.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from flightpipe.warehouse import FlightFilter, WarehouseError, WarehouseUnavailable
from flightpipe.warehouse.bigquery import BigQueryWarehouse
from flightpipe.warehouse.port import Selection
from tests.unit import fake_bigquery as bq
from tests.unit.fake_bigquery import FakeBigQuery, fake, warehouse

__all__ = ["fake", "warehouse"]  # fixtures used by name
# The scheduled departure of the rows the fake answers with.
DEPARTURE = dt.datetime(2013, 1, 1, 10, 15, tzinfo=dt.UTC)


def test_list_flights_sends_a_parameterised_capped_short_query_on_the_view(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    state.query_schema = bq.schema(
        ("flight_id", "STRING"),
        ("flight_date", "DATE"),
        ("scheduled_departure", "TIMESTAMP"),
        ("dep_delay_min", "INTEGER"),
        ("tail_number", "STRING"),
    )
    state.query_rows = [
        {
            "flight_id": "2013-01-01-UA1545-EWR",
            "flight_date": "2013-01-01",
            "scheduled_departure": bq.micros(DEPARTURE),
            "dep_delay_min": "2",
            "tail_number": None,
        }
    ]
    flt = FlightFilter(date_from=dt.date(2013, 1, 1), carrier="UA", status="arrived")

    rows = warehouse.list_flights(Selection(flt, 50, after=(DEPARTURE, "2013-01-01-AA1-JFK")))

    assert rows == [
        {
            "flight_id": "2013-01-01-UA1545-EWR",
            "flight_date": dt.date(2013, 1, 1),
            "scheduled_departure": DEPARTURE,
            "dep_delay_min": 2,
            "tail_number": None,
        }
    ]
    (body,) = state.bodies(bq.QUERY_PATH)
    assert f"FROM `{bq.PROJECT}.{bq.DATASET}.flights_current`" in body["query"]
    assert body["jobCreationMode"] == "JOB_CREATION_OPTIONAL"
    assert body["maximumBytesBilled"] == "123000000"
    assert body["jobTimeoutMs"] == "5000"
    assert body["useQueryCache"] is True
    assert body["useLegacySql"] is False
    assert body["location"] == "EU"
    assert body["parameterMode"] == "NAMED"
    params = bq.parameters(body)
    assert params == {
        "date_from": ("DATE", "2013-01-01"),
        "carrier": ("STRING", "UA"),
        "status": ("STRING", "arrived"),
        "after_value": ("TIMESTAMP", "2013-01-01 10:15:00+00:00"),
        "after_flight_id": ("STRING", "2013-01-01-AA1-JFK"),
        "limit": ("INT64", "50"),
    }
    for value in ("UA", "arrived", "2013-01-01", "AA1"):
        assert value not in body["query"]  # values travel only as parameters


def test_get_flight_binds_the_id_and_its_date_and_returns_none_when_no_row(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    state.query_schema = bq.schema(("flight_id", "STRING"))

    assert warehouse.get_flight("2013-01-01-UA1545-EWR") is None

    (body,) = state.bodies(bq.QUERY_PATH)
    # The date predicate lets BigQuery prune the view's scan to one partition.
    assert "flight_date = @flight_date" in body["query"]
    assert body["queryParameters"] == [
        {
            "name": "flight_id",
            "parameterType": {"type": "STRING"},
            "parameterValue": {"value": "2013-01-01-UA1545-EWR"},
        },
        {
            "name": "flight_date",
            "parameterType": {"type": "DATE"},
            "parameterValue": {"value": "2013-01-01"},
        },
    ]


def test_delay_stats_groups_by_the_allowed_key_and_parses_the_numbers(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    state.query_schema = bq.schema(("carrier", "STRING"), *bq.STATS_SCHEMA)
    state.query_rows = [
        {
            "carrier": "AA",
            "flights": "4",
            "cancelled": "1",
            "avg_dep_delay_min": "3.5",
            "avg_arr_delay_min": None,
            "median_dep_delay_min": "2",
            "p90_dep_delay_min": "9.5",
        },
    ]

    (stats,) = warehouse.delay_stats(FlightFilter(origin="JFK"), "carrier")

    assert (stats.key, stats.flights, stats.cancelled) == ({"carrier": "AA"}, 4, 1)
    assert (stats.avg_dep_delay_min, stats.avg_arr_delay_min, stats.on_time_rate) == (
        3.5,
        None,
        None,
    )
    assert (stats.median_dep_delay_min, stats.p90_dep_delay_min) == (2.0, 9.5)
    assert (stats.median_arr_delay_min, stats.p90_arr_delay_min) == (None, None)
    (body,) = state.bodies(bq.QUERY_PATH)
    assert "GROUP BY carrier ORDER BY carrier" in body["query"]
    assert "PERCENTILE_CONT(dep_delay_min, 0.9) OVER (PARTITION BY carrier)" in body["query"]
    assert [p["name"] for p in body["queryParameters"]] == ["origin"]


def test_delay_stats_groups_by_a_pair_and_by_hour_of_day(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    state.query_schema = bq.schema(("carrier", "STRING"), ("hour", "INTEGER"), *bq.STATS_SCHEMA)
    state.query_rows = [{"carrier": "UA", "hour": "7", "flights": "2", "cancelled": "0"}]

    (stats,) = warehouse.delay_stats(FlightFilter(), ("carrier", "hour"))

    assert stats.key == {"carrier": "UA", "hour": 7}
    (body,) = state.bodies(bq.QUERY_PATH)
    assert "EXTRACT(HOUR FROM scheduled_departure) AS hour" in body["query"]
    assert "GROUP BY carrier, hour ORDER BY carrier, hour" in body["query"]


def test_flight_events_reads_the_events_table_pruned_to_the_flight_date(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    state.query_schema = bq.schema(("event_id", "STRING"))
    state.query_rows = [{"event_id": "a"}, {"event_id": "b"}]

    assert warehouse.flight_events("2013-01-01-UA1545-EWR") == [
        {"event_id": "a"},
        {"event_id": "b"},
    ]

    (body,) = state.bodies(bq.QUERY_PATH)
    assert f"FROM `{bq.PROJECT}.{bq.DATASET}.events`" in body["query"]
    params = bq.parameters(body)
    assert params == {
        "flight_id": ("STRING", "2013-01-01-UA1545-EWR"),
        "flight_date": ("DATE", "2013-01-01"),
    }


def test_delay_stats_rejects_an_unknown_group_without_querying(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    with pytest.raises(WarehouseError):
        warehouse.delay_stats(FlightFilter(), "tail_number; DROP TABLE x")  # type: ignore[arg-type]
    assert fake[0].requests == []


def test_newest_publish_time_reads_the_events_table_as_utc(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    state.query_schema = bq.schema(("t", "TIMESTAMP"))
    state.query_rows = [{"t": bq.micros(bq.PUBLISHED)}]

    assert warehouse.newest_publish_time() == bq.PUBLISHED

    (body,) = state.bodies(bq.QUERY_PATH)
    assert f"FROM `{bq.PROJECT}.{bq.DATASET}.events`" in body["query"]


def test_newest_publish_time_is_none_while_the_table_is_empty(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    state.query_schema = bq.schema(("t", "TIMESTAMP"))
    state.query_rows = [{"t": None}]

    assert warehouse.newest_publish_time() is None


def test_query_retries_a_server_error_once(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    state.query_schema = bq.schema(("ok", "INTEGER"))
    state.query_rows = [{"ok": "1"}]
    state.script[bq.QUERY_PATH] = [bq.error(500, "backendError")]

    warehouse.ping()

    assert len(state.bodies(bq.QUERY_PATH)) == 2


@pytest.mark.parametrize("failure", [bq.error(503, "backendError"), bq.error(400, "invalidQuery")])
def test_ping_raises_unavailable_when_bigquery_fails(
    fake: tuple[FakeBigQuery, str],
    warehouse: BigQueryWarehouse,
    failure: tuple[int, dict[str, Any]],
) -> None:
    fake[0].script[bq.QUERY_PATH] = [failure] * 5

    with pytest.raises(WarehouseUnavailable):
        warehouse.ping()


def test_bytes_billed_cap_exceeded_is_a_permanent_query_error(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    fake[0].script[bq.QUERY_PATH] = [bq.error(400, "bytesBilledLimitExceeded")]

    with pytest.raises(WarehouseError) as caught:
        warehouse.list_flights(Selection(FlightFilter(), 10))

    assert not isinstance(caught.value, WarehouseUnavailable)
    assert len(fake[0].bodies(bq.QUERY_PATH)) == 1


def test_an_export_is_one_query_read_in_pages_and_rendered_like_the_api(
    fake: tuple[FakeBigQuery, str], warehouse: BigQueryWarehouse
) -> None:
    state, _ = fake
    state.query_schema = bq.schema(
        ("flight_id", "STRING"), ("scheduled_departure", "TIMESTAMP"), ("tail_number", "STRING")
    )
    state.query_rows = [
        {"flight_id": "2013-01-01-UA1545-EWR", "scheduled_departure": bq.micros(DEPARTURE)},
        {"flight_id": "2013-01-01-UA1546-EWR", "scheduled_departure": bq.micros(DEPARTURE)},
    ]
    columns = ["flight_id", "scheduled_departure", "tail_number"]

    export = warehouse.export_flights(
        Selection(FlightFilter(carrier="UA"), 100_000, columns=columns), chunk=500
    )
    assert state.bodies(bq.QUERY_PATH) == []  # lazy: nothing sent before the first piece is asked
    pieces = list(export)

    assert pieces == [
        b"2013-01-01-UA1545-EWR,2013-01-01T10:15:00Z,\r\n"
        b"2013-01-01-UA1546-EWR,2013-01-01T10:15:00Z,\r\n"
    ]
    (body,) = state.bodies(bq.QUERY_PATH)  # one query for the whole export
    assert body["maxResults"] == 500 and body["queryParameters"]
    assert f"FROM `{bq.PROJECT}.{bq.DATASET}.flights_current`" in body["query"]
