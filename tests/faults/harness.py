"""Shared machinery of the fault-injection suite: real processes, real files, measured figures.

Every fault test publishes known valid and invalid messages, injects one fault, lets it end, and
checks the same promises (docs/reliability.md): every valid event stored exactly once, nothing
valid dead-lettered, no stall, health telling the truth, one log line naming the real cause. The
figures each test measures (`Figures`) are collected into one table printed at the end of the run
and written to `<pytest basetemp>/faults-figures.{json,md}`.

Timings are scaled by configuration, not waited out: the embedded broker takes a 2 s ack deadline,
so "an outage longer than ack deadline x max delivery attempts" is 2 s x 5 = 10 s, not 5 minutes.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import msgspec

from flightpipe.broker import Message
from flightpipe.broker.embedded import EmbeddedBroker
from flightpipe.contract import FlightEvent
from flightpipe.settings import Settings, load_settings
from tests.factories import make_event, payload
from tests.processes import free_port, http_get, kill_process, metric, stop_process, wait_until

ACK_DEADLINE = 2
MAX_ATTEMPTS = 5
# Longer than every lease a message could be given and the delivery attempts it could use up.
OUTAGE_SECONDS = ACK_DEADLINE * MAX_ATTEMPTS + 2
TOPIC = "flights"
SUBSCRIPTION = "flights-subscriber"
DLQ_INSPECT = "flights-dead-letter-inspect"
FIGURES: list[Figures] = []
# Every subscriber process a test started; the suite's autouse fixture kills what is left.
STARTED: list[subprocess.Popen[bytes]] = []


@dataclass
class Figures:
    """What one fault did to the pipeline (one row of docs/reliability.md's table)."""

    fault: str
    published_valid: int = 0
    published_invalid: int = 0
    stored: int = 0
    duplicates_written: int = 0
    dead_lettered_valid: int = 0
    dead_lettered_invalid: int = 0
    max_delivery_attempt: int = 0
    fault_seconds: float = 0.0
    recovery_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def record(self) -> None:
        FIGURES.append(self)


def kill_leftovers() -> None:
    """Kill every process a test started and did not stop (a failed assertion skips `stop`)."""
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def write_figures(directory: Path) -> str:
    """Write the collected figures as JSON and a markdown table; return the table."""
    rows = [asdict(f) for f in FIGURES]
    (directory / "faults-figures.json").write_text(json.dumps(rows, indent=2))
    header = (
        "| fault | valid published | invalid published | stored | duplicates written "
        "| valid dead-lettered | invalid dead-lettered | max delivery attempt | fault (s) "
        "| recovery (s) | notes |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = [
        f"| {f.fault} | {f.published_valid} | {f.published_invalid} | {f.stored} "
        f"| {f.duplicates_written} | {f.dead_lettered_valid} | {f.dead_lettered_invalid} "
        f"| {f.max_delivery_attempt} | {f.fault_seconds:.1f} | {f.recovery_seconds:.1f} "
        f"| {'; '.join(f.notes).replace('|', '/')} |"
        for f in FIGURES
    ]
    table = header + "\n".join(lines) + "\n"
    (directory / "faults-figures.md").write_text(table)
    return table


def fault_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings for a fault test: small batches, a 2 s ack deadline, quick retries."""
    values: dict[str, object] = {
        "data_dir": str(data_dir),
        "batch_size": 200,
        "max_inflight_messages": 1000,
        "ack_deadline_seconds": ACK_DEADLINE,
        "max_delivery_attempts": MAX_ATTEMPTS,
        "retry_max_seconds": 0.5,
        "write_timeout_seconds": 1.0,
        "shutdown_grace_seconds": 5.0,
    }
    values.update(overrides)
    return load_settings({}, **values)


def fault_env(settings: Settings, port: int) -> dict[str, str]:
    """The same settings as environment variables, for a subscriber process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLIGHTPIPE_")}
    raw = msgspec.to_builtins(settings)
    for name, value in raw.items():
        if value is not None and value != "":
            env[name] = str(value)
    env["PORT"] = str(port)
    env["FLIGHTPIPE_LOG_LEVEL"] = "INFO"
    return env


def valid_events(n: int, prefix: str) -> list[FlightEvent]:
    """n valid events with distinct flights, event ids `<prefix>-<i>`."""
    day = dt.date(2013, 1, 1)
    return [
        make_event(
            event_id=f"{prefix}-{i}",
            flight_number=i % 90_000 + 1,
            flight_date=day + dt.timedelta(days=i // 90_000),
        )
        for i in range(n)
    ]


def publish(broker: EmbeddedBroker, bodies: Sequence[bytes], chunk: int = 500) -> None:
    for i in range(0, len(bodies), chunk):
        broker.publish(TOPIC, [(b, {}) for b in bodies[i : i + chunk]])


def publish_events(broker: EmbeddedBroker, events: Iterable[FlightEvent]) -> None:
    publish(broker, [payload(e) for e in events])


def dead_letters(broker: EmbeddedBroker) -> list[Message]:
    """Everything on the dead-letter topic (acked as it is read)."""
    out: list[Message] = []
    while batch := broker.pull(DLQ_INSPECT, 1000, timeout=0.2):
        out.extend(batch)
        broker.ack(DLQ_INSPECT, [m.ack_id for m in batch])
    return out


def backlog(broker: EmbeddedBroker) -> int:
    return broker.backlog(SUBSCRIPTION)[0]


def stored_event_ids(duckdb_path: Path) -> list[str]:
    """Every event_id row of the events table (a duplicate would appear twice)."""
    with duckdb.connect(str(duckdb_path), read_only=True) as conn:
        return [row[0] for row in conn.execute("SELECT event_id FROM events").fetchall()]


def check_stored_exactly_once(
    figures: Figures, stored: list[str], valid: Iterable[FlightEvent]
) -> None:
    expected = sorted(e.event_id for e in valid)
    figures.stored = len(stored)
    assert len(stored) == len(set(stored)), "an event was stored twice"
    assert sorted(stored) == expected, "valid events missing from the warehouse"


def check_dead_letters(
    figures: Figures, letters: Sequence[Message], invalid: Iterable[bytes]
) -> None:
    """Only the invalid messages were dead-lettered, each with a reason."""
    bad = set(invalid)
    figures.dead_lettered_valid = sum(1 for m in letters if m.data not in bad)
    figures.dead_lettered_invalid = sum(1 for m in letters if m.data in bad)
    assert figures.dead_lettered_valid == 0, [m.attributes for m in letters if m.data not in bad]
    assert {m.data for m in letters} == bad, "an invalid message was not dead-lettered"
    for m in letters:
        assert m.attributes.get("dead_letter_reason"), m.attributes


def check_promises(
    figures: Figures,
    broker: EmbeddedBroker,
    settings: Settings,
    valid: Iterable[FlightEvent],
    invalid: Iterable[bytes],
) -> None:
    """The promises every fault keeps: each valid event stored exactly once in the DuckDB file,
    and only the invalid messages dead-lettered, each with a reason."""
    check_stored_exactly_once(figures, stored_event_ids(settings.duckdb_path), valid)
    check_dead_letters(figures, dead_letters(broker), invalid)


class SubscriberProcess:
    """`python -m flightpipe_subscriber` (or a harness script) with its JSON logs captured."""

    def __init__(
        self, settings: Settings, argv: Sequence[str] | None = None, env: Mapping[str, str] = {}
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**fault_env(settings, self.port), **env}
        self.argv = list(argv or [sys.executable, "-m", "flightpipe_subscriber"])
        self.lines: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_healthy: bool = True) -> SubscriberProcess:
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        STARTED.append(self.proc)
        threading.Thread(target=self._read, daemon=True).start()
        if wait_healthy:
            wait_until(self._healthy_or_dead, 30, "the subscriber's /healthz")
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def _healthy_or_dead(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"subscriber exited {self.proc.returncode}: {self.log()}")
        return self.health("/healthz")[0] == 200

    def health(self, path: str = "/healthz") -> tuple[int, Any]:
        return http_get(self.base_url + path, timeout=2)

    def metric(self, name: str) -> float:
        return metric(self.base_url, name)

    def wait_for_line(self, text: str, timeout: float = 30) -> str:
        def found() -> bool:
            return any(text in line for line in self.lines)

        wait_until(found, timeout, f"a log line with {text!r}")
        return next(line for line in self.lines if text in line)

    def log(self) -> str:
        return "\n".join(self.lines[-40:])

    def kill(self) -> None:
        assert self.proc is not None
        kill_process(self.proc)

    def stop(self, timeout: float = 20) -> int:
        assert self.proc is not None
        return stop_process(self.proc, timeout)

    def json_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


# The `start_subscriber` fixture: (argv, env, wait_healthy) -> a started subscriber process.
StartSubscriber = Callable[..., SubscriberProcess]


def drain(broker: EmbeddedBroker, timeout: float = 60, what: str = "the backlog") -> float:
    """Wait until the subscription is empty; return how long it took."""
    started = time.monotonic()
    wait_until(lambda: backlog(broker) == 0, timeout, what, interval=0.05)
    return time.monotonic() - started
