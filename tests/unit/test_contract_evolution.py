"""The contract's evolution rules, and the current contract checked against the last release.

A release's columns are kept in `flightpipe/schemas/releases/<version>.json`; a change to
`FlightEvent` that drops, retypes or newly requires a field fails here before any store sees it.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from flightpipe import __version__, contract
from flightpipe.contract import COLUMNS, Column, evolve
from flightpipe.schemas import RELEASES, latest_release, release_document, released_columns


def _replace(name: str, **changes: object) -> list[Column]:
    return [dataclasses.replace(c, **changes) if c.name == name else c for c in COLUMNS]  # type: ignore[arg-type]


def test_the_current_contract_follows_the_last_release() -> None:
    released = released_columns(latest_release())
    change = evolve(released, COLUMNS)
    assert change.refused == ()
    # Whatever changed is an added optional field or a relaxed one: every released column is kept.
    assert {c.name for c in released} <= {c.name for c in COLUMNS}


def test_the_snapshot_of_this_version_is_the_current_contract() -> None:
    # Until the next release is cut, the contract being built is the one released as this version.
    document = release_document(__version__)
    assert document["release"] == __version__
    assert len(document["commit"]) == 40
    assert [(c.name, c.kind, c.nullable) for c in released_columns(__version__)] == [
        (c.name, c.kind, c.nullable) for c in COLUMNS
    ]


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
