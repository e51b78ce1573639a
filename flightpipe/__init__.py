"""flightpipe: publish/subscribe ingestion of flight events, stored for analytics, served over HTTP."""

__version__ = "0.1.0"
