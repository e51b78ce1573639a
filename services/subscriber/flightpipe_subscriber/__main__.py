"""Entrypoint of the subscriber image: `python -m flightpipe_subscriber`.

Reads the settings from the environment, serves /healthz and /metrics on PORT, and runs the loop
until SIGTERM or SIGINT, then finishes the batch in hand and exits 0 (Cloud Run allows 10 s).
When a thread of the subscriber dies it gives the held messages back, logs the cause once and
exits 1, so the platform restarts it (Cloud Run restarts a worker whose process exits).
"""

from __future__ import annotations

import logging
import signal
import sys
from types import FrameType

from flightpipe import telemetry, tracing
from flightpipe.composition import ensure_topology, make_broker, make_warehouse
from flightpipe.settings import ConfigError, load_settings
from flightpipe.warehouse import WarehouseError
from flightpipe_subscriber.health import start_health_server
from flightpipe_subscriber.worker import Subscriber, SubscriberFailed

log = logging.getLogger("flightpipe_subscriber")


def main() -> int:
    """Run the subscriber service; return the process exit code."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"flightpipe-subscriber: {exc}", file=sys.stderr)
        return 2
    telemetry.configure_logging(settings.log_level)
    tracing.configure_tracing(settings, "flightpipe-subscriber")
    try:
        broker = make_broker(settings)
        ensure_topology(broker, settings)
        warehouse = make_warehouse(settings, serves_queries=False)
    except (WarehouseError, OSError) as exc:
        print(f"flightpipe-subscriber: cannot start: {exc}", file=sys.stderr)
        return 1
    subscriber = Subscriber(broker, warehouse, settings)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s: finishing the batch in hand", signal.Signals(signum).name)
        subscriber.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = start_health_server(settings.port, subscriber)
    log.info(
        "subscriber started",
        extra={"subscription": settings.subscription, "port": settings.port},
    )
    try:
        subscriber.run()
    except SubscriberFailed:
        return 1  # the cause is logged already; the messages held were given back
    finally:
        server.shutdown()
        warehouse.close()
        broker.close()
    log.info("subscriber stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
