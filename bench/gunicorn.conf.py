"""Gunicorn settings, kept for the server comparison in bench/api.py (the image runs granian).

Threads rather than processes: requests mostly wait on the warehouse (DuckDB releases the GIL,
BigQuery is network I/O), one process keeps one DuckDB handle and one result cache, and Cloud Run
scales instances instead of workers.
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
timeout = 60
graceful_timeout = 8  # Cloud Run sends SIGTERM and kills 10 s later.
keepalive = 5
accesslog = None  # the app logs requests as JSON itself
errorlog = "-"
