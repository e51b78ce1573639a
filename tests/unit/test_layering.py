"""Imports run downward: core <- services <- local (see `flightpipe_local`'s docstring).

Every `import` and `from ... import` in the project's own packages is read from the source with
`ast`, lazy ones inside functions included, so an upward import fails here before it can tangle
the layers again. (import-linter's `layers` contract says the same; an AST walk of four packages
needs no new dependency.)
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {
    "flightpipe": ROOT / "flightpipe",
    "flightpipe_api": ROOT / "services/api/flightpipe_api",
    "flightpipe_subscriber": ROOT / "services/subscriber/flightpipe_subscriber",
    "flightpipe_local": ROOT / "services/local/flightpipe_local",
}
# What each package may import of the others (itself always).
ALLOWED = {
    "flightpipe": set(),
    "flightpipe_api": {"flightpipe"},
    "flightpipe_subscriber": {"flightpipe"},
    "flightpipe_local": {"flightpipe", "flightpipe_api", "flightpipe_subscriber"},
}


def imported_packages(source: str) -> Iterator[tuple[int, str]]:
    """(line, top-level package) of every absolute import in `source`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def violations(package: str) -> list[str]:
    """`file:line imports X` for each import of a project package `package` may not use."""
    forbidden = set(PACKAGES) - ALLOWED[package] - {package}
    found = []
    for path in sorted(PACKAGES[package].rglob("*.py")):
        for line, name in imported_packages(path.read_text(encoding="utf-8")):
            if name in forbidden:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return found


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_module_imports_a_layer_above_or_beside_its_own(package: str) -> None:
    assert PACKAGES[package].is_dir()
    assert violations(package) == []


def test_the_check_sees_a_lazy_upward_import() -> None:
    # The kind of import this test exists for: inside a function, as http_server.py had one.
    source = "def f():\n    from flightpipe_api.errors import error_body\n    import os\n"
    assert list(imported_packages(source)) == [(2, "flightpipe_api"), (3, "os")]


def test_every_project_package_is_layered() -> None:
    # A fifth package would otherwise escape the check.
    on_disk = {p.parent.name for p in ROOT.glob("services/*/*/__init__.py")} | {"flightpipe"}
    assert on_disk == set(PACKAGES)
