"""Hostile input at the edges: a publish file with bad bytes, and broken configuration.

Each entrypoint answers bad input with one line on stderr and a non-zero exit, before it starts
serving, and never with a traceback; a bad line in a publish file loses no other line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flightpipe.broker.embedded import EmbeddedBroker
from flightpipe.settings import Settings
from tests.factories import payload
from tests.faults.harness import SUBSCRIPTION, valid_events
from tests.processes import free_port, run_cli

pytestmark = pytest.mark.integration


def test_publish_with_an_invalid_utf8_line_publishes_every_line(
    broker: EmbeddedBroker, settings: Settings, tmp_path: Path
) -> None:
    good = [payload(e) for e in valid_events(3, "cli")]
    lines = [good[0], b'{"event_id": "\xff\xfe"}', good[1], b"\xc3\x28 not utf-8 at all", good[2]]
    for source in ("file", "stdin"):
        file = tmp_path / "lines.jsonl"
        file.write_bytes(b"\n".join(lines) + b"\n")
        if source == "file":
            result = run_cli("publish", str(file), data_dir=settings.data_path)
        else:
            result = run_cli("publish", "-", data_dir=settings.data_path, stdin=file.read_bytes())
        assert result.returncode == 0, result.stderr
        assert result.stderr.decode().strip().splitlines() == [
            "published 5 messages to topic 'flights'"
        ]
        pulled = broker.pull(SUBSCRIPTION, 100, timeout=1)
        broker.ack(SUBSCRIPTION, [m.ack_id for m in pulled])
        # Published as they are, bytes untouched: the subscriber dead-letters the bad ones.
        assert [m.data for m in pulled] == lines


def _entrypoint(
    argv: list[str], env: dict[str, str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("FLIGHTPIPE_")}, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )


ENTRYPOINTS = {
    "cloud API image (Granian)": [sys.executable, "-m", "flightpipe_api"],
    "subscriber image": [sys.executable, "-m", "flightpipe_subscriber"],
    "flightpipe serve": [sys.executable, "-m", "flightpipe_local.cli", "serve"],
}


@pytest.mark.parametrize("entrypoint", list(ENTRYPOINTS))
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FLIGHTPIPE_API_KEYS", ",,,"),
        ("FLIGHTPIPE_API_KEYS", "a-plain-key"),
        ("FLIGHTPIPE_API_RATE_LIMIT", "lots"),
        ("FLIGHTPIPE_API_AUTH_FAILURE_LIMIT", "1/fortnight"),
    ],
)
def test_a_bad_key_list_or_limit_is_one_line_and_exit_2_before_listening(
    entrypoint: str, name: str, value: str, tmp_path: Path
) -> None:
    env = {name: value, "PORT": str(free_port()), "FLIGHTPIPE_DATA_DIR": str(tmp_path / "d")}
    result = _entrypoint(ENTRYPOINTS[entrypoint], env, tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0], result.stderr
    assert "Traceback" not in result.stderr and "Listening" not in result.stderr + result.stdout
    assert value not in lines[0] or name != "FLIGHTPIPE_API_KEYS"  # never echo a key
