"""Moving messages that failed for good, and keeping undecodable bytes.

Courier moves a failed message itself: it writes the message, with the
error's class, text, bounded traceback, attempts and original transport, to
the failure transport, and only then acknowledges the original (at once,
never in the worker's acknowledgement batch). The write is idempotent on
the envelope id (``Listable.keep``), so a worker killed between the two
leaves one record, not two. If that
write fails, the original is not acknowledged and the broker keeps it
(Symfony #36870). Bytes that never became a message go the same way to the
invalid-message transport, wrapped in an :class:`InvalidMessage` that keeps
them exactly (Symfony #44117). Both are ordinary transports chosen by name;
without one, the broker's own dead-lettering (``transport.reject``) takes
the message.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import replace
from typing import ClassVar

from pydantic import ConfigDict

from courier.envelope import Envelope, ErrorDetails, new_message_id
from courier.errors import MessageDecodingFailed, MessageTooLarge
from courier.message import Message
from courier.serializer import DEFAULT_MAX_BODY, INVALID_MESSAGE_TYPE, Headers
from courier.transports.base import Listable, Outcome, Received, Transport

__all__ = ["DeadLetters", "InvalidMessage"]

logger = logging.getLogger("courier.dead_letters")

#: A claimed id shown in a record's own id: short and plain, nothing to escape.
_PLAIN_ID = re.compile(r"^[A-Za-z0-9_\-:]{1,48}$")


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


def record_id(queue: str, headers: dict[str, str], key: str | None = None) -> str:
    """The id of the record of undecodable bytes: what they claim, and what names them.

    Not the claimed id alone: a foreign producer may reuse one for different
    bodies, and each record would replace the last. Where the broker names
    the physical message (``Transport.message_key``: a row, an entry, a
    job), the record is keyed by that name, so a copy redelivered after a
    worker died before its acknowledgement replaces its record rather than
    adding a second. Where it cannot (AMQP), the key is random: identical
    bytes sent twice stay two records, and only a worker killed in the
    instant between the write and its acknowledgement can leave a duplicate.
    The claimed id comes first, so an operator who knows it finds the record
    by that prefix.
    """
    if key is not None:
        digest = hashlib.sha256(queue.encode() + b"\0" + key.encode()).hexdigest()
    else:
        digest = new_message_id()
    claimed = headers.get(Headers.ID, "")
    if _PLAIN_ID.match(claimed):
        return f"{claimed}.{digest[:12]}"
    return digest[:32]


class DeadLetters:
    """Writes failures to the failure and invalid-message transports."""

    def __init__(
        self,
        transport: Callable[[str], Transport],
        failure_transport: str | None = None,
        invalid_transport: str | None = None,
        *,
        max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self._transport = transport
        self.failure_transport = failure_transport
        self.invalid_transport = invalid_transport or failure_transport
        #: Undecodable bodies are kept up to this size (the decoder's limit), so
        #: the record can always be read back by ``courier failed``.
        self.max_body = max_body

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
        kept = envelope.with_(error=details, delay=0.0, received=None)
        what = f"{envelope} failed for good ({details.short_class}: {details.message})"
        return self._keep(self.failure_transport, kept, received, details.message, what)

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
        raw = received.raw or b""
        raw_headers = dict(received.raw_headers or {})
        identity = record_id(received.queue, raw_headers, source.message_key(received))
        if len(raw) > self.max_body:
            digest = hashlib.sha256(raw).hexdigest()
            reason += f" (kept the first {self.max_body} of {len(raw)} bytes; sha256 {digest})"
            raw = raw[: self.max_body]
        message = InvalidMessage(
            body=raw,
            headers=raw_headers,
            reason=reason,
            transport=source.name,
            queue=received.queue,
        )
        details = replace(
            ErrorDetails.from_exception(error, transport=source.name, queue=received.queue),
            message=reason,
        )
        envelope = Envelope(message, id=identity, error=details)
        what = f"undecodable message on {source.name!r} ({reason})"
        return self._keep(self.invalid_transport, envelope, received, reason, what)

    def _keep(
        self, name: str, envelope: Envelope, received: Received, reason: str, what: str
    ) -> Outcome:
        """Write ``envelope`` to the store ``name``; only then may the original go.

        A store that refuses the record as too large cannot be fixed by
        trying again: the broker's own dead letters take the original
        instead, so the worker neither crashes nor loops. Any other store
        failure (a TransportError) propagates and nothing is acknowledged.
        """
        store = self._transport(name)
        source = received.transport
        try:
            if isinstance(store, Listable):
                # Idempotent on the id: a worker that died after this write but
                # before the original's ack leaves one record, counted twice.
                kept = store.keep(envelope)
            else:
                store.send(envelope)
                kept = 1
        except MessageTooLarge as error:
            source.reject(received, reason)
            logger.error(
                "%s; too large for %r (%s), so rejected to %r's own dead letters",
                what,
                store.name,
                error,
                source.name,
            )
            return Outcome.REJECTED
        if kept > 1:
            logger.error("%s; kept in %r again (%d times so far)", what, store.name, kept)
        else:
            logger.error("%s; kept in %r", what, store.name)
        return Outcome.DEAD_LETTERED
