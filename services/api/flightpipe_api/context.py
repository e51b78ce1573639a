"""Where a request finds the warehouse: one instance per app, stored in `app.extensions`."""

from __future__ import annotations

from flask import current_app

from flightpipe.warehouse import Warehouse

WAREHOUSE_KEY = "flightpipe.warehouse"
SETTINGS_KEY = "flightpipe.settings"


def get_warehouse() -> Warehouse:
    """The app's warehouse (DuckDB or BigQuery)."""
    warehouse: Warehouse = current_app.extensions[WAREHOUSE_KEY]
    return warehouse
