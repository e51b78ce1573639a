"""Lease keeping: every message this process holds stays leased until it is acked or given back.

A message is held from the moment it is pulled, through the queue and the write, until its ack
(or nack, or dead-letter) has been sent. A separate thread extends the lease of everything held,
every third of the ack deadline, so a warehouse outage of any length (503s, or writes hanging up
to their timeout) never lets a lease lapse: no redelivery, no duplicate write, and no delivery
attempt counted against `max_delivery_attempts` while the message sits in this process.

Written by hand: the Pub/Sub client's own lease manager (`google.cloud.pubsub_v1.subscriber.
_protocol.leaser.Leaser`) does the same for streaming pull but is private to it; the subscriber uses
synchronous pull (see `flightpipe.broker.pubsub`), so it keeps leases itself. Like that leaser it
sends `modifyAckDeadline` for every held ack id on a timer; Pub/Sub accepts 0-600 s per call and
counts a redelivery only when a lease lapses or is nacked, never when it is extended
(https://cloud.google.com/pubsub/docs/lease-management).

The extension is one attempt per tick (the broker adapter tries once with a timeout): a failed
tick is logged and the next one, a third of a deadline later, tries again; two ticks may fail
before a lease lapses.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Sequence

from flightpipe.broker import Broker, BrokerError

log = logging.getLogger(__name__)


class Leases:
    """The ack ids held by this process, and the thread that keeps them leased."""

    def __init__(self, broker: Broker, subscription: str, deadline_seconds: int) -> None:
        self._broker = broker
        self._subscription = subscription
        self._deadline = deadline_seconds
        self.interval = max(0.2, deadline_seconds / 3)
        self._lock = threading.Lock()
        self._held: dict[int, Sequence[str]] = {}
        self._tokens = itertools.count(1)
        self.extensions = 0  # lease extensions sent (for tests and the logs)

    def hold(self, ack_ids: Sequence[str]) -> int:
        """Start keeping these ack ids leased; return the token that releases them."""
        token = next(self._tokens)
        with self._lock:
            self._held[token] = ack_ids
        return token

    def release(self, token: int) -> None:
        """Stop extending a held batch (its acks or nacks have been sent)."""
        with self._lock:
            self._held.pop(token, None)

    def held(self) -> list[str]:
        """Every ack id currently held."""
        with self._lock:
            batches = list(self._held.values())
        return [ack_id for batch in batches for ack_id in batch]

    def extend_all(self) -> None:
        """Extend every held lease by one ack deadline (one attempt; the next tick retries)."""
        ack_ids = self.held()
        if not ack_ids:
            return
        try:
            self._broker.modify_ack_deadline(self._subscription, ack_ids, self._deadline)
        except BrokerError as exc:
            log.warning(
                "lease extension failed, retrying in %.1f s: %s",
                self.interval,
                exc,
                extra={"held": len(ack_ids)},
            )
            return
        self.extensions += len(ack_ids)

    def run(self, stop: threading.Event) -> None:
        """Extend the held leases every `interval` seconds until `stop` is set."""
        while not stop.wait(self.interval):
            self.extend_all()
