"""Settling messages with the broker once their fate is known.

* the acker (`Acker`, a thread of its own) acks batches after the warehouse committed them, then
  records the write metrics, so the writer starts the next write while the broker deletes the last
  batch (docs/benchmarks.md); a `Release` in its queue stops the lease keeping of a batch whose
  acks were all sent before it;
* `dead_letter` publishes invalid messages to the dead-letter topic with their reason, then acks
  them: a crash in between duplicates a dead letter, never loses one.

Both retry broker calls through outages (`retry_broker`): the work they confirm is done, so
dropping the call would redeliver it.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from flightpipe import telemetry
from flightpipe.broker import Broker, BrokerError, Message
from flightpipe.redrive import (
    ORIGINAL_ID_ATTRIBUTE,
    REASON_ATTRIBUTE,
    SOURCE_ATTRIBUTE,
    truncate_utf8,
)
from flightpipe.retry import RetryState, retrying
from flightpipe_subscriber.leases import Leases

log = logging.getLogger(__name__)
LATENCY_SAMPLES = 100


@dataclass(frozen=True, slots=True)
class Committed:
    """A committed batch on its way to be acked."""

    ack_ids: list[str]
    publish_times: list[dt.datetime]
    new: int


@dataclass(frozen=True, slots=True)
class Release:
    """Every ack of a batch has been sent before this: stop extending its leases."""

    lease: int


def retry_broker(call: Callable[[], object], stopping: threading.Event) -> None:
    """Retry a broker call until it succeeds, or give up a few attempts after `stopping` is set
    (the messages are then redelivered)."""

    def failed(state: RetryState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning("broker call failed, retrying: %s", error)

    try:
        retrying(
            lambda exc: isinstance(exc, BrokerError),
            initial=0.1,
            max_wait=5.0,
            stopping=stopping,
            attempts_when_stopping=5,
            on_retry=failed,
        )(call)
    except BrokerError as exc:
        log.error("giving up on broker call while stopping: %s", exc)


def dead_letter(
    broker: Broker,
    subscription: str,
    topic: str,
    items: Sequence[tuple[Message, str]],
    stopping: threading.Event,
) -> None:
    """Publish each message with its reason to the dead-letter topic, then ack it.

    Every attribute is copied, the redrive's count and history included, so a message
    dead-lettered again keeps the reasons of the earlier times (`flightpipe.redrive`).
    """
    outgoing = [
        (
            message.data,
            {
                **message.attributes,
                REASON_ATTRIBUTE: truncate_utf8(reason),
                ORIGINAL_ID_ATTRIBUTE: message.message_id,
                SOURCE_ATTRIBUTE: subscription,
            },
        )
        for message, reason in items
    ]
    retry_broker(lambda: broker.publish(topic, outgoing), stopping)
    retry_broker(lambda: broker.ack(subscription, [m.ack_id for m, _ in items]), stopping)
    for _, reason in items:
        telemetry.MESSAGES_DEAD_LETTERED.labels(reason=reason.split(":", 1)[0]).inc()
    log.warning(
        "dead-lettered %d invalid message(s)",
        len(items),
        extra={"first_reason": items[0][1][:300]},
    )


class Acker:
    """Acks committed batches in order and releases their leases (see the module docstring)."""

    def __init__(
        self, broker: Broker, subscription: str, leases: Leases, stopping: threading.Event
    ) -> None:
        self.broker = broker
        self.subscription = subscription
        self.leases = leases
        self.stopping = stopping
        # Bounded so leases cannot pile up behind a slow broker.
        self._queue: queue.Queue[Committed | Release | None] = queue.Queue(maxsize=2)
        self.thread: threading.Thread | None = None

    def put(self, item: Committed | Release | None) -> None:
        """Queue for the acker, never blocking forever behind a dead one."""
        while True:
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                if self.thread is None or not self.thread.is_alive():
                    return

    def run(self) -> None:
        """The acker thread's loop, until a None in the queue."""
        while (item := self._queue.get()) is not None:
            if isinstance(item, Release):
                self.leases.release(item.lease)
            else:
                self._ack(item)

    def _ack(self, committed: Committed) -> None:
        """Ack one committed batch and record what its commit means for the metrics."""
        retry_broker(lambda: self.broker.ack(self.subscription, committed.ack_ids), self.stopping)
        now = dt.datetime.now(dt.UTC)
        published = committed.publish_times
        telemetry.MESSAGES_WRITTEN.inc(len(published))
        telemetry.MESSAGES_DUPLICATE.inc(len(published) - committed.new)
        # A systematic sample (at most LATENCY_SAMPLES a batch) keeps the histogram's shape
        # without paying a locked observe() per message on the hot path.
        for when in published[:: max(1, len(published) // LATENCY_SAMPLES)]:
            telemetry.END_TO_END_LATENCY.observe(max(0.0, (now - when).total_seconds()))
        telemetry.record_commit(max(published).timestamp())
