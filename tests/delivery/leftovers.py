"""Find and stop the processes a CI job left behind (tests/delivery/pipeline_jobs.py).

gitlab-ci-local's shell executor runs a job's script in a shell and returns when the script ends;
nothing stops what the script started in the background, and a process that made its own session
(`start_new_session=True`: the Pub/Sub emulator, for one) escapes any process-group kill. So each
job run carries a marker variable no other process has (`MARKER=<uuid>`), inherited by everything
it starts, and after the job this module looks for live processes holding that marker in their
environment or running from the job's own directory (a child started with a scrubbed environment
still runs its venv's python from there). Linux only: it reads /proc.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

MARKER = "PIPELINE_JOBS_RUN_ID"


def new_run_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Leftover:
    pid: int
    cmdline: str


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # gone meanwhile, or a kernel thread
        return b""


def find(run_id: str, job_dir: Path | None = None) -> list[Leftover]:
    """Live processes (not zombies) carrying `run_id` or running out of `job_dir`."""
    marker = f"{MARKER}={run_id}".encode()
    prefix = str(job_dir.resolve()) + "/" if job_dir is not None else None
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        stat = _read(entry / "stat")
        if not stat or stat.rsplit(b")", 1)[-1].split()[0] == b"Z":
            continue
        environ = _read(entry / "environ").split(b"\0")
        cmdline = _read(entry / "cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
        try:
            cwd = os.readlink(entry / "cwd") + "/"
        except OSError:
            cwd = ""
        ours = marker in environ
        if prefix is not None and (cwd.startswith(prefix) or prefix in cmdline):
            ours = True
        if ours:
            found.append(Leftover(int(entry.name), cmdline))
    return found


def outliving(run_id: str, job_dirs: list[Path], settle: float = 2.0) -> list[Leftover]:
    """What still runs `settle` seconds after the job ended (a process already killed by the
    job's own clean-up may take a moment to be gone)."""
    dirs: list[Path | None] = [*job_dirs] or [None]
    found = {x for d in dirs for x in find(run_id, d)}
    if not found:
        return []
    time.sleep(settle)
    return sorted((x for x in found if _alive(x.pid)), key=lambda x: x.pid)


def kill(leftovers: list[Leftover], grace: float = 5.0) -> None:
    """SIGTERM each leftover, then SIGKILL whatever is still there after `grace` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for leftover in leftovers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(leftover.pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_alive(x.pid) for x in leftovers):
            time.sleep(0.1)


def _alive(pid: int) -> bool:
    stat = _read(Path(f"/proc/{pid}/stat"))
    return bool(stat) and stat.rsplit(b")", 1)[-1].split()[0] != b"Z"
