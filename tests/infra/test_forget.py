"""infra/bootstrap/forget.py: the main stack forgets the dataset and accounts it no longer owns."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "bootstrap" / "forget.py"
_spec = importlib.util.spec_from_file_location("forget", SCRIPT)
assert _spec and _spec.loader
forget_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(forget_module)

P = "urn:pulumi:dev::flightpipe::"
DATASET = P + "flightpipe:infra:Warehouse$gcp:bigquery/dataset:Dataset::warehouse-dataset"
TABLE = P + "flightpipe:infra:Warehouse$gcp:bigquery/table:Table::warehouse-events"
ACCOUNT = P + "flightpipe:infra:Identity$gcp:serviceaccount/account:Account::identity-api"
SERVICE = P + "flightpipe:infra:Runtime$gcp:cloudrunv2/service:Service::runtime-api"
WAREHOUSE = P + "flightpipe:infra:Warehouse::warehouse"


def _checkpoint() -> dict[str, Any]:
    """The shape `pulumi stack export` writes (version 3), for the resources that matter."""
    return {
        "version": 3,
        "deployment": {
            "manifest": {"time": "2026-12-01T00:00:00Z", "version": "v3.200.0"},
            "resources": [
                {"urn": WAREHOUSE, "type": "flightpipe:infra:Warehouse", "custom": False},
                {
                    "urn": DATASET,
                    "type": "gcp:bigquery/dataset:Dataset",
                    "parent": WAREHOUSE,
                    "id": "projects/p/datasets/flights",
                },
                {
                    "urn": TABLE,
                    "type": "gcp:bigquery/table:Table",
                    "parent": WAREHOUSE,
                    "dependencies": [DATASET],
                    "propertyDependencies": {"datasetId": [DATASET], "project": []},
                },
                {"urn": ACCOUNT, "type": "gcp:serviceaccount/account:Account"},
                {
                    "urn": SERVICE,
                    "type": "gcp:cloudrunv2/service:Service",
                    "dependencies": [ACCOUNT, TABLE],
                    "propertyDependencies": {"template": [ACCOUNT]},
                    "deletedWith": ACCOUNT,
                },
            ],
        },
    }


TYPES = {"gcp:bigquery/dataset:Dataset", "gcp:serviceaccount/account:Account"}


def test_forgets_the_types_and_every_reference_to_them_and_nothing_else() -> None:
    result, dropped = forget_module.forget(_checkpoint(), TYPES)
    assert dropped == [DATASET, ACCOUNT]
    resources = {r["urn"]: r for r in result["deployment"]["resources"]}
    assert set(resources) == {WAREHOUSE, TABLE, SERVICE}
    assert resources[TABLE]["dependencies"] == []
    assert resources[TABLE]["propertyDependencies"] == {"datasetId": [], "project": []}
    assert resources[SERVICE]["dependencies"] == [TABLE]
    assert resources[SERVICE]["propertyDependencies"] == {"template": []}
    assert "deletedWith" not in resources[SERVICE]
    assert result["deployment"]["manifest"] == _checkpoint()["deployment"]["manifest"]
    assert result["version"] == 3


def test_refuses_to_forget_a_parent_or_a_resource_with_a_pending_operation() -> None:
    state = _checkpoint()
    with pytest.raises(forget_module.ForgetError, match="child of"):
        forget_module.forget(state, {"flightpipe:infra:Warehouse"})
    state["deployment"]["pendingOperations"] = [{"resource": {"urn": DATASET}, "type": "creating"}]
    with pytest.raises(forget_module.ForgetError, match="pending"):
        forget_module.forget(state, TYPES)


def test_command_line_writes_the_result_and_fails_cleanly_on_a_bad_file(tmp_path: Path) -> None:
    state = tmp_path / "dev.json"
    state.write_text(json.dumps(_checkpoint()))
    ok = subprocess.run(
        [sys.executable, str(SCRIPT), str(state), *sorted(TYPES)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert len(json.loads(ok.stdout)["deployment"]["resources"]) == 3
    assert ok.stderr.count("forgot ") == 2
    (tmp_path / "bad.json").write_text("{}")
    bad = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "bad.json"), "x"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("forget.py: not a `pulumi stack export` checkpoint")
    assert len(bad.stderr.strip().splitlines()) == 1
