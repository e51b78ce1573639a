"""The subscriber service: pulls flight events from the subscription into the warehouse."""

from flightpipe_subscriber.worker import Batch, Subscriber, sort_messages

__all__ = ["Batch", "Subscriber", "sort_messages"]
