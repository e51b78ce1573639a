"""The documents in docs/ point at things that exist, and the architecture diagram is current.

Every relative Markdown link and every inline-code repository path (`flightpipe/telemetry.py`,
`tests/unit/test_api.py::test_name`) in docs/*.md must name a file or folder of the repository
(and, with `::name`, a function or class defined in that file), so a rename breaks the docs'
build instead of leaving them wrong. The Mermaid block in architecture.md must equal
docs/architecture.mmd, and docs/architecture.png must carry the hash of that source
(scripts/render-diagram.sh writes it), so the image cannot silently lag the source.
"""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
OWN_DOCS = sorted(DOCS.glob("*.md"))
# Written by someone else and linked before it exists; drop an entry once the file is in the tree.
NOT_YET_WRITTEN: set[str] = set()

_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
_CODE = re.compile(r"`([^`\n]+)`")
# A repository path: segments of word characters, dots and dashes joined by "/", optionally
# followed by "::name" (a test or a function in that file).
_PATH = re.compile(r"^(?P<path>[\w.-]+(?:/[\w.<>*-]+)+/?)(?:::(?P<name>\w+))?$")
_TOP_LEVEL = {p.name for p in ROOT.iterdir()}


def _strip_fences(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def _links(text: str) -> list[str]:
    targets = []
    for target in _LINK.findall(_strip_fences(text)):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue  # http(s), mailto and in-page anchors
        targets.append(target.split("#", 1)[0])
    return targets


def _code_paths(text: str) -> list[tuple[str, str | None]]:
    found = []
    for span in _CODE.findall(_strip_fences(text)):
        match = _PATH.match(span.strip())
        if match and match["path"].split("/", 1)[0] in _TOP_LEVEL:
            found.append((match["path"].rstrip("/"), match["name"]))
    return found


def _exists(relative: str) -> bool:
    return relative in NOT_YET_WRITTEN or (ROOT / relative).exists()


def test_there_are_documents_to_check() -> None:
    names = {p.name for p in OWN_DOCS}
    assert {
        "architecture.md",
        "testing-and-quality.md",
        "monitoring.md",
        "alerts-and-slos.md",
    } <= names


@pytest.mark.parametrize("doc", OWN_DOCS, ids=lambda p: p.name)
def test_every_relative_link_points_at_an_existing_file(doc: Path) -> None:
    broken = []
    for target in _links(doc.read_text(encoding="utf-8")):
        resolved = (doc.parent / target).resolve()
        relative = (
            resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else target
        )
        if not _exists(relative):
            broken.append(target)
    assert broken == [], f"{doc.name}: links to missing files"


@pytest.mark.parametrize("doc", OWN_DOCS, ids=lambda p: p.name)
def test_every_repository_path_in_code_spans_exists(doc: Path) -> None:
    missing = []
    for path, name in _code_paths(doc.read_text(encoding="utf-8")):
        if "<" in path or "*" in path:
            continue  # a pattern such as `prometheus.googleapis.com/<name>/<kind>`
        if not _exists(path):
            missing.append(path)
        elif name and not re.search(
            rf"^\s*(?:async\s+)?(?:def|class)\s+{name}\b", (ROOT / path).read_text(), re.M
        ):
            missing.append(f"{path}::{name}")
    assert missing == [], f"{doc.name}: references to missing files or names"


def _mermaid_block(markdown: str) -> str:
    blocks = re.findall(r"^```mermaid\n(.*?)^```", markdown, flags=re.S | re.M)
    assert len(blocks) == 1, "architecture.md must hold exactly one mermaid block"
    return str(blocks[0])


def test_mermaid_block_in_architecture_md_equals_the_mmd_source() -> None:
    block = _mermaid_block((DOCS / "architecture.md").read_text(encoding="utf-8"))
    assert block.strip() == (DOCS / "architecture.mmd").read_text(encoding="utf-8").strip()


def _png_text_chunks(data: bytes) -> dict[str, str]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    chunks, offset = {}, 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        if kind == b"tEXt":
            key, _, value = data[offset + 8 : offset + 8 + length].partition(b"\0")
            chunks[key.decode("latin-1")] = value.decode("latin-1")
        offset += 12 + length
    return chunks


def test_architecture_png_was_rendered_from_the_current_mmd_source() -> None:
    chunks = _png_text_chunks((DOCS / "architecture.png").read_bytes())
    source = hashlib.sha256((DOCS / "architecture.mmd").read_bytes()).hexdigest()
    assert chunks.get("mermaid-source-sha256") == source, "run scripts/render-diagram.sh"
