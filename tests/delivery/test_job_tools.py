"""Each GitLab job runs with its image's tools only, and its tests need nothing more.

The rehearsal (tests/delivery/pipeline_jobs.py, `make ci-jobs`) runs every job on the host, which
may have gcloud, Java, npm and Chromium; the jobs' image has none of them. So the rehearsal gives
each job a PATH without the tools its image lacks and its before_script does not install
(`job_path`, tests/delivery/ci_local.py), and these tests check, in seconds, what a whole
rehearsal would find in minutes:
* that PATH: no gcloud for unit-tests, the tools system-deps.sh installs for integration-tests;
* `make test-unit`'s selection, collected as the unit-tests job runs it (CI=true, that PATH, no
  emulator service), holds no case that needs the Pub/Sub emulator, `make test-integration`'s
  holds every one of them, and `make test` deselects nothing, so each still runs once.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.delivery.ci_local import INSTALLS, denied_tools, job_path

REPO = Path(__file__).resolve().parents[2]
SOME_DENIED = ("gcloud", "java", "npm", "gitlab-ci-local", "promtool", "chromium", "gcc")

# Loaded by the collecting pytest (-p): prints every selected case whose fixtures would reach the
# emulator: the contract broker fixture's factory for it, or the emulator fixtures themselves.
PROBE = """
from tests.contract.conftest import BROKERS
from tests.pubsub_emulator import pubsub_factory

EMULATOR_FIXTURES = {"pubsub_emulator", "pubsub_broker"}


def pytest_collection_finish(session):
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        broker = callspec.params.get("broker") if callspec else None
        if EMULATOR_FIXTURES & set(item.fixturenames) or BROKERS.get(broker) is pubsub_factory:
            print("NEEDS-EMULATOR", item.nodeid)
        else:
            print("NO-EMULATOR", item.nodeid)
"""


def _config() -> dict[str, object]:
    loaded: dict[str, object] = yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())
    return loaded


def _paths(tmp_path: Path, job: str) -> tuple[Path, str]:
    """A host PATH with every denied tool on it, and the job's PATH made from it."""
    host_tools = tmp_path / "host-bin"
    host_tools.mkdir(parents=True)
    for name in (*SOME_DENIED, "make", "python3"):
        tool = host_tools / name
        tool.write_text("#!/bin/sh\nexit 0\n")
        tool.chmod(0o755)
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copy(REPO / ".gitlab-ci.yml", clone / ".gitlab-ci.yml")
    host = os.pathsep.join([str(host_tools), os.environ["PATH"]])
    return host_tools, job_path(clone, job, host)


def test_the_unit_tests_job_finds_no_gcloud_and_only_what_its_scripts_install(
    tmp_path: Path,
) -> None:
    _, path = _paths(tmp_path, "unit-tests")
    for name in SOME_DENIED:
        assert shutil.which(name, path=path) is None, f"unit-tests would find {name}"
    # ci_bootstrap.sh installs make; the image has Python.
    assert shutil.which("make", path=path) is not None
    assert shutil.which("python3", path=path) is not None


def test_the_integration_job_finds_what_system_deps_installs_and_still_no_gcloud(
    tmp_path: Path,
) -> None:
    _, path = _paths(tmp_path, "integration-tests")
    assert shutil.which("promtool", path=path) is not None
    assert shutil.which("chromium", path=path) is not None
    for name in ("gcloud", "java", "npm", "gitlab-ci-local"):
        assert shutil.which(name, path=path) is None, f"integration-tests would find {name}"


def test_what_each_script_is_said_to_install_it_checks_for() -> None:
    for script, tools in INSTALLS.items():
        text = (REPO / script).read_text()
        checked = set(re.findall(r"command -v \"?([\w.-]+)", text))
        looped = re.findall(r"for tool in ([^;]+);", text)
        checked |= {t for line in looped for t in line.split()}
        assert tools <= checked | {"prometheus"}, (script, tools - checked)
    # Every job starts with ci_bootstrap.sh; none may see gcloud.
    config = _config()
    jobs = [k for k, v in config.items() if isinstance(v, dict) and "stage" in v]
    assert jobs and all("gcloud" in denied_tools(config, job) for job in jobs)


def _make_pytest_argv(target: str) -> list[str]:
    """The pytest command `make <target>` runs (make -n: printed, not run)."""
    out = subprocess.run(
        ["make", "-n", target], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    (line,) = [ln for ln in out.splitlines() if re.match(r"\S*/pytest(\s|$)", ln)]
    return shlex.split(line)


def _collect(target: str, tmp_path: Path, path: str) -> dict[str, set[str]]:
    """Collect `make <target>`'s selection as its job would run it: CI=true, no emulator."""
    (tmp_path / "emulator_probe.py").write_text(PROBE)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTEST_ADDOPTS", "FLIGHTPIPE_TEST_PUBSUB_EMULATOR_HOST"}
    }
    env |= {"CI": "true", "PATH": path, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
    argv = _make_pytest_argv(target)
    done = subprocess.run(
        [*argv, "--collect-only", "-q", "-p", "emulator_probe", "-p", "no:cacheprovider"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found: dict[str, set[str]] = {"NEEDS-EMULATOR": set(), "NO-EMULATOR": set()}
    for line in done.stdout.splitlines():
        kind, _, node = line.partition(" ")
        if kind in found:
            found[kind].add(node)
    return found


@pytest.mark.timeout(600)
def test_make_test_unit_selects_no_case_that_needs_the_emulator(tmp_path: Path) -> None:
    _, path = _paths(tmp_path, "unit-tests")
    unit = _collect("test-unit", tmp_path, path)
    assert unit["NO-EMULATOR"], "test-unit selected nothing"
    assert not unit["NEEDS-EMULATOR"], sorted(unit["NEEDS-EMULATOR"])

    # Where they run instead: the job that has the emulator as a service.
    _, path = _paths(tmp_path / "integration", "integration-tests")
    integration = _collect("test-integration", tmp_path, path)
    contract = {n for n in integration["NEEDS-EMULATOR"] if n.startswith("tests/contract/")}
    # Every broker contract case runs for both adapters: the embedded ones in test-unit, the
    # emulator's in test-integration.
    embedded = {
        n for n in unit["NO-EMULATOR"] if n.startswith("tests/contract/") and "[embedded" in n
    }
    assert embedded and contract == {n.replace("[embedded", "[pubsub") for n in embedded}

    # `make test` runs the whole tree with no marker or keyword deselection.
    argv = _make_pytest_argv("test")
    assert not {"-m", "-k", "--deselect"} & set(argv), argv
