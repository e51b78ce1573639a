"""JSON log lines keep every field a call site passes (`extra`), in Cloud Logging's shape."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from flightpipe import replay, telemetry
from flightpipe.broker.embedded import EmbeddedBroker
from flightpipe.telemetry import JsonFormatter, request_id_var, trace_var


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """What the JSON formatter writes for the `flightpipe` loggers, one object per line."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("flightpipe")
    logger.addHandler(handler)
    level, logger.level = logger.level, logging.INFO
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def entries(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_extra_field_arrives_next_to_severity_message_time_and_logger(
    lines: io.StringIO,
) -> None:
    when = dt.datetime(2013, 1, 1, tzinfo=dt.UTC)
    token = request_id_var.set("req-1"), trace_var.set("projects/p/traces/abc")
    try:
        logging.getLogger("flightpipe.test").warning(
            "wrote %d rows",
            3,
            extra={
                "topic": "t",
                "attempt": 2,
                "nested": {"a": [1]},
                "at": when,
                "path": Path("/x"),
            },
        )
    finally:
        request_id_var.reset(token[0])
        trace_var.reset(token[1])
    (entry,) = entries(lines)
    assert entry["severity"] == "WARNING"
    assert entry["message"] == "wrote 3 rows"
    assert entry["logger"] == "flightpipe.test"
    assert dt.datetime.fromisoformat(str(entry["time"])).tzinfo is not None
    assert entry["request_id"] == "req-1"
    assert entry["logging.googleapis.com/trace"] == "projects/p/traces/abc"
    assert (entry["topic"], entry["attempt"], entry["nested"]) == ("t", 2, {"a": [1]})
    assert entry["at"] == "2013-01-01T00:00:00+00:00" and entry["path"] == "/x"


def test_an_exception_is_logged_with_its_traceback(lines: io.StringIO) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("flightpipe.test").exception("failed", extra={"batch": 7})
    (entry,) = entries(lines)
    assert "ValueError: boom" in str(entry["exception"]) and entry["batch"] == 7


def test_the_fields_the_old_formatter_dropped_arrive(lines: io.StringIO, tmp_path: Path) -> None:
    # replay.py, pubsub.py and bigquery.py passed plain `extra` fields that were lost; the broker
    # and replay here are real (the embedded broker logs like the Pub/Sub one).
    broker = EmbeddedBroker(tmp_path / "broker.sqlite")
    try:
        broker.create_topic("flights")
        published = replay.replay(broker, "flights", [[b"{}", b"{}"]], progress=False)
    finally:
        broker.close()
    assert published == 2
    (finished,) = [e for e in entries(lines) if e["message"] == "replay finished"]
    assert finished["topic"] == "flights" and finished["published"] == 2
    assert {"seconds", "rate_limit"} <= set(finished)


def test_configure_logging_installs_the_json_formatter_once() -> None:
    root = logging.getLogger()
    saved = root.handlers[:]
    try:
        telemetry.configure_logging("INFO")
        telemetry.configure_logging("DEBUG")
        json_handlers = [h for h in root.handlers if isinstance(h.formatter, JsonFormatter)]
        assert len(json_handlers) == 1 and root.level == logging.DEBUG
    finally:
        root.handlers[:] = saved
