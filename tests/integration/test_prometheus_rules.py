"""The Prometheus rules are valid and their unit tests pass, run by the real promtool.

observability/prometheus/rules_test.yml (and rules_test_slow_burn.yml) hold the behaviour: series
that make every alert fire and series where it must stay quiet. This module runs them in pytest so
a broken rule fails the suite. promtool is Debian's `prometheus` package; without it the tests
skip, except with CI=true where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.first_scrape import samples, scrapes

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


# Scrape times, in minutes: the fresh process is scraped at 0, 1 and 2, the traffic happens just
# before 3, then every minute shows the counts after it.
_BEFORE, _AFTER = 3, 12
_READ = re.compile(r"(?<![:\w])flightpipe_[a-z0-9_]+(?![:\w])")


def _input_series(before: str, after: str) -> list[dict[str, str]]:
    """promtool input series replaying two real scrapes; `_` where a series does not exist yet."""
    read = set(_READ.findall((PROM_DIR / "rules.yml").read_text(encoding="utf-8")))
    old = {(n, labels): v for n, labels, v in samples(before) if n in read}
    new = {(n, labels): v for n, labels, v in samples(after) if n in read}
    series = []
    for key in sorted(old.keys() | new.keys(), key=str):
        name, labels = key
        selector = ",".join(f'{k}="{v}"' for k, v in sorted(labels))
        first = str(old[key]) if key in old else "_"
        values = [first] * _BEFORE + [str(new.get(key, "_"))] * _AFTER
        series.append({"series": f"{name}{{{selector}}}", "values": " ".join(values)})
    return series


def _run_generated(promtool: str, tmp_path: Path, test: dict[str, object]) -> str:
    main = yaml.safe_load((PROM_DIR / "rules_test.yml").read_text(encoding="utf-8"))
    body = {
        "rule_files": [str(PROM_DIR / "rules.yml")],
        "evaluation_interval": "1m",
        "group_eval_order": main["group_eval_order"],
        "tests": [{"interval": "1m", **test}],
    }
    path = tmp_path / "generated_test.yml"
    path.write_text(yaml.safe_dump(body), encoding="utf-8")
    result = _run(promtool, "test", "rules", str(path))
    return "" if result.returncode == 0 else result.stdout + result.stderr


def test_a_first_burst_of_poison_after_a_real_start_fires_dead_letter_rate_high(
    promtool: str, tmp_path: Path
) -> None:
    # The subscriber's own /metrics before any message and after 200 valid and 20 malformed
    # ones: the alert must see the burst although it is the process's first.
    before, after = scrapes("subscriber", 200, 20)
    failure = _run_generated(
        promtool,
        tmp_path,
        {
            "input_series": _input_series(before, after),
            "promql_expr_test": [
                {
                    "expr": 'ALERTS{alertname="DeadLetterRateHigh"}',
                    "eval_time": "5m",
                    "exp_samples": [
                        {
                            "labels": 'ALERTS{alertname="DeadLetterRateHigh",'
                            'alertstate="firing",severity="ticket"}',
                            "value": 1,
                        }
                    ],
                }
            ],
        },
    )
    assert failure == ""


def test_the_api_5xx_ratio_is_zero_not_missing_when_no_request_failed(
    promtool: str, tmp_path: Path
) -> None:
    before, after = scrapes("api", 20)
    failure = _run_generated(
        promtool,
        tmp_path,
        {
            "input_series": _input_series(before, after),
            "promql_expr_test": [
                {
                    "expr": "flightpipe:api_5xx_ratio:rate5m",
                    "eval_time": "4m",
                    "exp_samples": [{"labels": "flightpipe:api_5xx_ratio:rate5m", "value": 0}],
                },
                {
                    "expr": "flightpipe:slo_availability_burn_rate:5m",
                    "eval_time": "4m",
                    "exp_samples": [
                        {"labels": "flightpipe:slo_availability_burn_rate:5m", "value": 0}
                    ],
                },
            ],
        },
    )
    assert failure == ""
