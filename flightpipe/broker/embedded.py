"""`EmbeddedBroker`: the broker port on one SQLite file, shared by every process on the machine.

Contract (beyond the port's docstring):
* Storage: one row per published message (`messages`, payload stored once) and one row per
  (subscription, message) delivery (`deliveries`). A delivery row is deleted on ack, on
  dead-lettering and when the message outlives the subscription's `retention_seconds`; the message
  row is deleted with its last delivery, so fully-acked payloads free their pages for reuse (the
  file keeps its high-water size; SQLite reuses free pages before growing).
* A publish to a topic with no subscriptions returns ids and stores nothing, as in Pub/Sub.
* `visible_at` orders the queue: a fresh message is visible from its publish time, a leased one
  when its lease ends, a nacked one (or a deadline set to 0) at once and ahead of the backlog.
  `pull` takes the visible deliveries in (visible_at, message id) order through an index, so a
  large number of leased messages costs nothing.
* After `max_delivery_attempts` deliveries without an ack, the next time the message would be
  delivered it is published to the dead-letter topic instead, with the original attributes plus
  `dead_letter_reason=max_delivery_attempts` and Pub/Sub's `CloudPubSubDeadLetterSource*`
  attributes. Without a dead-letter topic the message is redelivered forever (as in Pub/Sub).
* An ack id names one delivery (`"<message id>:<attempt>"`). `ack` accepts any delivery of the
  message (the work is done); `nack` and `modify_ack_deadline` ignore stale deliveries so an old
  consumer cannot move a newer lease.
* Storage, durability and concurrency: `sqlite_file.SqliteFile` (WAL, one connection per thread,
  one short `BEGIN IMMEDIATE` transaction per change, lock waits retried every millisecond up to
  `busy_timeout` seconds). `close()` closes the connections of every thread.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, NamedTuple

import msgspec

from flightpipe.broker import (
    DEAD_LETTER_REASON_ATTRIBUTE,
    MAX_ATTEMPTS_REASON,
    PUBSUB_DEAD_LETTER_PREFIX,
    Backlog,
    Message,
    NotFound,
    OutgoingMessage,
    SubscriptionConfig,
)
from flightpipe.broker.sqlite_file import SqliteFile, in_ids

log = logging.getLogger(__name__)

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS topics (name TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS subscriptions (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, topic TEXT NOT NULL REFERENCES topics,
    ack_deadline REAL NOT NULL, dead_letter_topic TEXT, max_attempts INTEGER NOT NULL,
    retention REAL NOT NULL, labels TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS subscriptions_topic ON subscriptions (topic);
CREATE TABLE IF NOT EXISTS sequence (id INTEGER PRIMARY KEY CHECK (id = 0), last INTEGER NOT NULL);
INSERT OR IGNORE INTO sequence VALUES (0, 0);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY, data BLOB NOT NULL, attributes BLOB, publish_time REAL NOT NULL,
    refs INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    sub_id INTEGER NOT NULL, msg_id INTEGER NOT NULL, visible_at REAL NOT NULL,
    attempts INTEGER NOT NULL, PRIMARY KEY (sub_id, msg_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_ready ON deliveries (sub_id, visible_at, msg_id);
"""
_READY: Final = (
    "SELECT d.msg_id, d.attempts, m.data, m.attributes, m.publish_time"
    " FROM deliveries d JOIN messages m ON m.id = d.msg_id"
    " WHERE d.sub_id = ? AND d.visible_at <= ? ORDER BY d.visible_at, d.msg_id LIMIT ?"
)
_NO_ATTRIBUTES: Final[Mapping[str, str]] = MappingProxyType({})
# msgspec rather than json: attributes are encoded and decoded on the hot path.
_encode_attributes: Final = msgspec.json.Encoder().encode
_decode_attributes: Final = msgspec.json.Decoder(dict[str, str]).decode
_MAX_POLL_SLEEP: Final = 0.1


class _Sub(NamedTuple):
    """A subscription's row (never changed once created)."""

    id: int
    ack_deadline: float
    dead_letter_topic: str | None
    max_attempts: int
    retention: float


