"""The subscriber service: pulls flight events from the subscription into the warehouse."""

from flightpipe_subscriber.worker import Batch, Subscriber, validate_messages

__all__ = ["Batch", "Subscriber", "validate_messages"]
