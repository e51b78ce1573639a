"""In-memory fakes of the ports, for unit tests of the code that uses them.

Both are typed against their port (`Broker`, `Warehouse`: tests/unit/test_fakes.py checks it with
mypy --strict). `FakeBroker` keeps only what the subscriber needs (publish, pull, ack, nack,
deadlines, backlog); the real adapters are covered by the port contract tests. `FlakyWarehouse`
wraps a real warehouse and fails on demand, to test retries without mocking DuckDB; asked for no
failure, it hands every call to that warehouse unchanged.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Callable, Generator, Sequence
from typing import Any, Literal

from flightpipe.broker import (
    Backlog,
    Broker,
    BrokerError,
    Message,
    NotFound,
    OutgoingMessage,
    SubscriptionConfig,
)
from flightpipe.warehouse import (
    DelayStats,
    Envelope,
    FlightFilter,
    RowErrors,
    Warehouse,
    WarehouseError,
    WarehouseUnavailable,
)
from flightpipe.warehouse.port import GroupBy, Selection


class FakeBroker:
    """Topics with fan-out, leases without deadlines, everything under one lock.

    `now` stamps each message's publish_time and ages the backlog: a test sets it to a fixed,
    old instant so the freshness and backlog-age gauges have exact values to assert.
    """

    def __init__(self) -> None:
        self.now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.topics: dict[str, list[str]] = {}
        self.pending: dict[str, list[Message]] = {}
        self.leased: dict[str, dict[str, Message]] = {}
        self.published: dict[str, list[OutgoingMessage]] = {}
        self.acked: list[str] = []
        self.nacked: list[str] = []
        self.extended: list[str] = []
        self.fail_publish = 0

    def create_topic(self, topic: str) -> None:
        self.topics.setdefault(topic, [])
        self.published.setdefault(topic, [])

    def create_subscription(self, subscription: str, config: SubscriptionConfig) -> None:
        if subscription not in self.pending:
            self.topics[config.topic].append(subscription)
            self.pending[subscription] = []
            self.leased[subscription] = {}

    def publish(self, topic: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        with self._lock:
            if topic not in self.topics:
                raise NotFound(topic)
            if self.fail_publish:
                self.fail_publish -= 1
                raise BrokerError("injected publish failure")
            ids = []
            for data, attributes in messages:
                mid = str(next(self._ids))
                ids.append(mid)
                self.published[topic].append((data, dict(attributes)))
                published = self.now()
                for sub in self.topics[topic]:
                    self.pending[sub].append(
                        Message(mid, data, dict(attributes), published, f"{sub}:{mid}")
                    )
            return ids

    def pull(self, subscription: str, max_messages: int, timeout: float = 1.0) -> list[Message]:
        with self._lock:
            queue = self.pending[subscription]
            taken, self.pending[subscription] = queue[:max_messages], queue[max_messages:]
            for m in taken:
                self.leased[subscription][m.ack_id] = m
            return taken

    def ack(self, subscription: str, ack_ids: Sequence[str]) -> None:
        with self._lock:
            for a in ack_ids:
                self.leased[subscription].pop(a, None)
            self.acked.extend(ack_ids)

    def nack(self, subscription: str, ack_ids: Sequence[str]) -> None:
        with self._lock:
            for a in ack_ids:
                m = self.leased[subscription].pop(a, None)
                if m is not None:
                    self.pending[subscription].insert(0, m)
            self.nacked.extend(ack_ids)

    def modify_ack_deadline(self, subscription: str, ack_ids: Sequence[str], seconds: int) -> None:
        self.extended.extend(ack_ids)

    def settled(self, subscription: str) -> bool:
        """Nothing pending or leased: every message was acked (or dead-lettered and acked)."""
        with self._lock:
            return not self.pending[subscription] and not self.leased[subscription]

    def backlog(self, subscription: str) -> Backlog | None:
        """Unacked messages and the age of the oldest, as Pub/Sub's oldest_unacked_message_age
        counts it: from its publish time, leased or not (https://cloud.google.com/monitoring/api/
        metrics_gcp_p_z, pubsub subscription/oldest_unacked_message_age)."""
        with self._lock:
            unacked = [*self.pending[subscription], *self.leased[subscription].values()]
            if not unacked:
                return 0, None
            oldest = min(m.publish_time for m in unacked)
            return len(unacked), max(0.0, (self.now() - oldest).total_seconds())

    def close(self) -> None:
        pass


class FlakyWarehouse:
    """Delegates to a real warehouse; `fail_next` writes raise `error` first."""

    def __init__(
        self, inner: Warehouse, error: type[WarehouseError] = WarehouseUnavailable
    ) -> None:
        self.inner = inner
        self.error = error
        self.fail_next = 0
        self.calls = 0
        self.reject_event_ids: set[str] = set()
        self.partial_reject_ids: set[str] = set()

    def write(self, batch: Sequence[Envelope]) -> int:
        self.calls += 1
        if self.fail_next:
            self.fail_next -= 1
            raise self.error("injected failure")
        if any(e.event.event_id in self.reject_event_ids for e in batch):
            raise WarehouseError("row rejected by the warehouse")
        if rejected := {e.event.event_id for e in batch} & self.partial_reject_ids:
            # BigQuery's skipInvalidRows: the others are stored, the rejects are named.
            kept = [e for e in batch if e.event.event_id not in rejected]
            written = self.inner.write(kept)
            raise RowErrors({i: "invalid: no such field" for i in rejected}, written)
        result: int = self.inner.write(batch)
        return result

    # The reads delegate to the real warehouse (no getattr: every port method is spelled out).
    def list_flights(self, selection: Selection) -> list[dict[str, Any]]:
        return self.inner.list_flights(selection)

    def export_flights(
        self, selection: Selection, *, fmt: Literal["csv", "ndjson"] = "csv", chunk: int = 5000
    ) -> Generator[bytes, None, None]:
        return self.inner.export_flights(selection, fmt=fmt, chunk=chunk)

    def get_flight(self, flight_id: str) -> dict[str, Any] | None:
        return self.inner.get_flight(flight_id)

    def flight_events(self, flight_id: str) -> list[dict[str, Any]]:
        return self.inner.flight_events(flight_id)

    def delay_stats(
        self, flt: FlightFilter, group_by: GroupBy | Sequence[GroupBy]
    ) -> list[DelayStats]:
        return self.inner.delay_stats(flt, group_by)

    def newest_publish_time(self) -> dt.datetime | None:
        return self.inner.newest_publish_time()

    def count_events(self) -> int:
        return self.inner.count_events()

    def ping(self) -> None:
        self.inner.ping()

    def close(self) -> None:
        self.inner.close()


def _typed(broker: FakeBroker, warehouse: FlakyWarehouse) -> tuple[Broker, Warehouse]:
    """Assignments mypy --strict checks: each fake is its port (tests/unit/test_fakes.py)."""
    return broker, warehouse
