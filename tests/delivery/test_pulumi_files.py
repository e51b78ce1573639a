"""Every Pulumi project and stack file of the repository loads as the Pulumi CLI loads it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "delivery" / "standins"))

import _pulumi_files as files  # noqa: E402

FOUND = files.all_pulumi_files(REPO)


def test_the_repository_has_both_projects_and_their_stacks() -> None:
    names = {str(p.relative_to(REPO)) for p in FOUND}
    for directory in ("infra", "infra/bootstrap"):
        assert {f"{directory}/Pulumi.{s}.yaml" for s in ("", "dev", "prod")} - {
            f"{directory}/Pulumi..yaml"
        } <= names | {f"{directory}/Pulumi.yaml"}
        assert f"{directory}/Pulumi.yaml" in names


@pytest.mark.parametrize("path", FOUND, ids=lambda p: str(p.relative_to(REPO)))
def test_loads_strictly(path: Path) -> None:
    files.check(path)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (
            "name: x\nruntime: python\nconfig:\n  a:\n    type: string\n"
            "    description: jobs request `aud: $CI_SERVER_URL`.\n",
            "line 6: mapping values are not allowed here",
        ),
        ("name: x\nruntime: python\nname: y\n", 'mapping key "name" already defined at line 1'),
        ("name: x\n", "'runtime' is a required property"),
        ("name: x\nruntime: {name: python, toolchain: pip}\n", "runtime"),
        ("name: x\nruntime: python\nconfig:\n  n:\n    type: number\n", "config/n"),
        ("name: x\nruntime: python\nconfig:\n  l:\n    type: array\n", "config/l"),
    ],
)
def test_what_the_cli_refuses_is_refused(tmp_path: Path, text: str, why: str) -> None:
    (tmp_path / "Pulumi.yaml").write_text(text)
    with pytest.raises(files.PulumiFileError, match=None) as refused:
        files.load_project(tmp_path)
    assert why in str(refused.value)


def test_a_stack_file_with_a_repeated_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.dev.yaml").write_text("config:\n  gcp:project: a\n  gcp:project: b\n")
    with pytest.raises(files.PulumiFileError, match="already defined at line 2"):
        files.load_stack(tmp_path, "dev")
