"""gitlab-ci-local, driven as the rehearsal needs it: one job at a time, from a fresh clone.

`fresh_clone` is the committed tree with nothing else; `run_job` runs a job under
gitlab-ci-local's shell executor from an empty cache, each in its own copy, with the PATH of the
job's image (`job_path`: its tools and what its before_script installs, nothing more of the
host's) and its Pub/Sub emulator service started outside it (`job_services`); the processes a
job leaves running are listed and killed (tests/delivery/leftovers.py).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from tests.delivery import leftovers
from tests.pubsub_emulator import running_emulator

REPO = Path(__file__).resolve().parents[2]
UV_CACHE = Path(os.environ.get("UV_CACHE_DIR") or Path.home() / ".cache" / "uv")
JOB_TIMEOUT_S = 1800
# .gitlab-ci.yml minus `services:` (the shell executor has no containers; see _shell_file).
SHELL_FILE = ".gitlab-ci-shell.yml"


def _gitlab_ci_local() -> str:
    found = shutil.which("gitlab-ci-local")
    if found is None:
        pytest.fail("gitlab-ci-local is not installed: bash scripts/system-deps.sh", pytrace=False)
    return found


@dataclass
class Run:
    returncode: int
    output: str
    # Processes the job started that were still alive when it ended (killed since).
    leftovers: list[leftovers.Leftover] = field(default_factory=list)

    def assert_cold(self, job: str) -> None:
        """The job found no cache and no .venv, made its own before using it, and left nothing."""
        assert "imported cache" not in self.output, f"{job} started from a cache"
        assert "installing locked dependencies into .venv" in self.output, job
        self.assert_nothing_outlived(job)

    def assert_nothing_outlived(self, job: str) -> None:
        """No process the job started was still running when it ended (they were killed since)."""
        assert not self.leftovers, f"{job} left processes running: " + "; ".join(
            f"{x.pid}: {x.cmdline[:200]}" for x in self.leftovers
        )

    def succeeded(self, job: str) -> bool:
        """gitlab-ci-local's summary line for the job says PASS."""
        summary = rf"^\s*PASS\s+\[[^\]]*\]\s+{re.escape(job)}\s*$"
        return re.search(summary, self.output, re.M) is not None


