"""`PubSubBroker`: the broker port on Google Cloud Pub/Sub (or its emulator).

Contract (see `flightpipe.broker`): publish returns message ids in input order; `pull` leases up to
N messages, waiting up to `timeout` seconds for the first; ack/nack/modify_ack_deadline act on
ack ids; a missing topic or subscription raises `NotFound`; any other API failure raises
`BrokerError` (the caller retries or lets Pub/Sub redeliver).

Why synchronous pull: `pull(max_messages=1000)` plus batched `acknowledge` drains far faster
than the client's callback-based streaming pull (bench/pubsub.py, docs/benchmarks.md). The
subscriber keeps flow control itself (it pulls only what it can hold) and extends leases of slow
writes with `modify_ack_deadline`.

Exactly-once subscriptions: the unary `Acknowledge` RPC used here only returns once the service
has recorded the acks and fails when it could not, which is what `ack_with_response` gives a
streaming-pull user; a failure surfaces as `BrokerError` and the message is redelivered.

One retry layer (`flightpipe.retry`): every RPC is tried once (`retry=None`), bounded by
`rpc_timeout` (`lease_rpc_timeout` for ack, nack and modify_ack_deadline), because its caller owns
the retry: the subscriber's acker and dead-letterer retry until they succeed, its lease keeper
sends the extensions again every third of the ack deadline (an RPC retried for a minute inside it
would let the leases it is extending lapse), the publishers (`flightpipe replay` / `publish`) and
the topology set-up retry transient failures themselves.
google-api-core: a GAPIC method's `retry=None` disables retries and `timeout` bounds the call
(`google.api_core.gapic_v1.method.wrap_method`). The deadline per call is 0-600 s
(`ModifyAckDeadlineRequest.ack_deadline_seconds` in google/pubsub/v1/pubsub.proto).

The client talks to the emulator when `PUBSUB_EMULATOR_HOST` is set at construction time.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

from google.api_core import exceptions as gexc
from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient
from google.cloud.pubsub_v1.types import BatchSettings
from google.pubsub_v1 import types as pubsub_types

from flightpipe.broker import (
    Backlog,
    BrokerError,
    Message,
    NotFound,
    OutgoingMessage,
    SubscriptionConfig,
)

log = logging.getLogger(__name__)

# The service returns at most 1,000 messages per Pull.
PULL_CHUNK: Final = 1000
# The client library's own ack batch size keeps each request far below the 512 KB request limit.
ACK_CHUNK: Final = 1000
# A Publish request may carry 10 MB; leave room for the request's own overhead.
PUBLISH_MAX_BYTES: Final = 9_000_000
# The RPC needs a little time even when the caller asked not to wait.
MIN_PULL_RPC_SECONDS: Final = 0.5


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """Turn Google API errors into the port's exceptions."""
    try:
        yield
    except gexc.NotFound as exc:
        raise NotFound(f"{what}: {exc.message}") from exc
    except (gexc.GoogleAPIError, concurrent.futures.TimeoutError) as exc:
        # GoogleAPIError covers every RPC failure (ServiceUnavailable, DeadlineExceeded,
        # RetryError, InvalidArgument...): the port has one retryable error for all of them.
        raise BrokerError(f"{what}: {type(exc).__name__}: {exc}") from exc


def _utc(ts: Any) -> dt.datetime:
    """A protobuf Timestamp as a timezone-aware UTC datetime."""
    return dt.datetime.fromtimestamp(ts.seconds, tz=dt.UTC) + dt.timedelta(
        microseconds=ts.nanos // 1000
    )


