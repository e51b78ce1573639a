"""The Prometheus rules are valid and their unit tests pass, run by the real promtool.

observability/prometheus/rules_test.yml (and rules_test_slow_burn.yml) hold the behaviour: series
that make every alert fire and series where it must stay quiet. This module runs them in pytest so
a broken rule fails the suite. promtool is Debian's `prometheus` package; without it the tests
skip, except with CI=true where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

PROM_DIR = Path(__file__).resolve().parents[2] / "observability" / "prometheus"
RULE_TESTS = ("rules_test.yml", "rules_test_slow_burn.yml")


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        reason = "promtool not found: install it with `apt-get install -y prometheus`"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    return path


def _run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], cwd=PROM_DIR, capture_output=True, text=True, timeout=120, check=False
    )


def test_rules_file_passes_promtool_check(promtool: str) -> None:
    result = _run(promtool, "check", "rules", "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_example_scrape_config_and_its_rules_are_valid(promtool: str) -> None:
    result = _run(promtool, "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_and_stays_quiet_as_the_rule_unit_tests_expect(promtool: str) -> None:
    result = _run(promtool, "test", "rules", *RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_in_the_rules_has_a_firing_case_in_the_unit_tests() -> None:
    # A new alert without a test would pass promtool silently; this keeps the promise that each
    # alert has series that make it fire.
    import yaml

    rules = yaml.safe_load((PROM_DIR / "rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    fired: set[str] = set()
    quiet: set[str] = set()
    for name in RULE_TESTS:
        for test in yaml.safe_load((PROM_DIR / name).read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                (fired if case.get("exp_alerts") else quiet).add(case["alertname"])
    assert alerts - fired == set(), "alerts with no firing test case"
    assert alerts - quiet == set(), "alerts with no quiet test case"
