"""Reading services/Dockerfile: its stages, and each service target's ENV and exec-form CMD.

Only what the tests need: line continuations joined, `FROM base [AS name]`, `ENV k=v ...` pairs
(quoted values allowed), and the JSON array of a target's last `CMD`. A target is read with the
stages it is built FROM (`target()`), as `docker buildx build --target` builds it.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "services" / "Dockerfile"
SERVICES = ("api", "subscriber")  # the targets, named as the services and their lock files


def lock(service: str) -> Path:
    return REPO / "requirements" / f"{service}.lock"


@dataclass(frozen=True)
class Stage:
    base: str
    instructions: list[tuple[str, str]]  # (INSTRUCTION, arguments)
    name: str | None = None

    def args_of(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]

    @property
    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for args in self.args_of("ENV"):
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = value
        return env

    @property
    def cmd(self) -> list[str]:
        cmd: list[str] = json.loads(self.args_of("CMD")[-1])
        return cmd


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line, comments dropped, continuations joined."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    result = []
    for line in logical:
        name, _, args = line.partition(" ")
        result.append((name.upper(), args.strip()))
    return result


def stages(path: Path) -> list[Stage]:
    """The build stages in order; `base` is the FROM argument (ARGs are not expanded)."""
    found: list[Stage] = []
    for name, args in instructions(path):
        if name == "FROM":
            words = args.split()
            stage = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append(Stage(base=words[0], instructions=[], name=stage))
        elif found:
            found[-1].instructions.append((name, args))
    return found


def chain(path: Path, name: str) -> list[Stage]:
    """The stage `name` and the stages it is built FROM, the first (an image's) first."""
    by_name = {s.name: s for s in stages(path) if s.name}
    if name not in by_name:
        raise KeyError(f"{path} has no stage {name!r}")
    found = [by_name[name]]
    while found[0].base in by_name:
        found.insert(0, by_name[found[0].base])
    return found


def target(path: Path, name: str) -> Stage:
    """The target stage `name` with what it inherits (instructions of its FROM chain, in order)."""
    parts = chain(path, name)
    merged = [i for part in parts for i in part.instructions]
    return Stage(base=parts[0].base, instructions=merged, name=name)


def global_args(path: Path) -> dict[str, str]:
    """ARG defaults declared before the first FROM."""
    result: dict[str, str] = {}
    for name, args in instructions(path):
        if name == "FROM":
            break
        if name == "ARG":
            key, _, value = args.partition("=")
            result[key] = value
    return result
