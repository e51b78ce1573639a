"""`flightpipe serve`: broker, subscriber and API in one process, for one machine.

DuckDB allows one writing process per file, so the subscriber (the writer) and the API (a reader)
share one DuckDB handle here. The HTTP server is waitress (threaded, pure Python, in-process: a
forking server would copy the DuckDB handle into a child), configured by `http_server`
so idle clients, slow clients and large exports cannot lock it up. SIGTERM or Ctrl-C stops the
HTTP server, lets the subscriber finish and ack the batch in hand, and exits 0 within the grace
period. If the subscriber dies (a thread failed) the whole process exits 1: an API that kept
answering while nothing is ingested any more would hide the failure.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from types import FrameType

from flightpipe_api import create_app
from flightpipe_subscriber import Subscriber
from flightpipe_subscriber.worker import SubscriberFailed

from flightpipe import telemetry, tracing
from flightpipe.composition import ensure_topology, make_broker, make_warehouse
from flightpipe.settings import Settings
from flightpipe_local.http_server import make_server

log = logging.getLogger("flightpipe.serve")


def serve(settings: Settings, host: str = "127.0.0.1") -> int:
    """Run the local stack until SIGTERM/SIGINT; return the exit code."""
    telemetry.configure_logging(settings.log_level)
    tracing.configure_tracing(settings, "flightpipe-serve")
    broker = make_broker(settings)
    ensure_topology(broker, settings)
    warehouse = make_warehouse(settings)
    subscriber = Subscriber(broker, warehouse, settings)

    def ingest() -> None:
        try:
            subscriber.run()
        except SubscriberFailed:
            # Logged by the subscriber; wake the main thread, which exits 1.
            os.kill(os.getpid(), signal.SIGTERM)

    worker = threading.Thread(target=ingest, name="subscriber", daemon=True)
    app = create_app(settings, warehouse=warehouse)
    telemetry.share_pipeline_metrics()  # one process: the API's /metrics shows the pipeline too
    server = make_server(app, settings, host)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if subscriber.failure is not None:
            log.error("the subscriber failed, exiting 1: %s", subscriber.failure)
            raise SystemExit(1)
        log.info("received %s: shutting down", signal.Signals(signum).name)
        subscriber.stop()
        # waitress's run() loop ends on SystemExit and shuts its task threads down.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.start()
    url = f"http://{host}:{settings.port}"
    log.info("flightpipe serving", extra={"url": url, "data_dir": settings.data_dir})
    print(f"flightpipe: API on {url}  (data in {settings.data_dir}; Ctrl-C stops)", file=sys.stderr)
    try:
        server.run()
    finally:
        subscriber.stop()
        server.close()
        worker.join(timeout=settings.shutdown_grace_seconds)
        if worker.is_alive():
            log.error("subscriber did not stop within the grace period")
        warehouse.close()
        broker.close()
    log.info("flightpipe stopped")
    return 1 if subscriber.failure is not None else 0
