"""The subscriber loop: pull, validate, write in bulk, ack only what is committed.

Delivery is at-least-once; the warehouse's idempotency on `event_id` makes it exactly-once in
effect. Two threads form a short pipeline so the broker and the warehouse work at the same time:

* the puller leases batches (up to `batch_size` messages / `max_inflight_bytes`), validates each
  message against the contract, and hands the batch over through a bounded queue (flow control:
  at most `max_inflight_messages` leased at once);
* the writer dead-letters invalid messages at once (`settle.dead_letter`: published with the
  reason, then acked), writes the valid ones in one bulk write, and hands their ack ids to the
  acker only after the write committed. A failed write acks nothing: it is retried with
  exponential backoff and jitter while the leases are extended. A batch the warehouse rejects for
  good is split in halves until the offending messages are found and dead-lettered, so one bad
  row never blocks the others;
* the acker (`settle.Acker`) acks committed batches (and then records the write metrics), so
  the writer starts the next write while the broker deletes the last batch (docs/benchmarks.md);
* the leaser (`leases.Leases`) extends the lease of every message held, from its pull until its ack
  or nack, every third of the ack deadline: an outage of any length redelivers nothing.

One retry layer: the writer retries a failed write (backoff up to FLIGHTPIPE_RETRY_MAX_SECONDS)
for as long as it takes, since it owns the leases; the warehouse adapters try once with a timeout.

Failure isolation: any exception while decoding or validating one message dead-letters that
message alone (`validate_messages`). Any other exception that escapes a thread is a bug or a broken
process: it is logged once with its cause, the process turns unhealthy (`healthy()` is False,
/healthz answers 503) and `run()` returns with `failure` set so the entrypoint exits non-zero and
the platform restarts it; the messages held are redelivered, none is dead-lettered for it.

The threads share one stop event, the batch queue, the leases and the failure state, and the
writer's halving, confirming and retrying is one algorithm: they stay here. What stands alone is
apart: validation (`batches.py`), settling with the broker, acks and dead letters (`settle.py`),
lease keeping (`leases.py`), health (`health.py`), the retry style (`flightpipe.retry`).

`stop()` (SIGTERM) stops pulling, finishes and acks the batch in hand, gives queued batches back
(nack: immediate redelivery) and returns once every committed batch is acked.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from flightpipe import telemetry, tracing
from flightpipe.broker import Broker, BrokerError, Message
from flightpipe.retry import RetryState, retrying
from flightpipe.settings import Settings
from flightpipe.warehouse import (
    Envelope,
    RowErrors,
    Warehouse,
    WarehouseError,
    WarehouseUnavailable,
)
from flightpipe_subscriber.batches import Batch, validate_messages
from flightpipe_subscriber.leases import Leases
from flightpipe_subscriber.settle import Acker, Committed, Release, dead_letter

log = logging.getLogger(__name__)
_BACKLOG_EVERY_S = 5.0


class _EveryRowRejected(Exception):
    """The warehouse rejected every row of a batch: retried as an outage (see _write_and_ack)."""


class SubscriberFailed(Exception):
    """A thread of the subscriber died; the process must exit and be restarted."""


class Subscriber:
    """Moves messages from a subscription into the warehouse (see the module docstring)."""

    def __init__(self, broker: Broker, warehouse: Warehouse, settings: Settings) -> None:
        self.broker = broker
        self.warehouse = warehouse
        self.settings = settings
        self.subscription = settings.subscription
        self._stopping = threading.Event()
        depth = max(1, settings.max_inflight_messages // settings.batch_size - 1)
        self._queue: queue.Queue[Batch | None] = queue.Queue(maxsize=depth)
        self._puller: threading.Thread | None = None
        self.leases = Leases(broker, self.subscription, settings.ack_deadline_seconds)
        self._acker = Acker(broker, self.subscription, self.leases, self._stopping)
        self._threads: list[threading.Thread] = []
        self.max_delivery_attempt = 0
        # The first thread failure, as "<thread>: <ExcType>: <message>"; None while healthy.
        self.failure: str | None = None
        # The last write error while the warehouse keeps failing; None once a write commits.
        self.warehouse_error: str | None = None
        # The last pull error while the broker keeps failing; None once a pull answers.
        self.broker_error: str | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish the batch in hand and return."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def healthy(self) -> bool:
        """Alive and able to make progress: no thread died and none is missing (liveness)."""
        if self.failure is not None or self._stopping.is_set():
            return False
        return all(t.is_alive() for t in self._threads)

    def ready(self) -> bool:
        """Healthy and both the broker and the warehouse answer (an outage is no reason to kill)."""
        return self.healthy() and self.warehouse_error is None and self.broker_error is None

    def _fail(self, where: str, exc: BaseException) -> None:
        """Record the first thread failure, log its cause once, and stop the loop."""
        if self.failure is None:
            self.failure = f"{where}: {type(exc).__name__}: {exc}"
            log.critical(
                "subscriber thread %s died, exiting so the platform restarts the process: %s: %s",
                where,
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
        self._stopping.set()

    def _supervised(self, target: Callable[[], object], name: str) -> threading.Thread:
        def body() -> None:
            try:
                target()
            except BaseException as exc:
                self._fail(name, exc)

        thread = threading.Thread(target=body, name=name, daemon=True)
        thread.start()  # before it is listed: a listed thread that is not alive has died
        self._threads.append(thread)
        return thread

    def run(self) -> None:
        """Run until `stop()` or a failure; the calling thread becomes the writer.

        Raises SubscriberFailed (after giving every held message back) when a thread died.
        """
        leaser_stop = threading.Event()  # outlives `_stopping`: the batch in hand stays leased
        self._supervised(lambda: self.leases.run(leaser_stop), "leaser")
        acker = self._acker.thread = self._supervised(self._acker.run, "acker")
        self._puller = self._supervised(self._pull_loop, "puller")
        self._threads.append(threading.current_thread())
        try:
            while True:
                try:
                    batch = self._queue.get(timeout=0.2)
                except queue.Empty:
                    if self._stopping.is_set() and not self._puller.is_alive():
                        break
                    continue
                if batch is None:
                    break
                self._handle(batch)
        except BaseException as exc:
            self._fail("writer", exc)
        finally:
            self._stopping.set()
            self._give_back_queued()
            self._puller.join(timeout=2)
            self._acker.put(None)
            acker.join(timeout=self.settings.shutdown_grace_seconds)
            if self.failure is not None:
                # Give back what is still held (a batch in hand when a thread died) so another
                # process takes it at once rather than after the lease lapses.
                self._safe(lambda: self.broker.nack(self.subscription, self.leases.held()))
            leaser_stop.set()
        if self.failure is not None:
            raise SubscriberFailed(self.failure)

    def _give_back_queued(self) -> None:
        while True:
            try:
                batch = self._queue.get_nowait()
            except queue.Empty:
                return
            if batch:
                self._give_back(batch)

    def _give_back(self, batch: Batch) -> None:
        """Nack a held batch (immediate redelivery) and stop extending it."""
        self.leases.release(batch.lease)
        self._safe(functools.partial(self.broker.nack, self.subscription, batch.ack_ids))

    # --- puller --------------------------------------------------------------------------------

    def _pull_loop(self) -> None:
        last_backlog = 0.0
        try:
            while not self._stopping.is_set():
                messages = self._pull_batch()
                if time.monotonic() - last_backlog > _BACKLOG_EVERY_S:
                    self._observe_backlog()
                    last_backlog = time.monotonic()
                if not messages:
                    continue
                lease = self.leases.hold([m.ack_id for m in messages])
                telemetry.MESSAGES_RECEIVED.inc(len(messages))
                telemetry.BATCH_SIZE.observe(len(messages))
                attempt = max(m.delivery_attempt for m in messages)
                if attempt > 1:
                    telemetry.MESSAGES_REDELIVERED.inc(
                        sum(1 for m in messages if m.delivery_attempt > 1)
                    )
                if attempt > self.max_delivery_attempt:
                    self.max_delivery_attempt = attempt
                    telemetry.DELIVERY_ATTEMPT_MAX.set(attempt)
                batch = validate_messages(messages)
                batch.lease = lease
                while True:
                    try:
                        self._queue.put(batch, timeout=0.2)
                        break
                    except queue.Full:
                        if self._stopping.is_set():
                            self._give_back(batch)
                            return
        finally:
            self._queue.put(None)

    def _pull_batch(self) -> list[Message]:
        """Lease up to batch_size messages: wait for the first, then top up without waiting."""
        s = self.settings
        try:
            messages = self.broker.pull(self.subscription, s.batch_size, timeout=1.0)
            size = sum(len(m.data) for m in messages)
            while messages and len(messages) < s.batch_size and size < s.max_inflight_bytes:
                more = self.broker.pull(
                    self.subscription, s.batch_size - len(messages), timeout=0.0
                )
                if not more:
                    break
                messages.extend(more)
                size += sum(len(m.data) for m in more)
        except BrokerError as exc:
            self.broker_error = f"{type(exc).__name__}: {exc}"
            log.warning("pull failed, retrying: %s", exc)
            self._stopping.wait(1.0)
            return []
        self.broker_error = None
        return messages

    def _observe_backlog(self) -> None:
        try:
            backlog = self.broker.backlog(self.subscription)
        except BrokerError:
            return
        if backlog is None:  # reported by the broker itself (Pub/Sub: Cloud Monitoring)
            return
        count, oldest_age = backlog
        telemetry.SUBSCRIPTION_BACKLOG.set(count)
        telemetry.SUBSCRIPTION_OLDEST_UNACKED_AGE.set(oldest_age or 0.0)

    # --- writer --------------------------------------------------------------------------------

    def _handle(self, batch: Batch) -> None:
        """Dead-letter the invalid messages, write and ack the valid ones."""
        if batch.invalid:
            self._dead_letter(batch.invalid)
        if batch.valid:
            self._write_and_ack(batch.valid)
        if batch.lease:
            # After this batch's acks in the acker's queue: released once they are sent.
            self._acker.put(Release(batch.lease))

    def _dead_letter(self, items: Sequence[tuple[Message, str]]) -> None:
        topic = self.settings.dead_letter_topic
        dead_letter(self.broker, self.subscription, topic, items, self._stopping)

    def _write_and_ack(self, items: Sequence[tuple[Message, Envelope]]) -> None:
        """Write and ack the valid messages; dead-letter only rows the warehouse proved bad.

        A permanent rejection is split in halves until the culprits are found. When nothing of a
        multi-message batch could be stored, the cause is the warehouse (a schema change, a
        broken table), not the data: it is retried as an outage instead of dead-letter everything.
        (Each write inside is retried through outages by `_retry_write`; this retries the batch
        when every row was rejected. Both are the writer's, which holds the leases.)
        """
        attempts = 0

        def attempt() -> None:
            nonlocal attempts
            attempts += 1
            if attempts > 1 and self._stopping.is_set():
                raise _EveryRowRejected  # woken from the backoff by stop(): give the batch back
            # Rows the warehouse named (BigQuery's insertErrors) and rows found by halving.
            named: list[tuple[Message, str]] = []
            suspects: list[tuple[Message, str]] = []
            stored = self._write_split(items, suspects, named)
            if not suspects and not named:
                return
            if stored or len(items) == 1:
                culprits = named + self._confirm(items, suspects)
                if culprits:
                    self._dead_letter(culprits)
                return
            suspects += named
            self.warehouse_error = f"every row rejected: {suspects[0][1]}"
            telemetry.WRITE_FAILURES.inc()
            log.error(
                "the warehouse rejected all %d messages of a batch; retrying it as an outage, "
                "not dead-lettering: %s",
                len(items),
                suspects[0][1][:300],
            )
            raise _EveryRowRejected

        try:
            retrying(
                lambda exc: isinstance(exc, _EveryRowRejected),
                initial=0.2,
                max_wait=self.settings.retry_max_seconds,
                stopping=self._stopping,
                sleep=self._sleep,
            )(attempt)
        except _EveryRowRejected:
            self._safe(lambda: self.broker.nack(self.subscription, [m.ack_id for m, _ in items]))

    def _confirm(
        self, items: Sequence[tuple[Message, Envelope]], suspects: list[tuple[Message, str]]
    ) -> list[tuple[Message, str]]:
        """Write each suspect alone once more; return those rejected again (the culprits).

        A warehouse that recovered halfway through the halving rejected rows that were fine.
        """
        envelopes = {m.ack_id: env for m, env in items}
        culprits: list[tuple[Message, str]] = []
        for message, _ in suspects:
            self._write_split([(message, envelopes[message.ack_id])], culprits, culprits)
        return culprits

    def _write_split(
        self,
        items: Sequence[tuple[Message, Envelope]],
        suspects: list[tuple[Message, str]],
        named: list[tuple[Message, str]],
    ) -> int:
        """Write, halving on permanent errors; collect rejected rows; return how many stored."""
        envelopes = [env for _, env in items]
        ack_ids = [m.ack_id for m, _ in items]
        try:
            with tracing.batch_span(
                "flightpipe.subscriber.write",
                (m.attributes for m, _ in items),
                project=self.settings.google_cloud_project,
            ) as span:
                new = self._retry_write(envelopes, ack_ids)
                span.set_attribute("flightpipe.events.new", new)
        except RowErrors as exc:
            # Partial success (BigQuery's skipInvalidRows): the named rows are rejected for good,
            # every other one is stored. The rejects are named, the stored ones are acked.
            named.extend(
                (m, f"warehouse: {exc.errors[e.event.event_id]}")
                for m, e in items
                if e.event.event_id in exc.errors
            )
            stored = [(m, e) for m, e in items if e.event.event_id not in exc.errors]
            self._acknowledge_written(stored, exc.written)
            return len(stored)
        except WarehouseUnavailable:
            # Only reached when stopping: give the batch back instead of losing the lease silently.
            self._safe(lambda: self.broker.nack(self.subscription, ack_ids))
            return 0
        except WarehouseError as exc:
            if len(items) == 1:
                suspects.append((items[0][0], f"warehouse: {exc}"))
                return 0
            middle = len(items) // 2
            return self._write_split(items[:middle], suspects, named) + self._write_split(
                items[middle:], suspects, named
            )
        self._acknowledge_written(items, new)
        return len(items)

    def _acknowledge_written(self, items: Sequence[tuple[Message, Envelope]], new: int) -> None:
        """Have committed messages acked (by the acker when running), then counted."""
        if not items:
            return
        committed = Committed(
            [m.ack_id for m, _ in items],
            [env.publish_time for _, env in items],
            new,
        )
        self._acker.put(committed)

    def _retry_write(self, envelopes: list[Envelope], ack_ids: list[str]) -> int:
        """Write until it commits (or we stop); the leaser keeps the batch leased meanwhile."""

        def failed(state: RetryState) -> None:
            telemetry.WRITE_FAILURES.inc()
            error = state.outcome.exception() if state.outcome else None
            self.warehouse_error = f"{type(error).__name__}: {error}"
            log.warning(
                "warehouse write failed (attempt %d), retrying: %s",
                state.attempt_number,
                self.warehouse_error,
                extra={"messages": len(ack_ids)},
            )

        for attempt in retrying(
            lambda exc: isinstance(exc, WarehouseUnavailable),
            initial=0.2,
            max_wait=self.settings.retry_max_seconds,
            stopping=self._stopping,
            on_retry=failed,
            sleep=self._sleep,
        ):
            with attempt, telemetry.BATCH_WRITE_SECONDS.time():
                new = self.warehouse.write(envelopes)
                if self.warehouse_error is not None:
                    log.info(
                        "warehouse write succeeded again after: %s",
                        self.warehouse_error,
                        extra={"attempt": attempt.retry_state.attempt_number},
                    )
                    self.warehouse_error = None
                return new
        raise WarehouseUnavailable("retries exhausted")  # pragma: no cover - Retrying re-raises

    def _sleep(self, seconds: float) -> None:
        """Back off, but wake at once when asked to stop."""
        self._stopping.wait(seconds)

    def _safe(self, call: Callable[[], object]) -> None:
        try:
            call()
        except BrokerError as exc:
            log.warning("broker call failed (the lease will expire instead): %s", exc)
