"""The load side of the HTTP benchmarks: server processes, wrk runs and export clients.

bench/api.py says what is measured (rows, request lists, peers, the report); this module starts
and stops the servers it measures and drives the load: `wrk` over a request list walked by a Lua
script, and curl clients fetching a large export in a loop.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# wrk: `setup` runs once per thread in the main Lua state and may set globals in the thread's
# own state (wrk's SCRIPTING: thread:set); each thread walks the shared list from its offset.
LUA = """
local paths = {%s}
local threads = 0
function setup(thread) thread:set("offset", threads); threads = threads + 1 end
function init(args) i = offset * math.floor(#paths / 2) end
function request() i = i + 1; return wrk.format("GET", paths[(i %% #paths) + 1]) end
"""


def _wait(url: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer")


@contextmanager
def running(command: list[str], env: dict[str, str], probe: str) -> Iterator[None]:
    proc = subprocess.Popen(
        command,
        env={**os.environ, **env},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait(probe)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wrk(url: str, duration: int, script: Path, connections: int = 32) -> tuple[float, float]:
    """(requests/s, p99 ms) of one wrk run."""
    threads = min(2, connections)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "30s"]
    out = subprocess.run(
        [*command, "--latency", "-s", str(script), url], capture_output=True, text=True, check=True
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} non-2xx responses\n{out}")
    return rate, float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


@contextmanager
def exporting(url: str, log: Path, clients: int) -> Iterator[None]:
    """`clients` fetching the large export `url` in a loop; a 503 waits 1 s before asking again.

    The API's Retry-After says 5 s (`flightpipe_api.errors.RETRY_AFTER_SECONDS`): these clients
    ask five times as often as a polite one, so the refusals cost the server more than in use.

    Each client logs "<status> <bytes>" per export (curl -w), so the report can count them.
    """
    fetch = f"curl -s -o /dev/null -w '%{{http_code}} %{{size_download}}\\n' '{url}'"
    loop = f"while true; do out=$({fetch}); echo $out; [ ${{out%% *}} = 200 ] || sleep 1; done"
    procs = [
        subprocess.Popen(["bash", "-c", f"({loop}) >> {log}"], start_new_session=True)
        for _ in range(clients)
    ]
    time.sleep(2)  # the exports under way before the measurement starts
    try:
        yield
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def lua(tmp: Path, name: str, paths: list[str]) -> Path:
    script = tmp / f"{name}.lua"
    script.write_text(LUA % ", ".join(f'"{p}"' for p in paths))
    return script


def count_exports(log: Path) -> dict[str, int]:
    """Completed 200 exports (and their MB), and 503s, from an exporting() log."""
    done = refused = size = 0
    for line in log.read_text().splitlines():
        status, _, length = line.partition(" ")
        if status == "200" and int(length or 0) > 0:
            done, size = done + 1, size + int(length)
        elif status == "503":
            refused += 1
    return {"completed": done, "MB": size // 1_000_000, "refused_503": refused}


def progress(text: str) -> None:
    """A long run says where it is, on stderr (the report on stdout stays clean Markdown)."""
    print(f"{dt.datetime.now(dt.UTC):%H:%M:%S} {text}", file=sys.stderr, flush=True)
