"""Published schemas; `python -m flightpipe.schemas` rewrites them from the contract.

`releases/<version>.json` keeps the columns of each released contract and the commit it was
released from: the contract's evolution rules (`contract.evolve`) are checked against the latest
one, and the upgrade test rebuilds that release from git history.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from flightpipe import __version__, contract

RELEASES: Final = Path(__file__).with_name("releases")


def release_document(version: str) -> dict[str, Any]:
    """The snapshot of a released contract: `release`, `commit` and `columns`."""
    path = RELEASES / f"{version}.json"
    try:
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"no snapshot of release {version} in {RELEASES}") from None
    return document


def released_columns(version: str) -> tuple[contract.Column, ...]:
    """The warehouse columns of a released contract (descriptions are not kept)."""
    return tuple(
        contract.Column(c["name"], c["kind"], c["nullable"], "")
        for c in release_document(version)["columns"]
    )


def latest_release() -> str:
    """The newest release with a snapshot (versions compare numerically)."""
    versions = [p.stem for p in RELEASES.glob("*.json")]
    return max(versions, key=lambda v: tuple(int(part) for part in v.split(".")))


def snapshot(commit: str) -> Path:
    """Write the current contract's columns as release `__version__`, built from `commit`.

    Write-once, and only for a release version: a snapshot is the baseline every later contract
    is checked against, so rewriting it would make that check compare the contract with itself.
    """
    if not all(part.isdigit() for part in __version__.split(".")):
        raise ValueError(f"{__version__} is not a release version; set one before snapshotting")
    path = RELEASES / f"{__version__}.json"
    if path.exists():
        raise FileExistsError(f"release {__version__} already has its snapshot: {path}")
    columns = [{"name": c.name, "kind": c.kind, "nullable": c.nullable} for c in contract.COLUMNS]
    document = {"release": __version__, "commit": commit, "columns": columns}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return path
