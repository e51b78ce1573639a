"""Fixtures of the Pulumi program's policy tests (the harness is `program.py`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.infra.program import INGEST_MODES, STACKS, Graph, graph_for


@pytest.fixture(params=[(s, m) for s in STACKS for m in INGEST_MODES], ids="-".join)
def graph(request: pytest.FixtureRequest) -> Iterator[Graph]:
    """Every stack in every ingest mode."""
    stack, mode = request.param
    yield graph_for(stack, mode)
