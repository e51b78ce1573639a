"""Reading the service Dockerfiles: the final stage's ENV and exec-form CMD.

Only what the tests need: line continuations joined, `ENV k=v ...` pairs (quoted values allowed),
and the JSON array of the last `CMD` after the last `FROM`.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = {
    "api": REPO / "services" / "api" / "Dockerfile",
    "subscriber": REPO / "services" / "subscriber" / "Dockerfile",
}


@dataclass(frozen=True)
class Stage:
    base: str
    instructions: list[tuple[str, str]]  # (INSTRUCTION, arguments)

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
            found.append(Stage(base=args.split()[0], instructions=[]))
        elif found:
            found[-1].instructions.append((name, args))
    return found


def final_stage(path: Path) -> Stage:
    return stages(path)[-1]


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
