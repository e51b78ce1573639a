"""The WSGI app the API image serves (`python -m flightpipe_api` runs it under Granian)."""

from flightpipe import telemetry, tracing
from flightpipe.settings import load_settings
from flightpipe_api import create_app

settings = load_settings()
telemetry.configure_logging(settings.log_level)
tracing.configure_tracing(settings, "flightpipe-api")
app = create_app(settings)
