"""Google's Pub/Sub emulator as a pytest fixture (and a context manager for bench/).

One emulator per test process: the first test that needs it starts `gcloud beta emulators pubsub
start` on a free port with a temporary data dir and waits until it answers HTTP; at exit the whole
process group (gcloud's Python wrapper and the Java server) is killed. `pubsub_emulator` (session
scope) gives its `host:port`; `pubsub_factory` is the contract tests' broker factory.

`pubsub_broker` (function scope) gives a `PubSubBroker` on that emulator in a project of its own,
so tests never share topics. `PUBSUB_EMULATOR_HOST` is set only while the client is constructed
(the client reads it then), so no other test sees it.

When the emulator is missing the tests skip with the install command, except with `CI=true`,
where a missing emulator fails the run.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from flightpipe.broker import Broker
from flightpipe.broker.pubsub import PubSubBroker
from tests import rpc_log

INSTALL_HINT = (
    "the Pub/Sub emulator is not installed: run `gcloud components install pubsub-emulator` "
    "(or `apt-get install google-cloud-cli-pubsub-emulator openjdk-17-jre-headless` from "
    "Google's apt repository); it needs Java 17+"
)
STARTUP_SECONDS = 60.0


def missing_reason() -> str | None:
    """Why the emulator cannot run here, or None when it can."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return f"gcloud is not on PATH; {INSTALL_HINT}"
    if shutil.which("java") is None:
        return f"java is not on PATH; {INSTALL_HINT}"
    sdk_root = Path(gcloud).resolve().parent.parent
    if not (sdk_root / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator").exists():
        return f"no pubsub-emulator component under {sdk_root}; {INSTALL_HINT}"
    return None


def skip_or_fail_if_missing() -> None:
    """Skip the calling test when the emulator is missing, or fail it when CI=true."""
    reason = missing_reason()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(host: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"emulator exited ({proc.returncode}): {log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"http://{host}/", timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"emulator not ready after {STARTUP_SECONDS}s: {log_path.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # gcloud runs the Java server as a child: signal the whole group so neither outlives us.
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):  # the Java child may outlive gcloud
        os.killpg(proc.pid, signal.SIGKILL)


@contextmanager
def running_emulator(data_dir: Path) -> Iterator[str]:
    """Start the emulator with its data in `data_dir`; yield `host:port`; stop it."""
    host = f"127.0.0.1:{_free_port()}"
    log_path = data_dir / "emulator.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [
                "gcloud",
                "beta",
                "emulators",
                "pubsub",
                "start",
                f"--host-port={host}",
                f"--data-dir={data_dir}",
                "--quiet",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_ready(host, proc, log_path)
            yield host
        finally:
            _stop(proc)


def make_broker(host: str, project: str | None = None) -> PubSubBroker:
    """A PubSubBroker on the emulator at `host` (a fresh project unless one is given)."""
    project = project or f"flightpipe-test-{uuid.uuid4().hex[:12]}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PUBSUB_EMULATOR_HOST", host)
        # Every RPC the clients send is noted for the IAM table check (tests/rpc_log.py).
        mp.setattr(grpc, "insecure_channel", rpc_log.recording(grpc.insecure_channel))
        return PubSubBroker(project=project, rpc_timeout=20.0)


_shared: dict[str, str] = {}


def shared_emulator_host() -> str:
    """The `host:port` of the one emulator this test process shares, started on first use.

    FLIGHTPIPE_TEST_PUBSUB_EMULATOR_HOST names an emulator that is already running instead.

    Skips (or fails under CI=true) when the emulator is missing. It is stopped when the process
    exits, so the contract tests' plain factories and the fixtures below share one emulator.
    """
    # A CI job may run the emulator as a service container (see .gitlab-ci.yml): use it as is.
    if external := os.environ.get("FLIGHTPIPE_TEST_PUBSUB_EMULATOR_HOST"):
        return external
    skip_or_fail_if_missing()
    if "host" not in _shared:
        data_dir = Path(tempfile.mkdtemp(prefix="pubsub-emulator-"))
        context = running_emulator(data_dir)
        _shared["host"] = context.__enter__()
        atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
        atexit.register(context.__exit__, None, None, None)
    return _shared["host"]


def pubsub_factory(tmp_path: Path) -> Broker:
    """A broker factory for tests/contract's `BROKERS`: Pub/Sub on the shared emulator."""
    del tmp_path  # the emulator keeps its own state; a fresh project isolates the test
    return make_broker(shared_emulator_host())


@pytest.fixture(scope="session")
def pubsub_emulator() -> str:
    """The emulator's `host:port`."""
    return shared_emulator_host()


@pytest.fixture
def pubsub_broker(pubsub_emulator: str) -> Iterator[PubSubBroker]:
    """A PubSubBroker on the emulator, in a project no other test uses."""
    broker = make_broker(pubsub_emulator)
    yield broker
    broker.close()