def run_job(clone: Path, job: str, variables: dict[str, str], *extra: str) -> Run:
    """Run `job` in a gitlab-ci-local pipeline of its own, in its own copy, from an empty cache.

    One job per invocation: each gets its own PATH (see job_path).

    gitlab-ci-local keeps the `cache:` of earlier runs (.gitlab-ci-local/cache): dropping it makes
    every invocation start cold. Artifacts (the deploy job's dotenv) are kept, as GitLab keeps
    them for later jobs. CI_PROJECT_DIR: gitlab-ci-local's shell executor sets the container path
    (/builds/...) instead of the job's directory, so the jobs' `$CI_PROJECT_DIR/...` (pip cache,
    JUnit files) would land outside it; `.` is the job's directory, as on a GitLab runner.

    A GitLab runner tears a job's container down when the job ends; the shell executor does not.
    So gitlab-ci-local runs in a session of its own (killed as a group on timeout), every job
    carries a marker variable (tests/delivery/leftovers.py), and whatever still runs with it, or
    out of the job's directory, once gitlab-ci-local returned is listed in `Run.leftovers` and
    killed, so nothing of one job runs during the next (the caller asserts the list is empty).
    """
    shutil.rmtree(clone / ".gitlab-ci-local" / "cache", ignore_errors=True)
    run_id = leftovers.new_run_id()
    # GITLAB_CI: "true" in every GitLab job (https://docs.gitlab.com/ci/variables/predefined_variables/);
    # gitlab-ci-local sets "false" (firecow/gitlab-ci-local src/job.ts), and --variable wins.
    variables = {"CI_PROJECT_DIR": ".", "GITLAB_CI": "true", **variables, leftovers.MARKER: run_id}
    variables["PATH"] = job_path(clone, job, variables.get("PATH", os.environ["PATH"]))
    argv = [_gitlab_ci_local(), "--force-shell-executor", "--shell-isolation", "--concurrency=1"]
    argv += ["--no-color", "--timestamps", f"--file={SHELL_FILE}", *extra]
    for key, value in variables.items():
        argv += ["--variable", f"{key}={value}"]
    started = time.monotonic()
    log_path = clone / f"gitlab-ci-local-{job}.log"
    with log_path.open("w+") as log:
        proc = subprocess.Popen(
            [*argv, job],
            cwd=clone,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            returncode = proc.wait(timeout=JOB_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            returncode = proc.wait()
        log.seek(0)
        output = log.read()
    left = leftovers.outliving(run_id, [clone / ".gitlab-ci-local" / "builds" / job])
    leftovers.kill(left)
    took = time.monotonic() - started
    print(f"gitlab-ci-local {job}: rc={returncode} {took:.0f}s leftovers={len(left)}")
    return Run(returncode, output, left)


def fresh_clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone of the committed tree: no .venv, no caches, no untracked files."""
    path = tmp_path_factory.mktemp("ci") / "flightpipe"
    subprocess.run(["git", "clone", "-q", str(REPO), str(path)], check=True)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    subprocess.run(["git", "checkout", "-q", head], cwd=path, check=True)
    # gitlab-ci-local derives CI_PROJECT_* from the origin remote: give it a GitLab-shaped one.
    remote = "git@gitlab.com:latam/flightpipe.git"
    subprocess.run(["git", "remote", "set-url", "origin", remote], cwd=path, check=True)
    assert not (path / ".venv").exists() and not (path / ".cache").exists()
    _shell_file(path)
    return path


def _shell_file(clone: Path) -> None:
    """Write .gitlab-ci.yml without its `services:`, the one change the shell executor needs.

    gitlab-ci-local starts service containers with Docker even under --force-shell-executor, and
    the rehearsal runs without a Docker engine. The services are the Pub/Sub emulator
    (job_services starts it outside the job) and BuildKit (the builder is a stand-in here).
    Everything else, scripts, rules, variables, needs, artifacts, is the file as committed.
    """
    config = yaml.safe_load((clone / ".gitlab-ci.yml").read_text())
    removed = [
        name for name, job in config.items() if isinstance(job, dict) and job.pop("services", None)
    ]
    assert set(removed) == {"integration-tests", ".pulumi"}, removed
    (clone / SHELL_FILE).write_text(yaml.safe_dump(config, sort_keys=False))


# ---- each job's tools: its image's and what its before_script installs, nothing more ---------

# Tools a host may have that the jobs' image lacks: python:3.11-slim-bookworm is
# debian:bookworm-slim plus Python, whose build tools (gcc, make, wget) are purged again
# (docker-library/python@025fb340 3.11/slim-bookworm/Dockerfile). A job that calls one of them
# without installing it first fails in GitLab, so it must fail here too.
IMAGE_LACKS: Final = frozenset(
    {
        *("gcloud", "java", "node", "npm", "npx", "gitlab-ci-local"),
        *("promtool", "prometheus", "chromium", "rsync", "wrk", "pulumi", "docker"),
        *("gcc", "cc", "c++", "g++", "make", "git", "curl", "wget", "jq", "uv", "hadolint"),
    }
)
# What each before_script step puts on PATH when missing (each script's `command -v` checks).
# system-deps.sh installs gitlab-ci-local only where npm exists, and the image has no npm.
INSTALLS: Final = {
    "scripts/ci_bootstrap.sh": frozenset({"make", "git", "curl"}),
    "scripts/system-deps.sh": frozenset({"rsync", "promtool", "prometheus", "chromium", "wrk"}),
    "scripts/ci_pulumi_cli.sh": frozenset({"pulumi"}),
}
STANDINS = Path("tests") / "delivery" / "standins"


def job_config(config: dict[str, Any], job: str) -> dict[str, Any]:
    """`job` with its `extends` merged in and `default:`'s before_script/services where unset."""

    def resolve(name: str) -> dict[str, Any]:
        entry: dict[str, Any] = dict(config[name])
        parents = entry.pop("extends", [])
        merged: dict[str, Any] = {}
        for parent in [parents] if isinstance(parents, str) else parents:
            merged |= resolve(parent)
        return merged | entry

    merged = resolve(job)
    for key in ("before_script", "services"):
        merged.setdefault(key, config.get("default", {}).get(key, []))
    return merged


def denied_tools(config: dict[str, Any], job: str) -> frozenset[str]:
    """The tools `job` must not find: what the image lacks and its before_script does not add."""
    installed: set[str] = set()
    for step in job_config(config, job)["before_script"]:
        for script, tools in INSTALLS.items():
            if script in str(step):
                installed |= tools
    return IMAGE_LACKS - installed


def job_path(clone: Path, job: str, path: str) -> str:
    """`path` for `job`: each directory mirrored by symlinks to its executables minus the denied.

    The stand-ins' directory stays as it is: those are the job's cloud tools on purpose.
    """
    config = yaml.safe_load((clone / ".gitlab-ci.yml").read_text())
    denied = denied_tools(config, job)
    root = clone.parent / "job-path" / job
    shutil.rmtree(root, ignore_errors=True)
    mirrored = []
    for i, directory in enumerate(d for d in path.split(os.pathsep) if d):
        source = Path(directory)
        if source.resolve() == (clone / STANDINS).resolve():
            mirrored.append(directory)
            continue
        if not source.is_dir():
            continue
        mirror = root / str(i)
        mirror.mkdir(parents=True)
        for entry in source.iterdir():
            if entry.name not in denied and not entry.is_dir() and os.access(entry, os.X_OK):
                (mirror / entry.name).symlink_to(entry)
        mirrored.append(str(mirror))
    return os.pathsep.join(mirrored)


@contextmanager
def job_services(clone: Path, job: str, data_dir: Path) -> Iterator[dict[str, str]]:
    """The job's Pub/Sub emulator service, started here, as the variables that name it.

    gitlab-ci-local's shell executor starts no service containers (see _shell_file), so the
    emulator runs outside the job and each job variable naming the service's alias (the
    `pubsub-emulator:8085` of FLIGHTPIPE_TEST_PUBSUB_EMULATOR_HOST) gets its real address.
    """
    config = job_config(yaml.safe_load((clone / ".gitlab-ci.yml").read_text()), job)
    aliases = {
        s["alias"]
        for s in config["services"]
        if isinstance(s, dict) and "pubsub" in s.get("command", []) and "alias" in s
    }
    named = {
        key: value
        for key, value in config.get("variables", {}).items()
        if str(value).partition(":")[0] in aliases
    }
    if not named:
        yield {}
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    with running_emulator(data_dir) as host:
        yield dict.fromkeys(named, host)
