"""The Envelope: one message plus everything courier knows about it.

Symfony Messenger's stamps, made plain: each piece of metadata is a typed
field, and the rest are free-form string headers. An envelope never
changes; ``with_()`` returns a copy. It is built on a named tuple because an
envelope is created two or three times per message on the hot path, and a
tuple is the cheapest immutable object Python has.
"""

from __future__ import annotations

import os
import random
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

from courier.errors import ConfigurationError, HandlerFailed

if TYPE_CHECKING:
    from courier.message import Message
    from courier.transports.base import Received

__all__ = ["Envelope", "ErrorDetails", "new_message_id"]

#: How much of a failure's story is kept: enough to debug, bounded so one bad
#: handler cannot fill the failure store or blow a broker's header limit.
MAX_ERROR_MESSAGE = 2_000
MAX_TRACEBACK = 8_000
MAX_TRACEBACK_FRAMES = 30

_EMPTY_HEADERS: Mapping[str, str] = MappingProxyType({})


#: Where message ids come from: a generator of this process's own, seeded
#: from the OS and seeded again in every forked child (so two processes
#: never share a sequence), and never reseeded by an application's
#: ``random.seed``.
_ids = random.Random(os.urandom(32))


def _reseed_ids() -> None:
    _ids.seed(os.urandom(32))


os.register_at_fork(after_in_child=_reseed_ids)


def new_message_id() -> str:
    """A random 128-bit id as 32 hex digits, unique across processes.

    Not ``os.urandom`` per id: it releases the GIL for its system call, so
    a dispatching thread gives the GIL away on every message to whichever
    thread wants it (AMQP's I/O thread, a web server's other requests) and
    waits to get it back: 20 µs per dispatch with AMQP's ``confirm=async``
    instead of 0.3. An id needs to be unique, not secret (a producer may set
    any id it likes), and 128 bits from a generator seeded with 256 bits
    from the OS are.
    """
    return f"{_ids.getrandbits(128):032x}"


