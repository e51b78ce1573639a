"""A pulled batch, validated: what one message raises concerns that message alone.

`validate_messages` decodes and validates every message against the contract
(`flightpipe.contract.decode_event`); any exception while doing so, not only `InvalidEvent`, makes
that one message invalid with its reason (it is dead-lettered with it), never the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from flightpipe import redrive
from flightpipe.broker import Message
from flightpipe.contract import InvalidEvent, decode_event
from flightpipe.warehouse import Envelope

# The attribute that carries a dead letter's reason, declared with the others in flightpipe.redrive.
REASON_ATTRIBUTE = redrive.REASON_ATTRIBUTE


@dataclass
class Batch:
    """Messages leased together, already validated: valid envelopes and invalid ones."""

    valid: list[tuple[Message, Envelope]] = field(default_factory=list)
    invalid: list[tuple[Message, str]] = field(default_factory=list)
    lease: int = 0  # the Leases token keeping these messages leased (0: not held)

    @property
    def ack_ids(self) -> list[str]:
        return [m.ack_id for m, _ in self.valid] + [m.ack_id for m, _ in self.invalid]

    def __len__(self) -> int:
        return len(self.valid) + len(self.invalid)


def validate_messages(messages: Sequence[Message]) -> Batch:
    """Validate every message against the contract; what one message raises concerns it alone."""
    batch = Batch()
    for message in messages:
        try:
            event = decode_event(message.data)
            envelope = Envelope(event, message.message_id, message.publish_time)
        except InvalidEvent as exc:
            batch.invalid.append((message, str(exc)))
            continue
        except Exception as exc:
            batch.invalid.append((message, f"undecodable: {type(exc).__name__}: {exc}"))
            continue
        batch.valid.append((message, envelope))
    return batch
