"""In-memory fakes of the ports, for unit tests of the code that uses them.

`FakeBroker` keeps only what the subscriber needs (publish, pull, ack, nack, deadlines); the real
adapters are covered by the port contract tests. `FlakyWarehouse` wraps a real warehouse and fails
on demand, to test retries without mocking DuckDB.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Sequence
from typing import Any

from flightpipe.broker import Message, NotFound, OutgoingMessage, SubscriptionConfig
from flightpipe.warehouse import Envelope, RowErrors, WarehouseError, WarehouseUnavailable


class FakeBroker:
    """Topics with fan-out, leases without deadlines, everything under one lock."""

    def __init__(self) -> None:
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
                from flightpipe.broker import BrokerError

                self.fail_publish -= 1
                raise BrokerError("injected publish failure")
            ids = []
            for data, attributes in messages:
                mid = str(next(self._ids))
                ids.append(mid)
                self.published[topic].append((data, dict(attributes)))
                for sub in self.topics[topic]:
                    self.pending[sub].append(
                        Message(
                            mid, data, dict(attributes), dt.datetime.now(dt.UTC), f"{sub}:{mid}"
                        )
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

    def close(self) -> None:
        pass


class FlakyWarehouse:
    """Delegates to a real warehouse; `fail_next` writes raise `error` first."""

    def __init__(self, inner: Any, error: type[WarehouseError] = WarehouseUnavailable) -> None:
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

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
