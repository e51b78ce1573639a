"""The whole local pipeline with real processes: publish -> subscriber -> DuckDB -> GET."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from tests.factories import as_dict, make_event, payload
from tests.processes import Serve, metric, run_cli, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    server = Serve(tmp_path / "data").start()
    yield server
    server.stop()


def test_a_published_event_is_returned_by_get(serve: Serve, tmp_path: Path) -> None:
    event = make_event()
    file = tmp_path / "one.jsonl"
    file.write_bytes(payload(event) + b"\n")
    result = run_cli("publish", str(file), data_dir=serve.data_dir)
    assert result.returncode == 0, result.stderr
    wait_until(lambda: serve.get(f"/v1/flights/{event.flight_id}")[0] == 200, 30, "the flight")
    data = serve.get(f"/v1/flights/{event.flight_id}")[1]["data"]
    assert {k: data[k] for k in as_dict(event)} == as_dict(event)


def test_poison_messages_are_dead_lettered_with_reasons_and_valid_ones_stored(
    serve: Serve,
) -> None:
    good = [make_event() for _ in range(50)]
    bad = [
        b"{not json",
        b'"just a string"',
        json.dumps({**json.loads(payload(make_event())), "status": "landed"}).encode(),
        json.dumps(
            {k: v for k, v in json.loads(payload(make_event())).items() if k != "origin"}
        ).encode(),
        json.dumps({**json.loads(payload(make_event())), "flight_number": "12"}).encode(),
    ]
    lines = [payload(e) for e in good[:25]] + bad + [payload(e) for e in good[25:]]
    result = run_cli("publish", "-", data_dir=serve.data_dir, stdin=b"\n".join(lines) + b"\n")
    assert result.returncode == 0, result.stderr
    wait_until(
        lambda: metric(serve.base_url, "flightpipe_messages_written_total") >= 50, 30, "writes"
    )
    for e in good:
        assert serve.get(f"/v1/flights/{e.flight_id}")[0] == 200
    wait_until(
        lambda: metric(serve.base_url, "flightpipe_messages_dead_lettered_total") >= len(bad),
        30,
        "dlq",
    )
    listed = run_cli("dlq", "list", data_dir=serve.data_dir)
    assert listed.returncode == 0, listed.stderr
    letters = [json.loads(line) for line in listed.stdout.decode().splitlines()]
    assert sorted(x["data"].encode() for x in letters) == sorted(bad)
    reasons = {x["data"]: x["reason"] for x in letters}
    assert reasons["{not json"].startswith("malformed json")
    assert "`$.status`" in reasons[bad[2].decode()]
    assert "missing required field `origin`" in reasons[bad[3].decode()]
    assert all(x["attributes"]["source"] == "flightpipe-publish" for x in letters)


@pytest.mark.slow
def test_sigkill_while_ingesting_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    limit = 30_000
    server = Serve(data).start()
    try:
        replay = run_cli(
            "replay", "nycflights13", "--limit", str(limit), "--no-progress", data_dir=data
        )
        assert replay.returncode == 0, replay.stderr
        wait_until(
            lambda: metric(server.base_url, "flightpipe_messages_written_total") > 0,
            60,
            "ingest to start",
        )
        server.kill()  # SIGKILL mid-ingest: some batches committed, some leased, some untouched
    finally:
        if server.proc and server.proc.poll() is None:
            server.kill()
    written_before = None
    restarted = Serve(data).start()
    try:

        def all_flights() -> int:
            status, body = restarted.get("/v1/stats/delays?group_by=carrier")
            return sum(r["flights"] for r in body["data"]) if status == 200 else -1

        wait_until(
            lambda: all_flights() == limit, 120, f"{limit} flights after restart", interval=0.5
        )
        # Walk every page: each flight exactly once.
        seen: list[str] = []
        token = None
        while True:
            query = "/v1/flights?limit=1000" + (f"&page_token={token}" if token else "")
            body = restarted.get(query)[1]
            seen += [d["flight_id"] for d in body["data"]]
            token = body["next_page_token"]
            if not token:
                break
        assert len(seen) == len(set(seen)) == limit
        del written_before
    finally:
        assert restarted.stop() == 0
    con = duckdb.connect(str(data / "warehouse.duckdb"), read_only=True)
    total, distinct = con.execute(
        "SELECT count(*), count(DISTINCT event_id) FROM events"
    ).fetchone()
    con.close()
    assert total == distinct == limit


def test_sigterm_exits_zero_within_ten_seconds_while_ingesting(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Serve(data).start()
    replay = run_cli("replay", "nycflights13", "--limit", "20000", "--no-progress", data_dir=data)
    assert replay.returncode == 0
    wait_until(
        lambda: metric(server.base_url, "flightpipe_messages_written_total") > 0, 60, "ingest"
    )
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=10) == 0
