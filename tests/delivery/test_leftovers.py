"""pipeline_jobs.py's leftover check finds what a job left running, and only that."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.delivery import leftovers

SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_a_process_carrying_the_jobs_marker_is_found_and_killed(
    started: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    run_id = leftovers.new_run_id()
    # Its own session, as the Pub/Sub emulator makes: a process-group kill would miss it.
    env = {**os.environ, leftovers.MARKER: run_id}
    started.append(subprocess.Popen(SLEEP, env=env, start_new_session=True))
    started.append(subprocess.Popen(SLEEP))  # not the job's: must not be found
    found = leftovers.outliving(run_id, [tmp_path / "builds" / "job"], settle=0.1)
    assert [x.pid for x in found] == [started[0].pid]
    leftovers.kill(found, grace=5)
    assert started[0].wait(timeout=10) != 0
    assert started[1].poll() is None


def test_a_process_running_from_the_jobs_directory_is_found_without_the_marker(
    started: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    job_dir = tmp_path / "builds" / "integration-tests"
    job_dir.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != leftovers.MARKER}  # a scrubbed env
    started.append(subprocess.Popen(SLEEP, cwd=job_dir, env=env))
    found = leftovers.outliving("not-this-run", [job_dir], settle=0.1)
    assert [x.pid for x in found] == [started[0].pid]


def test_nothing_is_found_when_the_job_stopped_what_it_started(
    started: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    run_id = leftovers.new_run_id()
    proc = subprocess.Popen(SLEEP, env={**os.environ, leftovers.MARKER: run_id})
    started.append(proc)
    proc.kill()
    proc.wait(timeout=10)
    assert leftovers.outliving(run_id, [tmp_path], settle=0.1) == []
