"""What a worker tells its listeners, from start to stop.

Listeners are plain callables taking one event; the CLI's progress line,
metrics and (later) heartbeats are listeners. A listener must be quick and
must not raise: an exception in one is logged and swallowed, so observing a
worker can never stop it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from courier.transports.base import Outcome, Received

__all__ = [
    "MessageFailed",
    "MessageHandled",
    "MessageReceived",
    "MessageRetried",
    "StopReason",
    "TransportFailed",
    "WorkerEvent",
    "WorkerListener",
    "WorkerStarted",
    "WorkerStopped",
    "WorkerStopping",
]


class StopReason(enum.Enum):
    """Why a worker stopped; the CLI turns it into an exit code."""

    SIGNAL = "signal"
    LIMIT = "limit"
    TIME_LIMIT = "time_limit"
    MEMORY_LIMIT = "memory_limit"
    FAILURE_LIMIT = "failure_limit"
    EMPTY = "empty"
    REQUESTED = "requested"
    #: A second stop signal: stopped at once, the message in hand given back.
    INTERRUPTED = "interrupted"
    #: ``courier stop-workers``: the status store's stop order (after the message in hand).
    STOP_REQUESTED = "stop_requested"


@dataclass(frozen=True, slots=True)
class WorkerEvent:
    worker_id: str
    instance_id: str


@dataclass(frozen=True, slots=True)
class WorkerStarted(WorkerEvent):
    transports: tuple[str, ...]
    queues: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MessageReceived(WorkerEvent):
    received: Received


@dataclass(frozen=True, slots=True)
class MessageHandled(WorkerEvent):
    received: Received
    seconds: float


@dataclass(frozen=True, slots=True)
class MessageFailed(WorkerEvent):
    """A handler failed (or the bytes were undecodable); ``will_retry`` says what next."""

    received: Received
    error: BaseException
    outcome: Outcome
    will_retry: bool


@dataclass(frozen=True, slots=True)
class MessageRetried(WorkerEvent):
    """The message went back to its transport, to come again after its delay."""

    received: Received


@dataclass(frozen=True, slots=True)
class TransportFailed(WorkerEvent):
    """A broker call failed; the worker waits ``retry_in`` seconds and reconnects."""

    transport: str
    error: BaseException
    attempt: int
    retry_in: float


@dataclass(frozen=True, slots=True)
class WorkerStopping(WorkerEvent):
    """A stop was asked for (a signal): the message in hand is finished first.

    Sent from the signal handler, so a listener must be quick and must not
    block; another stop signal (``signal``) stops the worker at once.
    """

    reason: StopReason
    signal: int


@dataclass(frozen=True, slots=True)
class WorkerStopped(WorkerEvent):
    """The worker stopped: how many messages it handled, failed for good, retried."""

    reason: StopReason
    handled: int
    failed: int
    retried: int = 0


class WorkerListener(Protocol):
    def __call__(self, event: WorkerEvent, /) -> None: ...
