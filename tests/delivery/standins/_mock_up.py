"""Run a Pulumi project's real program under pulumi.runtime.set_mocks; print its exports as JSON.

The pulumi stand-in calls it as `<virtualenv>/bin/python _mock_up.py DIR PROJECT STACK` with the
engine's config (JSON, key -> string) on stdin. The mocks are the infra tests' (tests/infra/
program.py RecordingMocks): they only invent what Google would compute (ids, emails, names).
"""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path
from typing import Any


def main(directory: Path, project: str, stack: str, config: dict[str, str]) -> dict[str, Any]:
    repo = Path(__file__).resolve().parents[3]
    sys.path[:0] = [str(repo), str(directory)]
    import pulumi
    from pulumi.runtime import settings as runtime_settings
    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    from tests.infra.program import RecordingMocks

    pulumi.runtime.set_mocks(RecordingMocks(), project=project, stack=stack, preview=False)
    pulumi.runtime.set_all_config(config, [])

    def program() -> None:
        runpy.run_path(str(directory / "__main__.py"), run_name="__main__")

    _sync_await(run_pulumi_func(program))
    root = runtime_settings.get_root_resource()
    outputs: dict[str, Any] = getattr(root, "outputs", {}) if root is not None else {}
    exports = _sync_await(pulumi.Output.from_input(outputs).future()) or {}
    return dict(exports)


if __name__ == "__main__":
    directory, project, stack = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    print(json.dumps(main(directory, project, stack, json.loads(sys.stdin.read()))))
