"""The unit tests' fakes are their ports: mypy --strict on tests/fakes.py proves it.

`tests/fakes.py` ends with `_typed`, which returns each fake as its port; a missing or mistyped
method fails mypy here, so no test needs `type: ignore` to pass a fake to the subscriber.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from flightpipe.broker import Broker
from flightpipe.warehouse import Warehouse
from flightpipe.warehouse.duckdb import DuckDBWarehouse
from tests.fakes import FakeBroker, FlakyWarehouse

ROOT = Path(__file__).resolve().parents[2]


def test_the_fakes_type_check_against_their_ports() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "tests/fakes.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_fakes_are_their_ports_at_runtime(tmp_path: Path) -> None:
    warehouse = FlakyWarehouse(DuckDBWarehouse(tmp_path / "w.duckdb"))
    try:
        assert isinstance(FakeBroker(), Broker)
        assert isinstance(warehouse, Warehouse)
    finally:
        warehouse.close()
