"""Start and stop real flightpipe processes for integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

CLI = [sys.executable, "-m", "flightpipe_local.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def http_get(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    """GET and decode JSON (or text for /metrics); (0, None) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback/test URL
            body = r.read()
            status = int(r.status)
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    except (urllib.error.URLError, OSError):
        return 0, None
    if url.endswith("/metrics"):
        return status, body.decode()
    return status, msgspec.json.decode(body) if body else None


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def metric(base_url: str, name: str) -> float:
    status, text = http_get(f"{base_url}/metrics")
    if status != 200:
        return -1.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def kill_process(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL: the crash every fault test needs, with nothing flushed."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def stop_process(proc: subprocess.Popen[Any], timeout: float) -> int:
    """SIGTERM and wait for the graceful drain; SIGKILL only if it overruns `timeout`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


class Serve:
    """A `flightpipe serve` child process on a free port."""

    def __init__(self, data_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> Serve:
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--data-dir", str(self.data_dir), "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_until(self._ready, timeout, f"{self.base_url}/readyz")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode() if self.proc.stderr else ""
            raise AssertionError(f"flightpipe serve exited {self.proc.returncode}: {err}")
        return http_get(f"{self.base_url}/readyz", timeout=1)[0] == 200

    def kill(self) -> None:
        assert self.proc is not None
        kill_process(self.proc)

    def stop(self, timeout: float = 15) -> int:
        assert self.proc is not None
        stop_process(self.proc, timeout)
        if self.proc.stderr:
            self.proc.stderr.close()
        return self.proc.returncode

    def get(self, path: str) -> tuple[int, Any]:
        return http_get(self.base_url + path)


def run_cli(
    *args: str, data_dir: Path, stdin: bytes | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*CLI, *args, "--data-dir", str(data_dir)],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
