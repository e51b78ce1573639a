"""Hostile HTTP clients against `flightpipe serve`: idle, slow, greedy and malformed.

The server is the real `flightpipe serve` process on loopback; it ingests 30,000 flights first so
exports have something to stream. Each check is that the short request is answered while the
hostile load is still in place; the latencies are recorded, and a short request made beside held
exports must answer within STARVED_SECONDS, hundreds of times its quiet latency (a few ms), yet
short of forever: a starved request waits for the exports, which are never released before it.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from flightpipe.broker.embedded import EmbeddedBroker
from flightpipe.composition import ensure_topology
from tests.faults.harness import Figures, backlog, fault_settings, publish_events, valid_events
from tests.processes import Serve, wait_until

pytestmark = pytest.mark.integration
FLIGHTS = 30_000
IDLE_TIMEOUT = 3
STARVED_SECONDS = 5.0


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Serve, str]]:
    """One `flightpipe serve` with 30,000 flights for the whole module (ingesting takes a while)."""
    settings = fault_settings(tmp_path_factory.mktemp("serve") / "data")
    settings.data_path.mkdir(parents=True)
    broker = EmbeddedBroker(settings.broker_path)
    ensure_topology(broker, settings)
    events = valid_events(FLIGHTS, "serve")
    publish_events(broker, events)
    server = Serve(
        settings.data_path,
        env={
            "FLIGHTPIPE_HTTP_IDLE_TIMEOUT_SECONDS": str(IDLE_TIMEOUT),
            "FLIGHTPIPE_HTTP_THREADS": "4",
            "FLIGHTPIPE_API_CACHE_TTL_SECONDS": "0",  # every GET reaches the warehouse
        },
    ).start()
    try:
        wait_until(lambda: backlog(broker) == 0, 120, "serve to ingest the flights")
        yield server, events[0].flight_id
    finally:
        server.stop()
        broker.close()


def _get(url: str, timeout: float = 30) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback
            return int(r.status), r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def _timed_get(url: str, timeout: float = 30) -> tuple[int, float]:
    """(status, seconds); status 0 when no answer came within `timeout`."""
    started = time.perf_counter()
    try:
        status, _, _ = _get(url, timeout)
    except (TimeoutError, urllib.error.URLError):
        status = 0
    return status, time.perf_counter() - started


def _quiet_median_ms(url: str) -> float:
    """The median of 5 GETs with nothing else going on: the same run's baseline."""
    times = sorted(_timed_get(url)[1] for _ in range(5))
    return times[2] * 1e3