@dataclass(frozen=True, slots=True)
class ErrorDetails:
    """Why a message failed last: kept with it in the failure transport."""

    error_class: str
    message: str
    traceback: str = ""
    failed_at: float = 0.0
    transport: str | None = None
    queue: str | None = None

    @classmethod
    def from_exception(
        cls, error: BaseException, *, transport: str | None = None, queue: str | None = None
    ) -> ErrorDetails:
        """Describe ``error`` with a bounded message and traceback.

        A :class:`HandlerFailed` around one error is described by that error,
        the one the handler raised (as Symfony's ErrorDetailsStamp does), so
        the failure store can be filtered by the application's error class.
        """
        if isinstance(error, HandlerFailed) and len(error.errors) == 1:
            error = error.errors[0]
        kind = type(error)
        name = (
            kind.__qualname__
            if kind.__module__ == "builtins"
            else (f"{kind.__module__}.{kind.__qualname__}")
        )
        text = str(error)
        if len(text) > MAX_ERROR_MESSAGE:
            text = text[:MAX_ERROR_MESSAGE] + "... (truncated)"
        # Each piece bounded too, so a huge message cannot push the frames and
        # the error's class out of the kept tail.
        trace = "".join(
            line if len(line) <= MAX_ERROR_MESSAGE else line[:MAX_ERROR_MESSAGE] + "...\n"
            for line in traceback.format_exception(error, limit=-MAX_TRACEBACK_FRAMES)
        )
        if len(trace) > MAX_TRACEBACK:
            trace = "... (truncated)\n" + trace[-MAX_TRACEBACK:]
        return cls(name, text, trace, time.time(), transport, queue)

    @property
    def short_class(self) -> str:
        return self.error_class.rsplit(".", 1)[-1]

    @property
    def failed_at_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.failed_at, UTC)

    def to_dict(self) -> dict[str, Any]:
        return {
            "class": self.error_class,
            "message": self.message,
            "traceback": self.traceback,
            "failed_at": self.failed_at,
            "transport": self.transport,
            "queue": self.queue,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ErrorDetails:
        return cls(
            error_class=str(data.get("class", "")),
            message=str(data.get("message", "")),
            traceback=str(data.get("traceback", "")),
            failed_at=float(data.get("failed_at", 0.0)),
            transport=_optional_str(data.get("transport")),
            queue=_optional_str(data.get("queue")),
        )


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


class _EnvelopeFields(NamedTuple):
    message: Message
    id: str
    attempt: int
    timestamp: float
    delay: float
    priority: int
    ttr: float | None
    correlation_id: str | None
    causation_id: str | None
    error: ErrorDetails | None
    transport_message_id: str | None
    headers: Mapping[str, str]
    received: Received | None


_FIELD_INDEX = {name: index for index, name in enumerate(_EnvelopeFields._fields)}
_new_tuple = tuple.__new__


class Envelope(_EnvelopeFields):
    """A message and its metadata; immutable.

    - ``id``: unique per logical message; kept across retries and
      ``courier failed retry``, so handlers can deduplicate on it.
    - ``attempt``: which handler try this is, 1 on the first; only the retry
      middleware raises it.
    - ``timestamp`` / ``created_at``: when the message was first dispatched.
    - ``delay``: seconds to wait before it may be delivered.
    - ``priority``: 0-9, 9 most urgent (as AMQP); transports map it.
    - ``ttr``: seconds a worker may hold it before the broker hands it out
      again, where the transport has leases.
    - ``correlation_id`` / ``causation_id``: the conversation and the message
      that caused this one; pipelines carry them on.
    - ``error``: why the last attempt failed.
    - ``transport_message_id``: the broker's own id, when it gives one.
    - ``headers``: free-form string headers that travel with the message.
    - ``received``: set on the consuming side only, never sent: where this
      copy came from and how to settle it.
    """

    __slots__ = ()

    def __new__(
        cls,
        message: Message,
        *,
        id: str | None = None,
        attempt: int = 1,
        created_at: datetime | float | None = None,
        delay: float | timedelta = 0.0,
        priority: int = 0,
        ttr: float | timedelta | None = None,
        correlation_id: str | None = None,
        causation_id: str | None = None,
        error: ErrorDetails | None = None,
        transport_message_id: str | None = None,
        headers: Mapping[str, str] | None = None,
        received: Received | None = None,
    ) -> Envelope:
        if created_at is None:
            timestamp = time.time()
        elif isinstance(created_at, datetime):
            timestamp = created_at.timestamp()
        else:
            timestamp = float(created_at)
        return _new_tuple(
            cls,
            (
                message,
                id or new_message_id(),
                _check_attempt(attempt),
                timestamp,
                seconds(delay),
                _check_priority(priority),
                None if ttr is None else seconds(ttr),
                correlation_id,
                causation_id,
                error,
                transport_message_id,
                _EMPTY_HEADERS if not headers else MappingProxyType(_check_headers(headers)),
                received,
            ),
        )

    @classmethod
    def _build(cls, values: tuple[Any, ...]) -> Envelope:
        """Trusted fast path for the serializer: values already checked."""
        return _new_tuple(cls, values)

    def with_(self, **changes: Any) -> Envelope:
        """A copy with ``changes`` applied (``envelope.with_(attempt=2)``)."""
        values = list(self)
        for name, value in changes.items():
            index = _FIELD_INDEX.get(name)
            if index is None:
                raise TypeError(f"Envelope has no field {name!r}")
            if name == "headers":
                value = _EMPTY_HEADERS if not value else MappingProxyType(_check_headers(value))
            elif name == "priority":
                value = _check_priority(value)
            elif name == "attempt":
                value = _check_attempt(value)
            elif name == "delay":
                value = seconds(value)
            elif name == "ttr":
                value = None if value is None else seconds(value)
            values[index] = value
        return _new_tuple(Envelope, values)

    def with_headers(self, **headers: str) -> Envelope:
        """A copy with ``headers`` added to the free-form ones."""
        return self.with_(headers={**self.headers, **headers})

    @property
    def type(self) -> str:
        """The message's wire name."""
        return self.message.message_name

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp, UTC)

    def __eq__(self, other: object) -> bool:
        # ``received`` is where this copy came from, not what it is.
        if not isinstance(other, Envelope):
            return NotImplemented
        return self[:-1] == other[:-1]

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        extra = ""
        if self.delay:
            extra += f", delay={self.delay:g}"
        if self.priority:
            extra += f", priority={self.priority}"
        if self.error is not None:
            extra += f", error={self.error.short_class}"
        return f"Envelope({self.type}, id={self.id}, attempt={self.attempt}{extra})"


def seconds(value: float | timedelta) -> float:
    """Seconds as a float from a number or a timedelta; never negative."""
    result = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if result < 0:
        raise ConfigurationError(f"a duration cannot be negative, got {result}")
    return result


def _check_priority(priority: int) -> int:
    # A bool is an int to Python, but True would travel as the header "True".
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 9:
        raise ConfigurationError(f"priority must be an integer from 0 to 9, got {priority!r}")
    return int(priority)


def _check_attempt(attempt: int) -> int:
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
        raise ConfigurationError(f"attempt starts at 1, got {attempt!r}")
    return int(attempt)


def _check_headers(headers: Mapping[str, str]) -> dict[str, str]:
    checked = dict(headers)
    for key, value in checked.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ConfigurationError("envelope headers are strings to strings")
    return checked
