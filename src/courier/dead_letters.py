"""Moving messages that failed for good, and keeping undecodable bytes.

Courier moves a failed message itself: it writes the message, with the
error's class, text, bounded traceback, attempts and original transport, to
the failure transport, and only then acknowledges the original. If that
write fails, the original is not acknowledged and the broker keeps it
(Symfony #36870). Bytes that never became a message go the same way to the
invalid-message transport, wrapped in an :class:`InvalidMessage` that keeps
them exactly (Symfony #44117). Both are ordinary transports chosen by name;
without one, the broker's own dead-lettering (``transport.reject``) takes
the message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import ClassVar

from pydantic import ConfigDict

from courier.envelope import Envelope, ErrorDetails, new_message_id
from courier.errors import MessageDecodingFailed
from courier.message import Message
from courier.serializer import INVALID_MESSAGE_TYPE, Headers
from courier.transports.base import Outcome, Received, Transport

__all__ = ["DeadLetters", "InvalidMessage"]

logger = logging.getLogger("courier.dead_letters")


class InvalidMessage(Message):
    """Bytes that could not be decoded, kept as evidence with the reason.

    ``courier failed retry`` decodes ``body`` again: once the cause is fixed
    (the type registered, the schema relaxed) the original message goes back
    to its transport.
    """

    model_config = ConfigDict(frozen=True, ser_json_bytes="base64", val_json_bytes="base64")
    message_name: ClassVar[str] = INVALID_MESSAGE_TYPE

    body: bytes
    headers: dict[str, str]
    reason: str
    transport: str
    queue: str


class DeadLetters:
    """Writes failures to the failure and invalid-message transports."""

    def __init__(
        self,
        transport: Callable[[str], Transport],
        failure_transport: str | None = None,
        invalid_transport: str | None = None,
    ) -> None:
        self._transport = transport
        self.failure_transport = failure_transport
        self.invalid_transport = invalid_transport or failure_transport

    def failed(self, received: Received, envelope: Envelope, error: BaseException) -> Outcome:
        """``envelope`` failed for good: keep it with the error, then let it go."""
        source = received.transport
        details = ErrorDetails.from_exception(error, transport=source.name, queue=received.queue)
        if self.failure_transport is None:
            source.reject(received, f"{details.short_class}: {details.message}")
            logger.error(
                "%s failed for good (%s: %s); rejected to %r's own dead letters",
                envelope,
                details.short_class,
                details.message,
                source.name,
            )
            return Outcome.REJECTED
        store = self._transport(self.failure_transport)
        store.send(envelope.with_(error=details, delay=0.0, received=None))
        logger.error(
            "%s failed for good (%s: %s); kept in %r",
            envelope,
            details.short_class,
            details.message,
            store.name,
        )
        return Outcome.DEAD_LETTERED

    def invalid(self, received: Received) -> Outcome:
        """``received`` never became a message: keep its bytes and the reason."""
        source = received.transport
        error = received.error or MessageDecodingFailed("undecodable message")
        reason = str(error)
        if self.invalid_transport is None:
            source.reject(received, reason)
            logger.error(
                "undecodable message on %r (%s); rejected to its own dead letters",
                source.name,
                reason,
            )
            return Outcome.REJECTED
        raw_headers = dict(received.raw_headers or {})
        message = InvalidMessage(
            body=received.raw or b"",
            headers=raw_headers,
            reason=reason,
            transport=source.name,
            queue=received.queue,
        )
        details = ErrorDetails.from_exception(error, transport=source.name, queue=received.queue)
        original_id = raw_headers.get(Headers.ID, "")
        envelope = Envelope(
            message,
            id=original_id if 0 < len(original_id) <= 64 else new_message_id(),
            error=details,
        )
        store = self._transport(self.invalid_transport)
        store.send(envelope)
        logger.error("undecodable message on %r (%s); kept in %r", source.name, reason, store.name)
        return Outcome.DEAD_LETTERED
