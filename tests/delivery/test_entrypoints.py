"""The images' entrypoints work: each services/Dockerfile target's CMD, run exactly as written.

No Docker engine here, so the test rebuilds what each image holds: a fresh virtual environment
from that service's own lock (`requirements/<service>.lock`, hash-checked, no dev tools, no other
service's dependencies) plus the project installed without dependencies, as the Dockerfile does:
an import the service makes at runtime that its lock lacks fails here. It then runs the CMD argv
with the Dockerfile's ENV, a free PORT and a temporary FLIGHTPIPE_DATA_DIR (embedded broker + DuckDB
defaults), from an empty working directory, mapping only `/app/...` paths back to the files the
Dockerfile copies there. The API must answer /readyz; the subscriber must come up (/healthz)
and exit 0 on SIGTERM within Cloud Run's 10 s grace period.

The venv is built per test session in pytest's temp dir, never shared: a venv in the system temp
dir would be reinstalled by every concurrent checkout, each then running the others' code. uv
installs from its warm cache; it needs PyPI (or a warm uv cache) the first time.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.delivery.dockerfiles import DOCKERFILE, REPO, Stage, lock, target

pytestmark = [pytest.mark.slow, pytest.mark.integration]

UV = REPO / ".venv" / "bin" / "uv"
STARTUP_SECONDS = 60.0
GRACE_SECONDS = 10.0  # Cloud Run's SIGTERM-to-SIGKILL window
SEED_WAREHOUSE = (
    "from flightpipe.settings import load_settings\n"
    "from flightpipe.warehouse.duckdb import DuckDBWarehouse\n"
    "DuckDBWarehouse(load_settings().duckdb_path).close()\n"
)


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=900)
    assert result.returncode == 0, f"{argv}\n{result.stdout}\n{result.stderr}"


_VENVS: dict[str, Path] = {}


def image_venv(service: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding what the service's image holds: its lock, then the project (--no-deps)."""
    if service in _VENVS:
        return _VENVS[service]
    if not UV.exists():
        pytest.fail(f"{UV} is missing: run make setup")
    venv = tmp_path_factory.mktemp(f"image-venv-{service}") / "venv"
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    _run([str(UV), "pip", "install", "-q", "--python", str(python), "--require-hashes",
          "--no-deps", "-r", str(lock(service))])  # fmt: skip
    # The Dockerfile installs the project the same way, without its dependencies.
    _run([str(UV), "pip", "install", "-q", "--python", str(python), "--no-deps",
          "--no-build-isolation", str(REPO)])  # fmt: skip
    _VENVS[service] = venv
    return venv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _app_paths(stage: Stage) -> dict[str, str]:
    """`/app/...` destinations of the final stage's COPY lines -> the repository files."""
    paths = {}
    for args in stage.args_of("COPY"):
        if args.startswith("--"):
            continue
        source, destination = args.split()
        paths[destination] = str(REPO / source)
    return paths


def _command(service: str, venv: Path, workdir: Path) -> tuple[list[str], dict[str, str], int]:
    stage = target(DOCKERFILE, service)
    app_paths = _app_paths(stage)
    argv = [app_paths.get(arg, arg) for arg in stage.cmd]
    assert not any(arg.startswith("/app/") for arg in argv), f"unmapped path in {argv}"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FLIGHTPIPE_", "GOOGLE_", "PUBSUB_", "PYTHON"))
    }
    for key, value in stage.env.items():
        env[key] = value.replace("/opt/venv/bin", str(venv / "bin")).replace(
            "$PATH", os.environ.get("PATH", "")
        )
    port = _free_port()
    env["PORT"] = str(port)
    env["FLIGHTPIPE_DATA_DIR"] = str(workdir / "data")
    executable = shutil.which(argv[0], path=env["PATH"])
    assert executable is not None and executable.startswith(str(venv)), executable
    return [executable, *argv[1:]], env, port


@pytest.fixture
def start(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Iterator[object]:
    procs: list[subprocess.Popen[bytes]] = []

    def _start(service: str) -> tuple[subprocess.Popen[bytes], int, Path]:
        venv = image_venv(service, tmp_path_factory)
        argv, env, port = _command(service, venv, tmp_path)
        if service == "api":
            # The API opens the warehouse read-only: locally the subscriber (or `flightpipe
            # serve`) creates it, in the cloud it is BigQuery. Create the empty one here.
            Path(env["FLIGHTPIPE_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [str(venv / "bin" / "python"), "-c", SEED_WAREHOUSE],
                cwd=tmp_path, env=env, check=True, timeout=60,
            )  # fmt: skip
        log = tmp_path / f"{service}.log"
        proc = subprocess.Popen(
            argv, cwd=tmp_path, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
        )
        procs.append(proc)
        return proc, port, log

    yield _start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def _wait_for_200(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"exited with {proc.returncode} before {url} answered:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except urllib.error.HTTPError as error:
            last = f"HTTP {error.code}"
        except OSError as error:
            last = str(error)
        time.sleep(0.2)
    pytest.fail(f"{url} not 200 after {STARTUP_SECONDS}s ({last}):\n{log.read_text()}")


def _terminate(proc: subprocess.Popen[bytes], log: Path) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {GRACE_SECONDS}s after SIGTERM:\n{log.read_text()}")


def test_api_image_cmd_serves_readyz(start: object) -> None:
    proc, port, log = start("api")  # type: ignore[operator]
    _wait_for_200(f"http://127.0.0.1:{port}/readyz", proc, log)
    assert _terminate(proc, log) == 0, log.read_text()


def test_subscriber_image_cmd_starts_and_drains_on_sigterm(start: object) -> None:
    proc, port, log = start("subscriber")  # type: ignore[operator]
    _wait_for_200(f"http://127.0.0.1:{port}/healthz", proc, log)
    assert _terminate(proc, log) == 0, log.read_text()


# What each service imports in the cloud configuration (FLIGHTPIPE_BROKER=pubsub,
# FLIGHTPIPE_WAREHOUSE=bigquery, Cloud Trace): the CMDs above start on the local defaults, which
# never import these (flightpipe.adapters imports the cloud adapters lazily).
CLOUD_IMPORTS = {
    "api": ["flightpipe.warehouse.bigquery", "opentelemetry.exporter.cloud_trace"],
    "subscriber": [
        "flightpipe.broker.pubsub",
        "flightpipe.warehouse.bigquery",
        "opentelemetry.exporter.cloud_trace",
    ],
}


@pytest.mark.parametrize("service", sorted(CLOUD_IMPORTS))
def test_the_cloud_adapters_import_from_the_services_own_lock(
    service: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    python = image_venv(service, tmp_path_factory) / "bin" / "python"
    code = "; ".join(f"import {m}" for m in CLOUD_IMPORTS[service])
    _run([str(python), "-c", code])
