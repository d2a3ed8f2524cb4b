"""Every error courier raises, sorted by what happens next.

::

    CourierError
    ├── ConfigurationError(ValueError)   bad DSN, unknown option, unknown scheme, missing adapter
    ├── TransportError                   broker I/O; the worker reconnects
    │   ├── ConnectionLost
    │   └── PublishNotConfirmed          nacked, returned as unroutable, no receipt
    ├── MessageDecodingFailed            malformed, unknown type, wrong content type, too large:
    │                                    dead-lettered with the raw bytes, never retried
    ├── MessageTooLarge(ValueError)      raised by send() before any network call
    ├── ValidationFailed(ValueError)     unrecoverable
    ├── NoHandlerForMessage              unrecoverable
    ├── HandlerFailed(errors)            retried if any inner error is recoverable
    ├── RecoverableError                 a handler says: always retry this
    ├── UnrecoverableError               a handler says: never retry this
    │   └── DeliveryLimitExceeded        the broker handed the message out too often
    └── StopWorker                       a handler or listener asks the worker to stop

The worker reads the tree, not the message text: a `TransportError` means
"reconnect and try again, acknowledge nothing"; the decoding and validation
errors mean "dead-letter now, retrying cannot help"; anything a handler
raises goes through the retry policy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "ConfigurationError",
    "ConnectionLost",
    "CourierError",
    "DeliveryLimitExceeded",
    "HandlerFailed",
    "MessageDecodingFailed",
    "MessageTooLarge",
    "NoHandlerForMessage",
    "PublishNotConfirmed",
    "RecoverableError",
    "StopWorker",
    "TransportError",
    "UnrecoverableError",
    "ValidationFailed",
]


_BATCH_PREFIX = re.compile(r"^(?:\d+ of \d+ messages were not sent: )+")


class CourierError(Exception):
    """Base of everything courier raises on purpose."""


class ConfigurationError(CourierError, ValueError):
    """The setup is wrong: fix the configuration, retrying will not help.

    Raised at startup wherever possible, so a bad DSN or an impossible
    combination stops the process before it touches a message.
    """


class TransportError(CourierError):
    """The broker could not be reached or refused the operation.

    The worker reconnects with backoff; nothing is acknowledged meanwhile,
    so the broker redelivers whatever was in flight.
    """


class ConnectionLost(TransportError):
    """The connection to the broker dropped under an operation."""


class PublishNotConfirmed(TransportError):
    """The broker did not confirm some of the messages sent to it.

    ``failed_ids`` names the envelopes that were not confirmed (nacked,
    returned as unroutable, or never answered); every other envelope of the
    same batch was confirmed.
    """

    def __init__(self, message: str, failed_ids: Iterable[str] = ()) -> None:
        self.failed_ids: tuple[str, ...] = tuple(failed_ids)
        super().__init__(message)

    @property
    def reason(self) -> str:
        """Why, without the "N of M messages were not sent: " of a batch's report.

        A batch that wraps another batch's failure (``dispatch_many`` over
        ``send_many``) reports the count once, with this as the why.
        """
        return _BATCH_PREFIX.sub("", str(self), count=1)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.failed_ids))


class MessageDecodingFailed(CourierError):
    """Bytes from the broker could not become a message.

    Carries the raw body and headers so the consumer can keep them in the
    invalid-message transport: they are evidence, never retried and never
    silently dropped.
    """

    def __init__(
        self, reason: str, raw: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> None:
        self.reason = reason
        self.raw = raw
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(reason)


class MessageTooLarge(CourierError, ValueError):
    """A message is bigger than the transport accepts; nothing was sent."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"message of {size} bytes exceeds the transport's limit of {limit} bytes")


class ValidationFailed(CourierError, ValueError):
    """A message's fields do not match its schema.

    The text names field paths and error types only, never the values:
    values may be personal data or secrets, and they end up in logs and in
    the failure transport.
    """

    def __init__(self, message_type: str, errors: Sequence[tuple[str, str, str]]) -> None:
        self.message_type = message_type
        #: (field path, error type, pydantic's message) for each problem.
        self.errors: tuple[tuple[str, str, str], ...] = tuple(errors)
        described = "; ".join(f"{path or '<root>'}: {kind}" for path, kind, _ in self.errors)
        super().__init__(f"invalid {message_type}: {described}")

    @classmethod
    def from_pydantic(cls, message_type: str, error: Any) -> ValidationFailed:
        """Build from a pydantic ``ValidationError`` without its input values."""
        items = []
        for detail in error.errors(include_input=False, include_url=False):
            path = ".".join(str(part) for part in detail["loc"])
            items.append((path, str(detail["type"]), str(detail["msg"])))
        return cls(message_type, items)


class NoHandlerForMessage(CourierError):
    """A message reached a process that has no handler for its type."""


class HandlerFailed(CourierError):
    """One or more handlers raised.

    ``errors`` holds what each failing handler raised; the retry middleware
    retries unless every one of them is unrecoverable.
    """

    def __init__(self, errors: Sequence[BaseException]) -> None:
        self.errors: tuple[BaseException, ...] = tuple(errors)
        first = self.errors[0] if self.errors else None
        text = f"{type(first).__name__}: {first}" if first is not None else "handler failed"
        if len(self.errors) > 1:
            text += f" (and {len(self.errors) - 1} more)"
        super().__init__(text)


class RecoverableError(CourierError):
    """Raise from a handler to ask for a retry whatever the retry budget says."""


class UnrecoverableError(CourierError):
    """Raise from a handler to skip retries and dead-letter the message now."""


class DeliveryLimitExceeded(UnrecoverableError):
    """The broker handed this message out more often than ``max_deliveries``.

    Usually a handler that kills its worker every time; the message is
    dead-lettered before its handler runs again.
    """


class StopWorker(CourierError):
    """Ask the worker to stop after the message in hand."""
