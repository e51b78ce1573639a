"""The interactive API reference (/docs, Swagger UI) rendered by a real browser.

The API runs in a werkzeug server thread on a real DuckDB file; headless Chromium (Debian's
`chromium`, the same flags as the status page test) loads /docs, runs Swagger UI and dumps the DOM
and its console messages, and a WSGI wrapper records every request the page made. Without
Chromium these tests skip, except with CI=true where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flightpipe_api import create_app
from flightpipe_api.openapi import build_spec
from werkzeug.serving import make_server

from flightpipe.settings import load_settings
from flightpipe.warehouse.duckdb import DuckDBWarehouse
from tests.integration.test_status_page import _browser, _browser_with_console

pytestmark = pytest.mark.integration
SHOT_DIR_ENV = "FLIGHTPIPE_DOCS_SCREENSHOT"


@pytest.fixture
def served(
    tmp_path: Path, duckdb_warehouse: DuckDBWarehouse
) -> Iterator[tuple[str, list[tuple[str, int]]]]:
    app = create_app(load_settings({"FLIGHTPIPE_DATA_DIR": str(tmp_path)}), duckdb_warehouse)
    seen: list[tuple[str, int]] = []

    def recording(environ: dict[str, Any], start_response: Any) -> Any:
        def start(status: str, headers: Any, *exc: Any) -> Any:
            seen.append((environ["PATH_INFO"], int(status.split(maxsplit=1)[0])))
            return start_response(status, headers, *exc)

        return app(environ, start)

    server = make_server("127.0.0.1", 0, recording, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", seen
    server.shutdown()
    thread.join(timeout=10)


def test_the_reference_lists_every_operation_without_console_errors_or_outside_requests(
    served: tuple[str, list[tuple[str, int]]], tmp_path: Path
) -> None:
    base_url, seen = served
    dom, console = _browser_with_console(
        tmp_path, f"{base_url}/docs", "--dump-dom", "--virtual-time-budget=15000"
    )
    assert console == []  # no console.error, no uncaught exception, no warning
    spec = build_spec()
    rendered = set(re.findall(r'data-path="([^"]+)"', dom))
    assert rendered == set(spec["paths"]), rendered  # every operation, and nothing else
    for path in spec["paths"]:
        for operation in spec["paths"][path].values():
            assert operation["summary"] in dom
    assert "flightpipe API" in dom and "<strong>Authentication.</strong>" in dom  # Markdown
    # Operations start folded; the deep-link test below opens one and finds "Execute".
    # The page fetched its document and assets from this server, and all of them were found.
    assert ("/openapi.json", 200) in seen and ("/docs/swagger-ui-bundle.js", 200) in seen
    assert all(status < 400 for _, status in seen), seen
    assert not re.search(r'(?:src|href)="(?:https?:)?//', dom)


def test_a_deep_link_opens_an_operation_ready_to_try_against_this_server(
    served: tuple[str, list[tuple[str, int]]], tmp_path: Path
) -> None:
    base_url, _ = served
    dom = _browser(
        tmp_path,
        f"{base_url}/docs#/flights/listFlights",
        "--dump-dom",
        "--virtual-time-budget=15000",
    )
    assert "Execute" in dom  # tryItOutEnabled: the form is live, its requests go to this origin
    for name in ("carrier", "tail_number", "min_dep_delay", "page_token", "fields"):
        assert f'data-param-name="{name}"' in dom, name
    assert "N14228" in dom and "-dep_delay_min" in dom  # the declared examples fill the form


def test_a_screenshot_of_the_reference_is_written(
    served: tuple[str, list[tuple[str, int]]], tmp_path: Path
) -> None:
    base_url, _ = served
    shot = tmp_path / "docs.png"
    _browser(
        tmp_path,
        f"{base_url}/docs",
        f"--screenshot={shot}",
        "--window-size=1280,2400",
        "--virtual-time-budget=15000",
    )
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 50_000  # a rendered page, not a blank one
    if target := os.environ.get(SHOT_DIR_ENV):
        shutil.copy(shot, target)
