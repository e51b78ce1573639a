"""The broker port: the part of Pub/Sub's semantics flightpipe relies on.

Adapters: `EmbeddedBroker` (SQLite, one machine, many processes) and `PubSubBroker` (Google Cloud
Pub/Sub or its emulator). Both pass the same contract tests (`tests/contract/test_broker_port.py`).

Semantics every adapter keeps:
* a message published to a topic is delivered to every subscription that existed at publish time;
* `pull` leases up to N messages for the subscription's ack deadline; an unacked message is
  redelivered after the deadline (or at once after `nack`) with `delivery_attempt` incremented;
* after `max_delivery_attempts` deliveries without an ack the message goes to the dead-letter topic;
* acked messages are never delivered again (at-least-once: a crash before the ack redelivers).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol, runtime_checkable

import msgspec


class BrokerError(Exception):
    """The broker failed; the operation may succeed if retried."""


class NotFound(BrokerError):
    """The topic or subscription does not exist."""


# Why a dead letter is one: the attribute the subscriber and the embedded broker set on it.
DEAD_LETTER_REASON_ATTRIBUTE: Final = "dead_letter_reason"
# The reason after `max_delivery_attempts` deliveries without an ack. Pub/Sub sets no reason but
# attributes with this prefix (https://cloud.google.com/pubsub/docs/handling-failures); the
# embedded broker sets both.
MAX_ATTEMPTS_REASON: Final = "max_delivery_attempts"
PUBSUB_DEAD_LETTER_PREFIX: Final = "CloudPubSubDeadLetterSource"


class Message(msgspec.Struct, frozen=True):
    """One delivery of a published message to a subscription.

    A msgspec Struct rather than a frozen dataclass: built once per message on the subscriber's
    hot path, where it is much cheaper to create (docs/benchmarks.md).
    """

    message_id: str
    data: bytes
    attributes: Mapping[str, str]
    publish_time: dt.datetime
    ack_id: str
    delivery_attempt: int = 1


@dataclass(frozen=True, slots=True)
class SubscriptionConfig:
    """How a subscription delivers; mirrors the Pub/Sub resource the Pulumi program creates."""

    topic: str
    ack_deadline_seconds: int = 60
    dead_letter_topic: str | None = None
    max_delivery_attempts: int = 5
    retention_seconds: int = 7 * 24 * 3600
    labels: Mapping[str, str] = field(default_factory=dict)


OutgoingMessage = tuple[bytes, Mapping[str, str]]
# Unacked messages on a subscription and the age in seconds of the oldest (None when empty).
Backlog = tuple[int, float | None]


@runtime_checkable
class Broker(Protocol):
    """Topics, subscriptions, publish, pull, ack, nack and ack-deadline changes."""

    def create_topic(self, topic: str) -> None:
        """Create the topic if it does not exist (idempotent)."""

    def create_subscription(self, subscription: str, config: SubscriptionConfig) -> None:
        """Create the subscription if it does not exist (idempotent)."""

    def publish(self, topic: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        """Publish a batch; return the message ids in order. Raises NotFound for a missing topic."""

    def pull(self, subscription: str, max_messages: int, timeout: float = 1.0) -> list[Message]:
        """Lease up to `max_messages`, waiting up to `timeout` seconds for the first one."""

    def ack(self, subscription: str, ack_ids: Sequence[str]) -> None:
        """Acknowledge: these deliveries are done and never redelivered."""

    def nack(self, subscription: str, ack_ids: Sequence[str]) -> None:
        """Give the messages back for immediate redelivery."""

    def modify_ack_deadline(self, subscription: str, ack_ids: Sequence[str], seconds: int) -> None:
        """Extend (or shorten) the lease of messages still being worked on."""

    def backlog(self, subscription: str) -> Backlog | None:
        """The subscription's unacked messages and oldest age, or None if the broker reports
        them elsewhere (Pub/Sub: Cloud Monitoring's `num_undelivered_messages`)."""

    def close(self) -> None:
        """Release connections."""