class EmbeddedBroker:
    """The broker port on a SQLite file in WAL mode; safe across threads and processes."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = 30.0,
    ) -> None:
        self._clock = clock
        self._db = SqliteFile(path, busy_timeout=busy_timeout)
        self._subs: dict[str, _Sub] = {}
        with self._db.write() as conn:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)

    def close(self) -> None:
        """Close every connection this broker opened, in any thread."""
        self._db.close()

    # -- topics and subscriptions -------------------------------------------------------------

    def create_topic(self, topic: str) -> None:
        """Create the topic if it does not exist (idempotent)."""
        with self._db.write() as conn:
            conn.execute("INSERT OR IGNORE INTO topics VALUES (?)", (topic,))

    def create_subscription(self, subscription: str, config: SubscriptionConfig) -> None:
        """Create the subscription if it does not exist (idempotent; an existing one is kept)."""
        if config.ack_deadline_seconds < 1 or config.max_delivery_attempts < 1:
            raise ValueError("ack_deadline_seconds and max_delivery_attempts must be >= 1")
        with self._db.write() as conn:
            for topic in filter(None, (config.topic, config.dead_letter_topic)):
                if conn.execute("SELECT 1 FROM topics WHERE name = ?", (topic,)).fetchone() is None:
                    raise NotFound(f"topic {topic!r} does not exist")
            conn.execute(
                "INSERT OR IGNORE INTO subscriptions (name, topic, ack_deadline, dead_letter_topic,"
                " max_attempts, retention, labels) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    subscription,
                    config.topic,
                    config.ack_deadline_seconds,
                    config.dead_letter_topic,
                    config.max_delivery_attempts,
                    config.retention_seconds,
                    json.dumps(dict(config.labels)),
                ),
            )

    def _sub(self, subscription: str) -> _Sub:
        # Subscriptions never change once created, so a positive lookup is cached for good.
        sub = self._subs.get(subscription)
        if sub is None:
            row = self._db.read_one(
                "SELECT id, ack_deadline, dead_letter_topic, max_attempts, retention"
                " FROM subscriptions WHERE name = ?",
                (subscription,),
            )
            if row is None:
                raise NotFound(f"subscription {subscription!r} does not exist")
            sub = self._subs[subscription] = _Sub(*row)
        return sub

    # -- publish ------------------------------------------------------------------------------

    def publish(self, topic: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        """Publish a batch in one transaction; return the message ids in order."""
        with self._db.write() as conn:
            return self._publish(conn, topic, messages)

    def _publish(
        self, conn: sqlite3.Connection, topic: str, messages: Sequence[OutgoingMessage]
    ) -> list[str]:
        if conn.execute("SELECT 1 FROM topics WHERE name = ?", (topic,)).fetchone() is None:
            raise NotFound(f"topic {topic!r} does not exist")
        count = len(messages)
        if count == 0:
            return []
        # Ids come from a counter, not the rowid, so they are never reused after reclaiming.
        (last,) = conn.execute(
            "UPDATE sequence SET last = last + ? RETURNING last", (count,)
        ).fetchone()
        first = last - count + 1
        refs = conn.execute(
            "SELECT count(*) FROM subscriptions WHERE topic = ?", (topic,)
        ).fetchone()[0]
        if refs:
            now = self._clock()  # read under the write lock: publish_time follows id order
            # A batch usually shares one attributes mapping (a replay: all of them): encode each
            # distinct object once.
            encoded: dict[int, bytes | None] = {}
            rows = []
            for i, (data, attrs) in enumerate(messages):
                if id(attrs) not in encoded:
                    encoded[id(attrs)] = _encode_attributes(attrs) if attrs else None
                rows.append((first + i, data, encoded[id(attrs)], now, refs))
            conn.executemany(
                "INSERT INTO messages (id, data, attributes, publish_time, refs)"
                " VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute(
                "INSERT INTO deliveries (sub_id, msg_id, visible_at, attempts)"
                " SELECT s.id, m.id, m.publish_time, 0 FROM subscriptions s, messages m"
                " WHERE s.topic = ? AND m.id BETWEEN ? AND ?",
                (topic, first, last),
            )
        return [str(first + i) for i in range(count)]

    # -- pull ---------------------------------------------------------------------------------

    def pull(self, subscription: str, max_messages: int, timeout: float = 1.0) -> list[Message]:
        """Lease up to `max_messages` in queue order, polling up to `timeout` seconds."""
        sub = self._sub(subscription)
        give_up = time.monotonic() + timeout
        pause = 0.002
        while True:
            if max_messages > 0 and self._any_visible(sub):
                with self._db.write() as conn:
                    rows = self._lease(conn, subscription, sub, max_messages)
                if rows:
                    return _messages(rows)  # built after the commit: the lock is held less
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                return []
            # SQLite has no notification; back off so an idle subscriber costs little.
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, _MAX_POLL_SLEEP)

    def _any_visible(self, sub: _Sub) -> bool:
        # A read-only probe so an idle poll never takes the write lock from a publisher.
        row = self._db.read_one(
            "SELECT 1 FROM deliveries WHERE sub_id = ? AND visible_at <= ? LIMIT 1",
            (sub.id, self._clock()),
        )
        return row is not None

    def _lease(
        self, conn: sqlite3.Connection, name: str, sub: _Sub, max_messages: int
    ) -> list[tuple[Any, ...]]:
        now = self._clock()
        self._expire(conn, sub, now)
        leased: list[tuple[Any, ...]] = []
        while len(leased) < max_messages:
            rows = conn.execute(_READY, (sub.id, now, max_messages - len(leased))).fetchall()
            if not rows:
                break
            dead = []
            if sub.dead_letter_topic is not None:
                dead = [row for row in rows if row[1] >= sub.max_attempts]
                if dead:
                    self._dead_letter(conn, name, sub, dead)
                    rows = [row for row in rows if row[1] < sub.max_attempts]
            where, ids = in_ids("msg_id", [row[0] for row in rows])
            conn.execute(
                "UPDATE deliveries SET visible_at = ?, attempts = attempts + 1"
                f" WHERE sub_id = ? AND {where}",
                (now + sub.ack_deadline, sub.id, *ids),
            )
            leased.extend(rows)
            if not dead:
                break  # a full batch, or everything visible; only dead-lettering leaves room
        return leased

    def _dead_letter(
        self, conn: sqlite3.Connection, name: str, sub: _Sub, rows: list[tuple[Any, ...]]
    ) -> None:
        assert sub.dead_letter_topic is not None  # noqa: S101 - callers check
        outgoing: list[OutgoingMessage] = []
        for _, attempts, data, attributes, publish_time in rows:
            attrs = _decode_attributes(attributes) if attributes else {}
            attrs.update(
                {
                    DEAD_LETTER_REASON_ATTRIBUTE: MAX_ATTEMPTS_REASON,
                    f"{PUBSUB_DEAD_LETTER_PREFIX}Subscription": name,
                    f"{PUBSUB_DEAD_LETTER_PREFIX}DeliveryCount": str(attempts),
                    f"{PUBSUB_DEAD_LETTER_PREFIX}TopicPublishTime": _utc(publish_time).isoformat(),
                }
            )
            outgoing.append((data, attrs))
        self._publish(conn, sub.dead_letter_topic, outgoing)
        self._drop(conn, sub, [row[0] for row in rows])
        log.warning(
            "dead-lettered messages",
            extra={
                "subscription": name,
                "dead_letter_topic": sub.dead_letter_topic,
                "count": len(rows),
                "reason": MAX_ATTEMPTS_REASON,
            },
        )

    def _expire(self, conn: sqlite3.Connection, sub: _Sub, now: float) -> None:
        # Publish times follow id order (both are taken under the write lock), so walking the
        # subscription's deliveries by id stops at the first message still inside retention.
        cutoff = now - sub.retention
        expired: list[int] = []
        for msg_id, publish_time in conn.execute(
            "SELECT d.msg_id, m.publish_time FROM deliveries d JOIN messages m ON m.id = d.msg_id"
            " WHERE d.sub_id = ? ORDER BY d.msg_id",
            (sub.id,),
        ):
            if publish_time >= cutoff:
                break
            expired.append(msg_id)
        if expired:
            self._drop(conn, sub, expired)
            log.info(
                "dropped messages past retention",
                extra={"subscription_id": sub.id, "count": len(expired)},
            )

    def _drop(self, conn: sqlite3.Connection, sub: _Sub, msg_ids: Sequence[int]) -> None:
        """Delete deliveries and any message whose last delivery this was."""
        where, ids = in_ids("msg_id", msg_ids)
        gone = conn.execute(
            f"DELETE FROM deliveries WHERE sub_id = ? AND {where} RETURNING msg_id", (sub.id, *ids)
        ).fetchall()
        if not gone:
            return
        where, ids = in_ids("id", [row[0] for row in gone])
        # Delete before decrementing: most messages have one subscription, and deleting a row is
        # cheaper than rewriting it (with its payload) only to delete it next.
        conn.execute(f"DELETE FROM messages WHERE {where} AND refs <= 1", ids)
        conn.execute(f"UPDATE messages SET refs = refs - 1 WHERE {where}", ids)

    # -- ack, nack, deadlines -----------------------------------------------------------------

    def ack(self, subscription: str, ack_ids: Sequence[str]) -> None:
        """Acknowledge: these messages are never delivered to this subscription again."""
        sub = self._sub(subscription)
        msg_ids = _message_ids(ack_ids)
        if msg_ids:
            with self._db.write() as conn:
                self._drop(conn, sub, msg_ids)

    def nack(self, subscription: str, ack_ids: Sequence[str]) -> None:
        """Make the messages visible again at once, ahead of the backlog."""
        self._set_visible(subscription, ack_ids, None)

    def modify_ack_deadline(self, subscription: str, ack_ids: Sequence[str], seconds: int) -> None:
        """Lease the deliveries for `seconds` from now; 0 is a nack."""
        self._set_visible(subscription, ack_ids, seconds if seconds > 0 else None)

    def _set_visible(
        self, subscription: str, ack_ids: Sequence[str], seconds: float | None
    ) -> None:
        sub = self._sub(subscription)
        deliveries = _parse(ack_ids)
        if not deliveries:
            return
        with self._db.write() as conn:
            visible_at = 0.0 if seconds is None else self._clock() + seconds
            conn.executemany(
                "UPDATE deliveries SET visible_at = ? WHERE sub_id = ? AND msg_id = ?"
                " AND attempts = ?",
                [(visible_at, sub.id, msg_id, attempt) for msg_id, attempt in deliveries],
            )

    # -- metrics ------------------------------------------------------------------------------

    def backlog(self, subscription: str) -> Backlog:
        """Unacked messages and the age in seconds of the oldest one (None when empty)."""
        sub = self._sub(subscription)
        with self._db.write() as conn:
            now = self._clock()
            self._expire(conn, sub, now)
            (count,) = conn.execute(
                "SELECT count(*) FROM deliveries WHERE sub_id = ?", (sub.id,)
            ).fetchone()
            row = conn.execute(
                "SELECT m.publish_time FROM deliveries d JOIN messages m ON m.id = d.msg_id"
                " WHERE d.sub_id = ? ORDER BY d.msg_id LIMIT 1",
                (sub.id,),
            ).fetchone()
        return count, (None if row is None else max(0.0, now - row[0]))


def _utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


def _messages(rows: Sequence[tuple[Any, ...]]) -> list[Message]:
    """Build deliveries from `_READY` rows (their attempt count not yet incremented)."""
    # A batch shares a handful of publish times and attribute sets; one datetime and one
    # read-only mapping each save a third of the cost.
    times: dict[float, dt.datetime] = {}
    attribute_sets: dict[bytes, Mapping[str, str]] = {}
    messages = []
    for msg_id, attempts, data, attributes, publish_time in rows:
        when = times.get(publish_time)
        if when is None:
            when = times[publish_time] = _utc(publish_time)
        attrs = _NO_ATTRIBUTES
        if attributes:
            if attributes not in attribute_sets:
                attribute_sets[attributes] = MappingProxyType(_decode_attributes(attributes))
            attrs = attribute_sets[attributes]
        messages.append(
            # Positional arguments: a frozen dataclass built by keyword costs twice as much.
            Message(
                str(msg_id),
                data,
                attrs,
                when,
                f"{msg_id}:{attempts + 1}",
                attempts + 1,
            )
        )
    return messages


def _message_ids(ack_ids: Sequence[str]) -> list[int]:
    """The message ids inside ack ids; ids this broker never issued are ignored, as in Pub/Sub."""
    ids = []
    for ack_id in ack_ids:
        try:
            ids.append(int(ack_id.partition(":")[0]))
        except ValueError:
            continue
    return ids


def _parse(ack_ids: Sequence[str]) -> list[tuple[int, int]]:
    """(message id, attempt) pairs; ids this broker never issued are ignored, as in Pub/Sub."""
    parsed = []
    for ack_id in ack_ids:
        msg_id, _, attempt = ack_id.partition(":")
        if msg_id.isdigit() and attempt.isdigit():
            parsed.append((int(msg_id), int(attempt)))
    return parsed
