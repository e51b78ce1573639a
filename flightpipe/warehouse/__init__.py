"""The warehouse port: store flight events idempotently and answer the API's queries.

Adapters: `DuckDBWarehouse` (embedded, one file) and `BigQueryWarehouse`. Both pass the same
contract tests (`tests/contract/test_warehouse_port.py`).

Rules every adapter keeps:
* `write` is all-or-nothing and idempotent on `event_id`: the same event written twice is
  stored once;
* the current state of a flight is its event with the latest `event_time` (ties: latest
  `publish_time`); an older event arriving later never replaces a newer one;
* every query takes bound parameters only; a failure the caller may retry raises
  `WarehouseUnavailable`.
"""

from __future__ import annotations

from flightpipe.warehouse.port import (
    DelayStats,
    Envelope,
    FlightFilter,
    PageKey,
    RowErrors,
    Selection,
    Warehouse,
    WarehouseError,
    WarehouseUnavailable,
)

__all__ = [
    "DelayStats",
    "Envelope",
    "FlightFilter",
    "PageKey",
    "RowErrors",
    "Selection",
    "Warehouse",
    "WarehouseError",
    "WarehouseUnavailable",
]
