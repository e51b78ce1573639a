"""The subscriber service: pulls flight events from the subscription into the warehouse."""

from flightpipe_subscriber.batches import Batch, validate_messages
from flightpipe_subscriber.worker import Subscriber

__all__ = ["Batch", "Subscriber", "validate_messages"]
