"""Turn what happened inside the stack into ack, retry or reject.

In the spirit of FastStream's ``AckPolicy``; the policy decides what a
failure that reached this middleware means (retryable failures were
already handed back by the retry middleware further in):

``REJECT_ON_ERROR`` (default)
    Dead-letter it: the failure transport gets a copy with the error, then
    the original is acknowledged (or the broker's own dead letters take it).
``NACK_ON_ERROR``
    Give it back to the broker at once; its delivery count rises, so
    ``max_deliveries`` still bounds it.
``ACK``
    Acknowledge it anyway: the failure is logged and the message is gone.

A message that exceeded ``max_deliveries`` is always dead-lettered. A
:class:`~courier.errors.TransportError` here means settling itself failed:
it propagates, nothing is acknowledged, and the broker redelivers.

The worker performs the acknowledgements (batched); this middleware
records the outcome on ``envelope.received``.
"""

from __future__ import annotations

import enum

from courier.dead_letters import DeadLetters
from courier.envelope import Envelope
from courier.errors import DeliveryLimitExceeded, TransportError
from courier.middleware.base import Next
from courier.transports.base import Outcome

__all__ = ["AckPolicy", "AcknowledgeMiddleware"]


class AckPolicy(enum.Enum):
    ACK = "ack"
    REJECT_ON_ERROR = "reject_on_error"
    NACK_ON_ERROR = "nack_on_error"


class AcknowledgeMiddleware:
    def __init__(
        self, dead_letters: DeadLetters, policy: AckPolicy = AckPolicy.REJECT_ON_ERROR
    ) -> None:
        self.dead_letters = dead_letters
        self.policy = policy

    def handle(self, envelope: Envelope, next: Next) -> Envelope:
        return self.wrap(next)(envelope)

    def wrap(self, next: Next) -> Next:
        """The layer bound to ``next`` (see :func:`~courier.middleware.base.compose`)."""

        def acknowledged(envelope: Envelope) -> Envelope:
            received = envelope.received
            if received is None:
                return next(envelope)
            try:
                result = next(envelope)
            except TransportError:
                raise
            except Exception as error:
                received.failure = error
                policy = self.policy
                if policy is AckPolicy.REJECT_ON_ERROR or isinstance(error, DeliveryLimitExceeded):
                    received.outcome = self.dead_letters.failed(received, envelope, error)
                elif policy is AckPolicy.NACK_ON_ERROR:
                    received.transport.release(received)
                    received.outcome = Outcome.RELEASED
                else:
                    received.outcome = Outcome.ACK
                return envelope
            if received.outcome is None:
                received.outcome = Outcome.ACK
            return result

        return acknowledged
