"""flightpipe: flight events over publish/subscribe, stored for analytics, served over HTTP."""

__version__ = "0.2.0.dev0"
