"""Fixtures shared by every test package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flightpipe.warehouse.duckdb import DuckDBWarehouse


@pytest.fixture
def duckdb_warehouse(tmp_path: Path) -> Iterator[DuckDBWarehouse]:
    """A real DuckDB warehouse in a file of its own."""
    warehouse = DuckDBWarehouse(tmp_path / "warehouse.duckdb")
    yield warehouse
    warehouse.close()
