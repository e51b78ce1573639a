"""Dead letters: the attributes that explain them, and the redrive that sends them back.

A dead letter reaches the dead-letter topic two ways: the subscriber publishes the messages it
proved bad with `dead_letter_reason`, `original_message_id` and `source_subscription`; Pub/Sub's
dead-letter policy forwards a message after its maximum delivery attempts with attributes named
`CloudPubSubDeadLetterSource*` and no reason (https://cloud.google.com/pubsub/docs/handling-failures).

`redrive` republishes chosen dead letters to the topic with their payload and their own
attributes, drops the dead-letter ones, counts the redrive (`flightpipe_redrive_count`) and appends
the reason to a bounded JSON history (`flightpipe_dead_letter_history`); the subscriber copies every
attribute when it dead-letters again, so a second dead-lettering keeps the first reason. Publish
first, ack second: an interruption at any point republishes at most twice (the warehouse is
idempotent on `event_id`) and loses nothing. Messages it does not redrive are held (their leases
extended) until the end and then given back, so a filter never sees the same message twice.
Everything goes through the broker port, so both adapters get it unchanged.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from flightpipe.broker import (
    DEAD_LETTER_REASON_ATTRIBUTE,
    MAX_ATTEMPTS_REASON,
    PUBSUB_DEAD_LETTER_PREFIX,
    Broker,
    Message,
)

REASON_ATTRIBUTE = DEAD_LETTER_REASON_ATTRIBUTE
ORIGINAL_ID_ATTRIBUTE = "original_message_id"
SOURCE_ATTRIBUTE = "source_subscription"
REDRIVE_COUNT_ATTRIBUTE = "flightpipe_redrive_count"
HISTORY_ATTRIBUTE = "flightpipe_dead_letter_history"
# "Attribute value size: 1,024 bytes" (https://cloud.google.com/pubsub/quotas#resource_limits).
MAX_ATTRIBUTE_VALUE_BYTES = 1024
HISTORY_REASON_CHARS = 200
_DEAD_LETTER_ATTRIBUTES = frozenset({REASON_ATTRIBUTE, ORIGINAL_ID_ATTRIBUTE, SOURCE_ATTRIBUTE})


def reason_of(message: Message) -> str:
    """Why the message was dead-lettered ("" when nothing says)."""
    reason = message.attributes.get(REASON_ATTRIBUTE)
    if reason is not None:
        return reason
    if any(key.startswith(PUBSUB_DEAD_LETTER_PREFIX) for key in message.attributes):
        return MAX_ATTEMPTS_REASON
    return ""


def truncate_utf8(text: str, max_bytes: int = MAX_ATTRIBUTE_VALUE_BYTES) -> str:
    """`text` cut to at most `max_bytes` of UTF-8 (Pub/Sub's attribute limit is in bytes)."""
    return text.encode()[:max_bytes].decode(errors="ignore")


def _history(attributes: Mapping[str, str]) -> list[object]:
    try:
        entries = json.loads(attributes.get(HISTORY_ATTRIBUTE, "[]"))
    except ValueError:
        return []
    return entries if isinstance(entries, list) else []


def redriven_attributes(message: Message) -> dict[str, str]:
    """The attributes to republish with: the message's own, without the dead-letter ones, plus
    the redrive count and the history (oldest entries dropped to fit one attribute value)."""
    attributes = {
        key: value
        for key, value in message.attributes.items()
        if key not in _DEAD_LETTER_ATTRIBUTES and not key.startswith(PUBSUB_DEAD_LETTER_PREFIX)
    }
    count = attributes.get(REDRIVE_COUNT_ATTRIBUTE, "0")
    entry = {
        "reason": reason_of(message)[:HISTORY_REASON_CHARS],
        "at": message.publish_time.astimezone(dt.UTC).isoformat(timespec="seconds"),
        "id": message.attributes.get(ORIGINAL_ID_ATTRIBUTE, message.message_id),
    }
    history = [*_history(attributes), entry]
    encoded = json.dumps(history, separators=(",", ":"))
    while len(encoded.encode()) > MAX_ATTRIBUTE_VALUE_BYTES and len(history) > 1:
        history.pop(0)
        encoded = json.dumps(history, separators=(",", ":"))
    attributes[REDRIVE_COUNT_ATTRIBUTE] = str(int(count) + 1 if count.isdecimal() else 1)
    attributes[HISTORY_ATTRIBUTE] = truncate_utf8(encoded)
    return attributes


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters to redrive: every criterion given must hold (none given: all)."""

    reasons: tuple[str, ...] = ()  # prefixes of the reason text ("schema" is a reason class)
    since: dt.datetime | None = None  # dead-lettered at or after (the dead letter's publish time)
    until: dt.datetime | None = None  # dead-lettered before
    ids: frozenset[str] = frozenset()  # the dead letter's message id or the original message's

    def matches(self, message: Message) -> bool:
        if self.reasons and not reason_of(message).startswith(self.reasons):
            return False
        if self.since is not None and message.publish_time < self.since:
            return False
        if self.until is not None and message.publish_time >= self.until:
            return False
        if self.ids:
            original = message.attributes.get(ORIGINAL_ID_ATTRIBUTE)
            return message.message_id in self.ids or original in self.ids
        return True


@dataclass(slots=True)
class Report:
    """What a redrive did: `matched` are the dead letters chosen (redriven, or in a dry run to
    be); `remaining` are matches left in place (a dry run, or past the limit)."""

    redriven: int = 0
    skipped: int = 0
    remaining: int = 0
    matched: list[Message] = field(default_factory=list)

    @property
    def seen(self) -> int:
        return self.redriven + self.skipped + self.remaining


@dataclass(slots=True)
class _Held:
    """Deliveries kept leased until the end, so the next pull brings messages not yet seen.

    Pub/Sub redelivers a message whose lease lapsed or was nacked
    (https://cloud.google.com/pubsub/docs/lease-management); held ones are extended a third of the
    way into their lease, as the subscriber's leases are, and nacked at the end.
    """

    broker: Broker
    subscription: str
    lease_seconds: int
    ack_ids: list[str] = field(default_factory=list)
    extended_at: float = field(default_factory=time.monotonic)

    def add(self, new: list[str]) -> None:
        now = time.monotonic()
        due = now - self.extended_at > self.lease_seconds / 3
        targets = [*self.ack_ids, *new] if due else new
        self.ack_ids.extend(new)
        if due:
            self.extended_at = now
        if targets:
            self.broker.modify_ack_deadline(self.subscription, targets, self.lease_seconds)

    def release(self) -> None:
        if self.ack_ids:
            self.broker.nack(self.subscription, self.ack_ids)
            self.ack_ids = []


def redrive(
    broker: Broker,
    dead_letter_subscription: str,
    topic: str,
    selection: DeadLetterFilter,
    *,
    limit: int | None = None,
    dry_run: bool = False,
    batch_size: int = 100,
    # Pub/Sub's longest ack deadline (600 s, https://cloud.google.com/pubsub/docs/lease-management):
    # a held message cannot lapse during a slow publish (its RPC may take up to 60 s); after a
    # kill, the held ones come back within that time.
    lease_seconds: int = 600,
    wait_seconds: float = 1.0,
    progress: Callable[[Report], None] | None = None,
) -> Report:
    """Republish the selected dead letters to `topic`, then ack them (see the module docstring).

    Stops when a pull waiting `wait_seconds` brings nothing (Pub/Sub's Pull may also answer empty
    when it "could not return messages before the request timeout", PullResponse reference:
    https://cloud.google.com/python/docs/reference/pubsub/latest/google.cloud.pubsub_v1.types.PullResponse,
    hence the CLI's longer default) or when `limit` messages were chosen.
    Broker errors propagate once the messages held were given back (best effort).
    """
    report = Report()
    held = _Held(broker, dead_letter_subscription, lease_seconds)
    seen: set[str] = set()
    done: set[str] = set()
    try:
        while limit is None or len(report.matched) < limit:
            wanted = batch_size if limit is None else min(batch_size, limit - len(report.matched))
            messages = broker.pull(dead_letter_subscription, wanted, timeout=wait_seconds)
            if not messages:
                break
            again = [m.ack_id for m in messages if m.message_id in done]
            if again:  # an ack lost on the way (at-least-once): republished already, ack again
                broker.ack(dead_letter_subscription, again)
            fresh = [m for m in messages if m.message_id not in seen]
            keep = [m.ack_id for m in messages if m.message_id in seen and m.message_id not in done]
            seen.update(m.message_id for m in fresh)
            chosen = _choose(fresh, selection, report, limit, keep)
            if dry_run:
                report.remaining += len(chosen)
                keep.extend(m.ack_id for m in chosen)
            elif chosen:
                broker.publish(topic, [(m.data, redriven_attributes(m)) for m in chosen])
                broker.ack(dead_letter_subscription, [m.ack_id for m in chosen])
                done.update(m.message_id for m in chosen)
                report.redriven += len(chosen)
            held.add(keep)
            if progress is not None:
                progress(report)
            if not fresh and not again:
                break  # only messages already seen: every dead letter has been through once
    finally:
        held.release()
    return report


def _choose(
    messages: list[Message],
    selection: DeadLetterFilter,
    report: Report,
    limit: int | None,
    keep: list[str],
) -> list[Message]:
    """The matching messages up to the limit; the others counted and added to `keep`."""
    chosen: list[Message] = []
    for message in messages:
        if not selection.matches(message):
            report.skipped += 1
            keep.append(message.ack_id)
        elif limit is not None and len(report.matched) >= limit:
            report.remaining += 1
            keep.append(message.ack_id)
        else:
            report.matched.append(message)
            chosen.append(message)
    return chosen
