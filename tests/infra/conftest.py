"""Fixtures of the Pulumi policy tests (harnesses: `program.py`, `monitoring.py`)."""

from __future__ import annotations

from collections.abc import Iterator

import pulumi
import pytest

from tests.infra.monitoring import declare
from tests.infra.program import INGEST_MODES, STACKS, Graph, graph_for


@pytest.fixture(params=[(s, m) for s in STACKS for m in INGEST_MODES], ids="-".join)
def graph(request: pytest.FixtureRequest) -> Iterator[Graph]:
    """Every stack in every ingest mode."""
    stack, mode = request.param
    yield graph_for(stack, mode)


@pytest.fixture(scope="module")
def declared() -> list[pulumi.runtime.MockResourceArgs]:
    """Every resource one `Monitoring("mon", monitoring_args())` declares."""
    return declare()
