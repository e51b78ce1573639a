"""A data dir and a broker backlog written by the last release, served and ingested by this code.

The release is rebuilt from git history (the commit its snapshot in `flightpipe/schemas/releases`
names): its own `flightpipe serve` stores a first batch, its own `publish` leaves a second one
unconsumed in the embedded broker, then the current `flightpipe serve` ingests the backlog and
serves both. A shallow clone lacks the commit; the test then fails saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import duckdb
import pytest

from flightpipe.schemas import latest_release, release_document, released_columns
from flightpipe.warehouse.duckdb import DuckDBWarehouse
from tests.factories import as_dict, make_event, payload
from tests.processes import CLI, Serve, free_port, wait_until

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Where the project's packages live in a checkout (pyproject.toml's package dirs).
PACKAGE_DIRS = ("", "services/api", "services/subscriber", "services/local")
PACKAGES = ("flightpipe", "flightpipe_api", "flightpipe_subscriber", "flightpipe_local")


def _release_tree(version: str, into: Path) -> Path:
    """The release's `flightpipe/` and `services/` from git history, extracted under `into`."""
    commit = release_document(version)["commit"]
    found = subprocess.run(
        ["git", "-C", str(ROOT), "cat-file", "-e", f"{commit}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    if found.returncode != 0:
        pytest.fail(
            f"release {version}'s commit {commit} is not in this clone (a shallow clone?"
            " fetch the full history: GIT_DEPTH: 0 or `git fetch --unshallow`)",
            pytrace=False,
        )
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", commit, "flightpipe", "services"],
        capture_output=True,
        check=True,
    )
    into.mkdir()
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def _release_env(tree: Path) -> dict[str, str]:
    # PYTHONPATH comes before site-packages, where the editable install's finder points at
    # the current checkout (a meta-path finder appended after the path-based one); and
    # PYTHONSAFEPATH keeps `-m`/`-c` from putting the working directory, a checkout, first
    # (https://docs.python.org/3/using/cmdline.html#envvar-PYTHONSAFEPATH).
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(str(tree / d) for d in PACKAGE_DIRS),
        "PYTHONSAFEPATH": "1",
    }


def _python(code: str, env: Mapping[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, check=True, timeout=60
    )
    return done.stdout.decode()


def _publish(data_dir: Path, events: list[bytes], env: Mapping[str, str]) -> None:
    done = subprocess.run(
        [*CLI, "publish", "-", "--data-dir", str(data_dir)],
        input=b"\n".join(events) + b"\n",
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()


# "as released": the release's own data dir. "before a field was added": the same data dir with
# `distance_mi` dropped, as a release whose contract lacked that optional field would have left
# it, so the start-up upgrade has a column to add (release 0.1.0's contract equals this one's).
@pytest.mark.parametrize("shape", ["as released", "before a field was added"])
def test_an_earlier_releases_data_dir_and_backlog_are_served_and_ingested(
    tmp_path: Path, shape: str
) -> None:
    version = latest_release()
    tree = _release_tree(version, tmp_path / "release")
    old_env = _release_env(tree)
    files = ", ".join(f"{p}.__file__" for p in PACKAGES)
    imported = json.loads(
        _python(f"import json, {', '.join(PACKAGES)}; print(json.dumps([{files}]))", old_env)
    )
    assert all(Path(f).is_relative_to(tree) for f in imported), imported
    # The snapshot the rules test compares with is what that release declared.
    declared = json.loads(
        _python(
            "import json; from flightpipe.contract import COLUMNS; "
            "print(json.dumps([[c.name, c.kind, c.nullable] for c in COLUMNS]))",
            old_env,
        )
    )
    assert declared == [[c.name, c.kind, c.nullable] for c in released_columns(version)]

    data = tmp_path / "data"
    stored = [make_event() for _ in range(20)]
    backlog = [make_event() for _ in range(30)]
    old = Serve(data, env=old_env).start()
    try:
        _publish(data, [payload(e) for e in stored], old_env)
        wait_until(
            lambda: all(old.get(f"/v1/flights/{e.flight_id}")[0] == 200 for e in stored),
            60,
            "the release to store its batch",
        )
    finally:
        old.stop()
    _publish(data, [payload(e) for e in backlog], old_env)  # nothing consumes it yet
    added = set()
    if shape == "before a field was added":
        added = {"distance_mi"}
        with duckdb.connect(str(data / "warehouse.duckdb")) as conn:
            tables = [t for (t,) in conn.execute("SHOW TABLES").fetchall()]
            for table in tables:
                conn.execute(f"ALTER TABLE {table} DROP COLUMN distance_mi")

    current = Serve(data, env={"PYTHONPATH": ""}).start()
    try:
        wait_until(
            lambda: all(current.get(f"/v1/flights/{e.flight_id}")[0] == 200 for e in backlog),
            60,
            "the backlog to be ingested",
        )
        for event in [*stored, *backlog]:
            status, body = current.get(f"/v1/flights/{event.flight_id}")
            assert status == 200
            expected = as_dict(event)
            if event in stored:  # stored before the column existed: NULL there, nothing else lost
                expected |= dict.fromkeys(added)
            assert {k: body["data"][k] for k in expected} == expected
    finally:
        assert current.stop() == 0


def test_serve_refuses_an_incompatible_data_dir_in_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    DuckDBWarehouse(data / "warehouse.duckdb").close()
    with duckdb.connect(str(data / "warehouse.duckdb")) as conn:
        conn.execute("ALTER TABLE events ALTER COLUMN distance_mi TYPE VARCHAR")
    done = subprocess.run(
        [*CLI, "serve", "--data-dir", str(data), "--port", str(free_port())],
        capture_output=True,
        timeout=60,
        check=False,
    )
    lines = done.stderr.decode().strip().splitlines()
    assert done.returncode == 1
    assert lines[-1] == (
        "flightpipe: IncompatibleStore: the data dir does not follow the current contract"
        " (events: column distance_mi retyped from string to int)"
    )
    assert not any(line.startswith("Traceback") for line in lines)
