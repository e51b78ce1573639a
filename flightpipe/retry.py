"""The one retry style: tenacity, exponential backoff with full jitter, run by the caller.

One retry layer per operation, owned by the caller that also owns the lease or the deadline:
adapters try once with a timeout (`PubSubBroker`'s RPCs, BigQuery's insertAll) and raise the
port's retryable error; the caller wraps the call in `retrying(...)`. The subscriber's writer
retries writes while its leases are kept, its acker and dead-letterer retry broker calls, the
publishers (`flightpipe replay` / `publish`) and the topology set-up retry their broker calls.
(BigQuery reads keep one retry inside the adapter, within the query's own time budget: the API
request that waits for them has no retry of its own.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import tenacity

from flightpipe.broker import BrokerError, NotFound

RetryState = tenacity.RetryCallState


def transient_broker_error(exc: BaseException) -> bool:
    """A broker failure that may pass (anything but a missing topic or subscription)."""
    return isinstance(exc, BrokerError) and not isinstance(exc, NotFound)


def retrying(
    retry_on: Callable[[BaseException], bool],
    *,
    initial: float,
    max_wait: float,
    stopping: threading.Event | None = None,
    attempts_when_stopping: int | None = None,
    budget: float | None = None,
    attempts: int | None = None,
    on_retry: Callable[[RetryState], None] | None = None,
    sleep: Callable[[float], Any] | None = None,
) -> tenacity.Retrying:
    """A `tenacity.Retrying` for one caller's operation; the last error is re-raised.

    Stops after `attempts` attempts, when `budget` seconds have passed, or once `stopping` is set
    (after `attempts_when_stopping` attempts if given: calls that must not be dropped get a few
    more).
    """
    stops: list[tenacity.stop.stop_base] = []
    if budget is not None:
        stops.append(tenacity.stop_after_delay(budget))
    if attempts is not None:
        stops.append(tenacity.stop_after_attempt(attempts))
    if stopping is not None:
        on_stop: tenacity.stop.stop_base = tenacity.stop_when_event_set(stopping)
        if attempts_when_stopping is not None:
            on_stop = on_stop & tenacity.stop_after_attempt(attempts_when_stopping)
        stops.append(on_stop)
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(retry_on),
        wait=tenacity.wait_random_exponential(multiplier=initial, max=max_wait),
        stop=tenacity.stop_any(*stops) if stops else tenacity.stop_never,
        before_sleep=on_retry,
        sleep=sleep or tenacity.nap.sleep,
        reraise=True,
    )


def broker_call(call: Callable[[], Any], *, budget: float = 60.0) -> Any:
    """Run a publisher's broker call, retrying transient failures for up to `budget` seconds."""
    return retrying(transient_broker_error, initial=0.1, max_wait=5.0, budget=budget)(call)
