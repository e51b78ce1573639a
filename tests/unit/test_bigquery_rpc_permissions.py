"""Every BigQuery REST method the warehouse adapter really sends is in the IAM table.

The real google-cloud-bigquery client talks to the fake endpoint of tests/unit/fake_bigquery.py,
which notes each request it serves (tests/rpc_log.py), here and in the tests that ran before this
module in the same process. Each of the adapter's operations runs once; a method missing from
`RPC_PERMISSIONS` in tests/infra/iam_calls.py fails here.
"""

from __future__ import annotations

import datetime as dt

from flightpipe.warehouse import Envelope, FlightFilter
from flightpipe.warehouse.bigquery import BigQueryWarehouse
from flightpipe.warehouse.port import Selection
from tests import rpc_log
from tests.factories import make_event
from tests.infra.iam_calls import RPC_PERMISSIONS
from tests.unit.fake_bigquery import fake, warehouse

__all__ = ["fake", "warehouse"]  # fixtures used by name


def test_every_bigquery_method_the_adapter_sends_is_in_the_iam_table(
    warehouse: BigQueryWarehouse,
) -> None:
    published = dt.datetime(2013, 1, 1, 15, 0, tzinfo=dt.UTC)
    warehouse.write([Envelope(make_event(), "m-1", published)])
    warehouse.list_flights(Selection(FlightFilter(), 10))
    warehouse.get_flight("F1")
    warehouse.flight_events("F1")
    warehouse.delay_stats(FlightFilter(), "carrier")
    warehouse.newest_publish_time()
    warehouse.ping()

    bigquery = {m for m in rpc_log.RECORDED if m.startswith("bigquery")}
    assert {"bigquery.tabledata.insertAll", "bigquery.jobs.query"} <= bigquery
    assert not sorted(bigquery - set(RPC_PERMISSIONS))
