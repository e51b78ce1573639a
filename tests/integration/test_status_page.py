"""The status page: real numbers from the Prometheus registry, rendered by a real browser.

The API (create_app with a real DuckDB warehouse) runs in a werkzeug server thread; the metrics it
reports are incremented on the process's default registry, as the subscriber does in
`flightpipe serve`. Headless Chromium (Debian's `chromium`) loads /status, runs its script and
dumps the DOM; without Chromium those tests skip, except with CI=true where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flightpipe_api import create_app
from flightpipe_api import status as status_module
from flightpipe_api.status import Sampler, histogram_quantile
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from werkzeug.serving import make_server

from flightpipe import telemetry
from flightpipe.settings import load_settings
from flightpipe.warehouse.duckdb import DuckDBWarehouse

pytestmark = pytest.mark.integration

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


@pytest.fixture
def base_url(tmp_path: Path, duckdb_warehouse: DuckDBWarehouse) -> Iterator[str]:
    app = create_app(load_settings({"FLIGHTPIPE_DATA_DIR": str(tmp_path)}), duckdb_warehouse)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def pipeline_metrics() -> Iterator[dict[str, int]]:
    """Pipeline numbers as the subscriber would set them; gauges are reset afterwards."""
    telemetry.MESSAGES_RECEIVED.inc(1234)
    telemetry.MESSAGES_DEAD_LETTERED.labels(reason="invalid_json").inc(3)
    telemetry.SUBSCRIPTION_BACKLOG.set(4321)
    telemetry.LAST_COMMIT_PUBLISH_TIME.set(time.time() - 30)
    for _ in range(20):
        telemetry.HTTP_REQUESTS.labels(route="/flights", status="200").inc()
        telemetry.HTTP_DURATION.labels(route="/flights").observe(0.02)
    # Counters are process-wide and other tests may have added to them: expect the totals.
    yield {
        "received": int(REGISTRY.get_sample_value("flightpipe_messages_received_total") or 0),
        "backlog": 4321,
    }
    telemetry.SUBSCRIPTION_BACKLOG.set(0)
    telemetry.LAST_COMMIT_PUBLISH_TIME.set(0)


def test_status_json_reports_registry_numbers_and_is_never_cached(
    base_url: str, pipeline_metrics: dict[str, int]
) -> None:
    response = requests.get(f"{base_url}/status.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    pipeline = body["pipeline"]
    assert pipeline["messages_received_total"] == pipeline_metrics["received"]
    assert pipeline["backlog_messages"] == pipeline_metrics["backlog"]
    assert pipeline["dead_lettered_by_reason"]["invalid_json"] >= 3
    assert 29 <= pipeline["freshness_seconds"] < 120
    assert body["api"]["latency_seconds"]["p50"] is not None
    assert body["history"][-1]["backlog"] == pipeline_metrics["backlog"]


def test_status_page_is_not_cached_and_forbids_other_origins(base_url: str) -> None:
    response = requests.get(f"{base_url}/status", timeout=10)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]


def test_status_page_and_its_assets_reference_no_external_url(base_url: str) -> None:
    html = requests.get(f"{base_url}/status", timeout=10).text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets, "the page should load its script and stylesheet"
    assert all(a.startswith("/") and not a.startswith("//") for a in assets), assets
    for asset in assets:
        if asset.endswith((".js", ".css")):
            text = requests.get(f"{base_url}{asset}", timeout=10).text
            # The SVG namespace is a name, not a request.
            urls = set(re.findall(r"https?://[^\s\"')]+", text)) - {"http://www.w3.org/2000/svg"}
            assert urls == set(), (asset, urls)


def test_sampler_computes_rates_and_window_quantiles_from_counter_differences() -> None:
    registry = CollectorRegistry()
    received = Counter("flightpipe_messages_received", "r", registry=registry)
    requests_total = Counter(
        "flightpipe_http_requests", "h", ["route", "status"], registry=registry
    )
    duration = Histogram(
        "flightpipe_http_request_duration_seconds",
        "d",
        ["route"],
        buckets=(0.1, 0.5, 1),
        registry=registry,
    )
    backlog = Gauge("flightpipe_subscription_backlog_messages", "b", registry=registry)
    sampler = Sampler(registry, window=60)
    received.inc(1000)
    duration.labels(route="/flights").observe(0.05)

    first = sampler.status(now=100.0)
    assert first["pipeline"]["ingest_rate_per_second"] is None  # one sample: no rate yet

    received.inc(50)
    backlog.set(7)
    for status, n in (("200", 95), ("503", 5)):
        for _ in range(n):
            requests_total.labels(route="/flights", status=status).inc()
    requests_total.labels(route="/status.json", status="500").inc(1000)  # the page's own polls
    for _ in range(10):
        duration.labels(route="/flights").observe(0.8)
    duration.labels(route="/status.json").observe(0.01)
    second = sampler.status(now=110.0)

    assert second["pipeline"]["ingest_rate_per_second"] == 5.0
    assert second["pipeline"]["backlog_messages"] == 7
    assert second["api"]["error_5xx_ratio"] == 0.05
    # Only the 10 new /flights observations count: all in (0.5, 1], p50 = 0.75.
    assert second["api"]["latency_seconds"]["p50"] == 0.75
    assert second["api"]["latency_over"] == "last 10 s"
    assert [p["t"] for p in second["history"]] == [100.0, 110.0]


def test_histogram_quantile_interpolates_within_buckets_like_promql() -> None:
    # The same buckets as rules_test.yml's latency case: p95 = 0.96875 there too.
    buckets = {0.1: 10.0, 0.5: 20.0, 1.0: 100.0, float("inf"): 100.0}
    assert histogram_quantile(0.95, buckets) == pytest.approx(0.96875)
    assert histogram_quantile(0.05, buckets) == pytest.approx(0.05)
    assert histogram_quantile(0.99, {0.1: 0.0, float("inf"): 10.0}) == 0.1
    assert histogram_quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    reason = "chromium not found: install it with `apt-get install -y chromium`"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(reason)


def _browser(tmp_path: Path, url: str, *extra: str) -> str:
    """Run headless Chromium on `url`; return what it printed (the DOM with --dump-dom)."""
    return _browser_with_console(tmp_path, url, *extra)[0]


def _browser_with_console(tmp_path: Path, url: str, *extra: str) -> tuple[str, list[str]]:
    """Like `_browser`, and also return the page's console messages.

    With --enable-logging=stderr Chromium logs each console message, console.error and
    uncaught exceptions included, as an `INFO:CONSOLE` line on stderr.
    """
    result = subprocess.run(
        [
            _chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--virtual-time-budget=5000",
            "--enable-logging=stderr",
            "--v=0",
            *extra,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, [line for line in result.stderr.splitlines() if ":CONSOLE" in line]


def _text_of(dom: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)<', dom)
    assert match, f"#{element_id} not in the rendered page"
    return match.group(1)


def _wait_for_background_samples(count: int = 2) -> None:
    deadline = time.monotonic() + 30
    while len(status_module._sampler._history) < count:
        assert time.monotonic() < deadline, "the sampler thread took no snapshots"
        time.sleep(0.2)


def test_the_server_samples_without_a_page_open_so_a_first_load_has_history() -> None:
    registry = CollectorRegistry()
    Counter("flightpipe_messages_received", "test", registry=registry).inc(5)
    sampler = Sampler(registry)
    others = {t for t in threading.enumerate() if t.name == "status-sampler"}
    sampler.start(interval=0.05)
    sampler.start(interval=0.05)  # idempotent: one thread
    started = [t for t in threading.enumerate() if t.name == "status-sampler" and t not in others]
    assert len(started) == 1, started
    deadline = time.monotonic() + 30
    while len(sampler._history) < 3:  # MIN_SAMPLE_SECONDS apart, taken by the thread alone
        assert time.monotonic() < deadline
        time.sleep(0.1)
    history = sampler.status()["history"]
    assert len(history) >= 3 and history[0]["t"] < history[-1]["t"]
    sampler._stop.set()  # no sampler left running into the next tests


def test_browser_renders_the_live_numbers_from_status_json(
    base_url: str, pipeline_metrics: dict[str, int], tmp_path: Path
) -> None:
    _wait_for_background_samples()
    dom = _browser(tmp_path, f"{base_url}/status", "--dump-dom")

    # The HTML ships "—" placeholders: these values can only come from the script's fetch.
    assert _text_of(dom, "received") == f"{pipeline_metrics['received']:,}"
    assert _text_of(dom, "backlog") == f"{pipeline_metrics['backlog']:,}"
    assert _text_of(dom, "freshness").endswith(" s")
    assert 'class="dot ok"' in dom
    chart = re.search(r'<svg id="chart-backlog".*?</svg>', dom, re.S)
    # The server samples on its own thread: the first load already has a line, not a wait.
    assert chart and "<polyline" in chart.group(0) and "collecting" not in chart.group(0)
    assert "Cloud Monitoring dashboard" in dom
    assert not re.search(r'(?:src|href)="(?:https?:)?//', dom)


def test_browser_screenshot_of_the_status_page_is_written(
    base_url: str, pipeline_metrics: dict[str, int], tmp_path: Path
) -> None:
    shot = tmp_path / "status.png"
    _browser(tmp_path, f"{base_url}/status", f"--screenshot={shot}", "--window-size=1280,900")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
