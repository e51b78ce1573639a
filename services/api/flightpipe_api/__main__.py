"""Entrypoint of the API image: `python -m flightpipe_api` serves the WSGI app with Granian on PORT.

Granian rather than gunicorn: it served cached pages at several times gunicorn's gthread rate
(bench/api.py, docs/architecture.md "Hot paths"). One worker process with
FLIGHTPIPE_HTTP_THREADS request threads: requests mostly wait on the warehouse (DuckDB releases
the GIL while it runs, BigQuery is network I/O), one process keeps one warehouse handle and one
result cache, and Cloud Run scales instances instead.
"""

from __future__ import annotations

import os
import sys

from flightpipe.settings import ConfigError, load_settings

ALL_INTERFACES = "0.0.0.0"  # noqa: S104  # nosec B104 - containers listen on all interfaces


def main() -> int:
    """Validate the settings, then run Granian until SIGTERM."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"flightpipe-api: {exc}", file=sys.stderr)
        return 2
    from granian import Granian
    from granian.constants import Interfaces

    Granian(
        "flightpipe_api.wsgi:app",
        address=ALL_INTERFACES,
        port=settings.port,
        interface=Interfaces.WSGI,
        workers=int(os.environ.get("WEB_CONCURRENCY", "1")),
        blocking_threads=settings.http_threads,
        log_access=False,  # the app logs requests itself, as JSON
    ).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