def test_idle_and_slow_connections_do_not_lock_the_server_up(serve: tuple[Serve, str]) -> None:
    server, flight_id = serve
    figures = Figures("300 idle + 20 slowloris connections on flightpipe serve")
    quiet = _quiet_median_ms(f"{server.base_url}/v1/flights/{flight_id}")
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(300)]
    slow = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
    for s in slow:
        s.sendall(b"GET /v1/flights HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    try:
        status, seconds = _timed_get(f"{server.base_url}/v1/flights/{flight_id}")
        assert status == 200
        figures.notes.append(
            f"one-flight GET with 320 hostile connections open: {seconds * 1e3:.0f} ms "
            f"(quiet median {quiet:.0f} ms)"
        )
        # The idle timeout closes them: the server reads EOF on none, we read EOF on all.
        started = time.monotonic()
        for s in idle + slow:
            s.settimeout(IDLE_TIMEOUT * 4)
            assert s.recv(1) == b"", "an idle connection was not closed by the server"
        figures.recovery_seconds = time.monotonic() - started
        figures.notes.append(f"all closed by the server {figures.recovery_seconds:.1f} s later")
    finally:
        for s in idle + slow:
            s.close()
    assert _get(f"{server.base_url}/readyz")[0] == 200
    figures.record()


def _held_export(
    base_url: str, path: str, answered: queue.Queue[int], release: threading.Event
) -> tuple[int, bytes, dict[str, str]]:
    """GET `path`, read its first bytes, then hold the response open until `release` is set.

    Holding the reader (rather than racing a fast export against the clock) keeps every admitted
    export in flight while the short GETs are made, however fast the machine streams the CSV.
    """
    host, port = base_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        first = response.read(1024) if response.status == 200 else b""
        answered.put(response.status)
        release.wait(timeout=120)
        return response.status, first + response.read(), dict(response.headers)
    finally:
        connection.close()


def test_concurrent_large_exports_do_not_starve_a_one_flight_get(
    serve: tuple[Serve, str],
) -> None:
    server, flight_id = serve
    figures = Figures("8 concurrent 30k-row CSV exports + one-flight GETs")
    results: list[tuple[int, bytes, dict[str, str]]] = []
    path = "/v1/flights?format=csv&limit=100000"
    quiet = _quiet_median_ms(f"{server.base_url}/v1/flights/{flight_id}")
    # Each export reports here once its response has started: the admitted ones are then
    # mid-stream and held there, the refused ones have their 503.
    answered: queue.Queue[int] = queue.Queue()
    release = threading.Event()

    def export() -> None:
        results.append(_held_export(server.base_url, path, answered, release))

    threads = [threading.Thread(target=export) for _ in range(8)]
    for t in threads:
        t.start()
    started: list[int] = []
    deadline = time.monotonic() + 60
    with contextlib.suppress(queue.Empty):  # a server with no thread left answers fewer
        while len(started) < 8:
            started.append(answered.get(timeout=max(0.0, deadline - time.monotonic())))
    latencies = []
    try:
        for _ in range(5):
            status, seconds = _timed_get(
                f"{server.base_url}/v1/flights/{flight_id}", timeout=STARVED_SECONDS
            )
            latencies.append(seconds)
            # Answered, and soon, while every admitted export is still held open.
            assert status == 200 and seconds < STARVED_SECONDS, (
                f"a one-flight GET beside {len(started)} held exports: status {status} after "
                f"{seconds:.1f} s (quiet median {quiet:.0f} ms)"
            )
    finally:
        release.set()
        for t in threads:
            t.join(timeout=120)
    assert len(started) == 8, f"only {len(started)} of 8 exports were answered at once"
    ok = [r for r in results if r[0] == 200]
    busy = [r for r in results if r[0] == 503]
    assert ok and len(ok) + len(busy) == 8, [r[0] for r in results]
    for _, body, _ in ok:
        assert body.count(b"\r\n") == FLIGHTS + 1  # the header and every flight
    for _, body, headers in busy:
        assert headers["Content-Type"] == "application/json"
        assert int(headers["Retry-After"]) > 0
        assert json.loads(body)["error"]["code"] == 503
    figures.notes.append(
        f"{len(ok)} exports held open mid-stream, {len(busy)} got 503 + Retry-After; one-flight "
        f"GET median {sorted(latencies)[2] * 1e3:.0f} ms, max {max(latencies) * 1e3:.0f} ms "
        f"(quiet median {quiet:.0f} ms)"
    )
    figures.record()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        # Over the 64 KiB limit and never finished: the server answers as soon as it is over
        # (sending the rest after its answer would only make the kernel reset the connection).
        (b"GET /v1/flights HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000, 431),
        (b"GET /v1/flights HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", 400),
    ],
    ids=["bad request line", "oversized headers", "bad Content-Length"],
)
def test_malformed_requests_get_the_one_json_error_shape(
    serve: tuple[Serve, str], request_bytes: bytes, status: int
) -> None:
    server, _ = serve
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(request_bytes)
        s.settimeout(10)
        response = b""
        try:
            while chunk := s.recv(65536):
                response += chunk
        except ConnectionResetError:
            # The server closed with our unread bytes in its buffer: the kernel resets the
            # connection, after the answer it had already sent.
            pass
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == str(status).encode(), head
    assert b"Content-Type: application/json" in head
    assert json.loads(body)["error"]["code"] == status
