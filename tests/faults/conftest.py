"""The fault-injection suite: fixtures, and the figures table printed at the end of the run."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from flightpipe.broker.embedded import EmbeddedBroker
from flightpipe.settings import Settings
from tests.faults.harness import (
    FIGURES,
    StartSubscriber,
    SubscriberProcess,
    fault_settings,
    kill_leftovers,
    write_figures,
)


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    yield
    kill_leftovers()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return fault_settings(tmp_path / "data")


@pytest.fixture
def broker(settings: Settings) -> Iterator[EmbeddedBroker]:
    """The embedded broker on the test's data dir, with the subscriber's topology."""
    from flightpipe.composition import ensure_topology

    settings.data_path.mkdir(parents=True, exist_ok=True)
    b = EmbeddedBroker(settings.broker_path)
    ensure_topology(b, settings)
    yield b
    b.close()


@pytest.fixture
def start_subscriber(settings: Settings) -> StartSubscriber:
    """Start a subscriber process on the test's settings (`_no_leftover_processes` kills it)."""

    def start(
        argv: Sequence[str] | None = None, env: Mapping[str, str] = {}, wait_healthy: bool = True
    ) -> SubscriberProcess:
        return SubscriberProcess(settings, argv, env).start(wait_healthy)

    return start


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures of every fault that ran, and say where they were written."""
    if not FIGURES:
        return
    directory = Path(terminalreporter.config._tmp_path_factory.getbasetemp())  # type: ignore[attr-defined]
    table = write_figures(directory)
    terminalreporter.section("fault-injection figures")
    terminalreporter.write(table)
    terminalreporter.write_line(f"(also in {directory}/faults-figures.md and .json)")
