"""Fixtures for the broker port's contract tests: every adapter in `BROKERS` runs every test.

To add an adapter, write a factory `(tmp_path) -> Broker` and add it to `BROKERS`. A factory that
needs a system tool (the Pub/Sub emulator) skips, or fails under CI=true, when it is missing, so
its cases are marked `pubsub_emulator` (NEEDS_EMULATOR) and run where the emulator is.
Names are unique per test (uuid suffix), so the tests can share one emulator or project.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from flightpipe.broker import Broker
from flightpipe.broker.embedded import EmbeddedBroker
from tests.pubsub_emulator import pubsub_factory


def _embedded(tmp_path: Path) -> Broker:
    return EmbeddedBroker(tmp_path / "broker.sqlite3")


BROKERS: dict[str, Callable[[Path], Broker]] = {
    "embedded": _embedded,
    "pubsub": pubsub_factory,  # Google's Pub/Sub emulator (tests/pubsub_emulator.py)
}


# The GitLab job running `make test-unit` has no emulator (only integration-tests gets it as a
# service): its cases carry the marker that job deselects and `make test-integration` selects.
NEEDS_EMULATOR = frozenset({"pubsub"})
# Adapters whose `backlog` is None by design: Pub/Sub has no RPC for it and Cloud Monitoring
# records it (flightpipe/broker/pubsub.py). Every other adapter must count it itself.
BACKLOG_IN_MONITORING = frozenset({"pubsub"})


@pytest.fixture(
    params=[
        pytest.param(name, marks=[pytest.mark.pubsub_emulator] if name in NEEDS_EMULATOR else [])
        for name in sorted(BROKERS)
    ]
)
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    """A broker adapter, closed after the test."""
    instance = BROKERS[request.param](tmp_path)
    yield instance
    instance.close()


@pytest.fixture
def broker_name(request: pytest.FixtureRequest) -> str:
    """The name in `BROKERS` of the adapter the test runs against."""
    name: str = request.node.callspec.params["broker"]
    return name


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Make a topic or subscription name no other test (or test run) uses."""
    run = uuid.uuid4().hex[:12]
    return lambda prefix: f"{prefix}-{run}"
