"""Every benchmark script still imports what it uses: `make bench` and docs/benchmarks.md's
commands must not rot when the modules they reach into move (each runs here without its
`__main__` block, so no benchmark runs)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_the_benchmark_script_loads(script: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    runpy.run_path(str(script), run_name="bench_script_check")