class PubSubBroker:
    """The broker port on Pub/Sub; resource names are short names or full resource paths."""

    def __init__(
        self,
        project: str,
        *,
        rpc_timeout: float = 60.0,
        lease_rpc_timeout: float = 10.0,
        publisher: PublisherClient | None = None,
        subscriber: SubscriberClient | None = None,
    ) -> None:
        if not project:
            raise ValueError("PubSubBroker needs a Google Cloud project id")
        self.project = project
        self._rpc_timeout = rpc_timeout
        self._lease_rpc_timeout = lease_rpc_timeout
        # The generated clients would retry for up to 60-600 s; every call here is tried once and
        # bounded by `rpc_timeout`, so a dead endpoint becomes a BrokerError the caller acts on.
        self._publisher = publisher or PublisherClient(
            batch_settings=BatchSettings(
                max_bytes=PUBLISH_MAX_BYTES, max_latency=0.01, max_messages=1000
            )
        )
        self._subscriber = subscriber or SubscriberClient()

    # --- names ---------------------------------------------------------------------------

    def topic_path(self, topic: str) -> str:
        """The full resource path of a topic."""
        return topic if topic.startswith("projects/") else f"projects/{self.project}/topics/{topic}"

    def subscription_path(self, subscription: str) -> str:
        """The full resource path of a subscription."""
        if subscription.startswith("projects/"):
            return subscription
        return f"projects/{self.project}/subscriptions/{subscription}"

    # --- administration ------------------------------------------------------------------

    def create_topic(self, topic: str) -> None:
        """Create the topic if it does not exist (idempotent)."""
        with _translated(f"create topic {topic}"):
            try:
                self._publisher.create_topic(
                    name=self.topic_path(topic), retry=None, timeout=self._rpc_timeout
                )
            except gexc.AlreadyExists:
                return
        log.info("created topic", extra={"topic": topic})

    def create_subscription(self, subscription: str, config: SubscriptionConfig) -> None:
        """Create the subscription if it does not exist (idempotent); the topic must exist."""
        request = pubsub_types.Subscription(
            name=self.subscription_path(subscription),
            topic=self.topic_path(config.topic),
            ack_deadline_seconds=config.ack_deadline_seconds,
            message_retention_duration=dt.timedelta(seconds=config.retention_seconds),
            labels=dict(config.labels),
        )
        if config.dead_letter_topic:
            request.dead_letter_policy = pubsub_types.DeadLetterPolicy(
                dead_letter_topic=self.topic_path(config.dead_letter_topic),
                max_delivery_attempts=config.max_delivery_attempts,
            )
        with _translated(f"create subscription {subscription}"):
            try:
                self._subscriber.create_subscription(
                    request=request, retry=None, timeout=self._rpc_timeout
                )
            except gexc.AlreadyExists:
                return
        log.info("created subscription", extra={"subscription": subscription})

    # --- data path -----------------------------------------------------------------------

    def publish(self, topic: str, messages: Sequence[OutgoingMessage]) -> list[str]:
        """Publish a batch; return the message ids in order. Raises NotFound for a missing topic."""
        path = self.topic_path(topic)
        with _translated(f"publish to {topic}"):
            # The client batches the calls into Publish requests of up to 1,000 messages.
            futures = [
                self._publisher.publish(
                    path, data, retry=None, timeout=self._rpc_timeout, **dict(attrs)
                )
                for data, attrs in messages
            ]
            return [str(f.result(timeout=self._rpc_timeout)) for f in futures]

    def pull(self, subscription: str, max_messages: int, timeout: float = 1.0) -> list[Message]:
        """Lease up to `max_messages`, waiting up to `timeout` seconds for the first one.

        One Pull RPC answers: at most 1,000 messages (the emulator: 100), so callers that want
        larger batches pull again. This call does not top up (pull again until the batch is
        full): that slows the drain (docs/architecture.md, "Hot paths").
        """
        path = self.subscription_path(subscription)
        deadline = time.monotonic() + timeout
        out: list[Message] = []
        while not out:
            remaining = deadline - time.monotonic()
            out = self._pull_once(
                path, min(PULL_CHUNK, max_messages), max(remaining, MIN_PULL_RPC_SECONDS)
            )
            if remaining <= 0:
                break
        return out

    def _pull_once(self, path: str, max_messages: int, rpc_timeout: float) -> list[Message]:
        with _translated(f"pull from {path}"):
            try:
                # retry=None: an empty wait is not an error, and the caller's loop retries.
                response = self._subscriber.pull(
                    subscription=path, max_messages=max_messages, timeout=rpc_timeout, retry=None
                )
            except gexc.DeadlineExceeded:
                return []
        # Reading the raw protobuf avoids building a proto-plus wrapper per field access.
        raw = pubsub_types.PullResponse.pb(response)
        return [
            Message(
                message_id=m.message.message_id,
                data=m.message.data,
                attributes=dict(m.message.attributes),
                publish_time=_utc(m.message.publish_time),
                ack_id=m.ack_id,
                # Pub/Sub counts deliveries only on subscriptions with a dead-letter policy.
                delivery_attempt=max(1, m.delivery_attempt),
            )
            for m in raw.received_messages
        ]

    def ack(self, subscription: str, ack_ids: Sequence[str]) -> None:
        """Acknowledge: these deliveries are done and never redelivered."""
        # retry=None: the acker retries (see the module docstring).
        self._per_chunk(subscription, "ack", self._subscriber.acknowledge, ack_ids)

    def nack(self, subscription: str, ack_ids: Sequence[str]) -> None:
        """Give the messages back for immediate redelivery."""
        self.modify_ack_deadline(subscription, ack_ids, 0)

    def modify_ack_deadline(self, subscription: str, ack_ids: Sequence[str], seconds: int) -> None:
        """Extend (or shorten) the lease of messages still being worked on."""
        # retry=None: the lease keeper's next tick retries.
        rpc = self._subscriber.modify_ack_deadline
        self._per_chunk(
            subscription, "modify ack deadline", rpc, ack_ids, ack_deadline_seconds=seconds
        )

    def _per_chunk(
        self,
        subscription: str,
        what: str,
        rpc: Callable[..., object],
        ack_ids: Sequence[str],
        **request: Any,
    ) -> None:
        """One call of an ack-id RPC per ACK_CHUNK ids, each tried once."""
        path = self.subscription_path(subscription)
        for i in range(0, len(ack_ids), ACK_CHUNK):
            with _translated(f"{what} on {subscription}"):
                rpc(
                    subscription=path,
                    ack_ids=list(ack_ids[i : i + ACK_CHUNK]),
                    retry=None,
                    timeout=self._lease_rpc_timeout,
                    **request,
                )

    def backlog(self, subscription: str) -> Backlog | None:
        """None: Pub/Sub has no cheap RPC for it; Cloud Monitoring records it per subscription
        (`pubsub.googleapis.com/subscription/num_undelivered_messages`, the dashboards' source)."""
        return None

    def close(self) -> None:
        """Release connections (publishes already resolved; nothing is pending)."""
        self._subscriber.close()
        self._publisher.transport.close()
