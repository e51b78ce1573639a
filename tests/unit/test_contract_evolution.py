"""The contract's evolution rules, and the current contract checked against the last release.

A release's columns are kept in `flightpipe/schemas/releases/<version>.json`; a change to
`FlightEvent` that drops, retypes or newly requires a field fails here before any store sees it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from flightpipe import __version__, contract, schemas
from flightpipe.contract import COLUMNS, Column, evolve
from flightpipe.schemas import (
    RELEASES,
    latest_release,
    release_document,
    released_columns,
    snapshot,
)


def _replace(name: str, **changes: object) -> list[Column]:
    return [dataclasses.replace(c, **changes) if c.name == name else c for c in COLUMNS]  # type: ignore[arg-type]


def test_the_current_contract_follows_the_last_release() -> None:
    released = released_columns(latest_release())
    change = evolve(released, COLUMNS)
    assert change.refused == ()
    # Whatever changed is an added optional field or a relaxed one: every released column is kept.
    assert {c.name for c in released} <= {c.name for c in COLUMNS}


# A released snapshot is the baseline later contracts are checked against: it never changes.
RELEASED_SHA256 = {
    "0.1.0": "1b897ec8799fdd7605d317d411a81dc86d57f6478a4a25a2d591dc2b181a4f76",
}


def test_released_snapshots_never_change() -> None:
    assert {
        path.stem: hashlib.sha256(path.read_bytes()).hexdigest() for path in RELEASES.glob("*.json")
    } == RELEASED_SHA256
    assert latest_release() == "0.1.0" and ".dev" in __version__  # main builds the next one


def test_a_snapshot_is_written_once_and_only_for_a_release(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValueError, match="not a release version"):
        snapshot("0" * 40)
    monkeypatch.setattr(schemas, "__version__", "0.1.0")
    with pytest.raises(FileExistsError, match="already has its snapshot"):
        snapshot("0" * 40)
    assert (
        hashlib.sha256((RELEASES / "0.1.0.json").read_bytes()).hexdigest()
        == (RELEASED_SHA256["0.1.0"])
    )


def test_every_snapshot_names_its_release_and_only_contract_kinds() -> None:
    paths = sorted(RELEASES.glob("*.json"))
    assert paths
    for path in paths:
        document = json.loads(path.read_text(encoding="utf-8"))
        assert document["release"] == path.stem
        assert {c["kind"] for c in document["columns"]} <= {"string", "int", "timestamp", "date"}


def test_an_unknown_release_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match=r"^no snapshot of release 9\.9\.9 in "):
        release_document("9.9.9")


def test_an_added_optional_field_is_compatible() -> None:
    gate = Column("gate", "string", True, "Departure gate")
    change = evolve(COLUMNS, [*COLUMNS, gate])
    assert change == contract.Evolution(added=(gate,), relaxed=(), refused=())


def test_a_required_field_made_optional_is_compatible() -> None:
    change = evolve(COLUMNS, _replace("carrier", nullable=True))
    assert [c.name for c in change.relaxed] == ["carrier"]
    assert change.added == () and change.refused == ()


def test_an_unchanged_contract_changes_nothing() -> None:
    assert evolve(COLUMNS, COLUMNS) == contract.Evolution((), (), ())


@pytest.mark.parametrize(
    ("new", "reason"),
    [
        (
            [c for c in COLUMNS if c.name != "distance_mi"],
            "column distance_mi removed (its stored values would be dropped)",
        ),
        (_replace("distance_mi", kind="string"), "column distance_mi retyped from int to string"),
        (_replace("tail_number", nullable=False), "column tail_number made required"),
        (
            [*COLUMNS, Column("gate", "string", False, "")],
            "column gate added as required (stored rows have none)",
        ),
    ],
    ids=["removed", "retyped", "made-required", "added-required"],
)
def test_an_incompatible_change_is_refused_with_its_reason(new: list[Column], reason: str) -> None:
    change = evolve(COLUMNS, new)
    assert len(change.refused) == 1
    assert change.refused[0].startswith(reason)
