"""Retry failed messages with exponential backoff, then let them dead-letter.

Parameters of a :class:`RetryStrategy` (defaults as Symfony Messenger's,
defined here and nowhere else):

max_retries (3)
    Tries after the first; a handler that always fails runs
    ``max_retries + 1`` times.
delay (1.0)
    Seconds before the first retry.
multiplier (2.0)
    Each retry waits this many times longer than the one before.
max_delay (None)
    Ceiling on a single wait, in seconds.
jitter (0.1)
    Each wait is moved randomly by up to this fraction, so messages that
    failed together do not all come back together.

A :class:`RetryPolicy` picks a strategy per message type, then per
transport, then falls back to its default. :class:`RecoverableError`
always retries, whatever ``max_retries`` says (as in Symfony Messenger): a
handler raising it forever retries forever, each wait capped by
``max_delay`` and by the longest delay the transport can keep, so set
``max_delay`` where that can happen. :class:`UnrecoverableError` (and
validation or missing-handler errors) never retries.

This middleware alone raises ``envelope.attempt``; it hands the new
envelope to ``transport.retry``, which brings it back after the delay on
the broker side.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from courier.envelope import Envelope, ErrorDetails
from courier.errors import (
    ConfigurationError,
    HandlerFailed,
    MessageDecodingFailed,
    NoHandlerForMessage,
    RecoverableError,
    TransportError,
    UnrecoverableError,
    ValidationFailed,
)
from courier.middleware.base import Next
from courier.transports.base import Outcome

__all__ = ["RetryMiddleware", "RetryPolicy", "RetryStrategy", "is_recoverable", "should_retry"]

logger = logging.getLogger("courier.retry")

_NEVER_RETRIED = (UnrecoverableError, ValidationFailed, NoHandlerForMessage, MessageDecodingFailed)


@dataclass(frozen=True, slots=True)
class RetryStrategy:
    """How often and how long to wait; see the module docstring."""

    max_retries: int = 3
    delay: float = 1.0
    multiplier: float = 2.0
    max_delay: float | None = None
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ConfigurationError("retry max_retries cannot be negative")
        if self.delay < 0:
            raise ConfigurationError("retry delay cannot be negative")
        if self.multiplier < 1:
            raise ConfigurationError("retry multiplier must be at least 1")
        if self.max_delay is not None and self.max_delay < 0:
            raise ConfigurationError("retry max_delay cannot be negative")
        if not 0 <= self.jitter <= 1:
            raise ConfigurationError("retry jitter is a fraction from 0 to 1")

    def base_delay(self, attempt: int) -> float:
        """The wait after ``attempt`` failed, before jitter."""
        # The exponent is bounded so endless RecoverableError retries never overflow.
        wait = self.delay * self.multiplier ** min(attempt - 1, 64)
        if self.max_delay is not None:
            wait = min(wait, self.max_delay)
        return wait

    def delay_for(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait after ``attempt`` failed, jitter included."""
        wait = self.base_delay(attempt)
        if self.jitter and wait:
            spread = wait * self.jitter
            wait += (rng or random).uniform(-spread, spread)
            if self.max_delay is not None:
                wait = min(wait, self.max_delay)
        return max(wait, 0.0)


@dataclass(frozen=True)
class RetryPolicy:
    """Which strategy applies: per message type, then per transport, then the default."""

    default: RetryStrategy = field(default_factory=RetryStrategy)
    transports: Mapping[str, RetryStrategy] = field(default_factory=dict)
    message_types: Mapping[str, RetryStrategy] = field(default_factory=dict)

    def strategy_for(self, transport: str, message_type: str) -> RetryStrategy:
        found = self.message_types.get(message_type) or self.transports.get(transport)
        return found or self.default


def _errors(error: BaseException) -> tuple[BaseException, ...]:
    return error.errors if isinstance(error, HandlerFailed) and error.errors else (error,)


def is_recoverable(error: BaseException) -> bool:
    """False only if every error inside ``error`` says retrying cannot help."""
    return not all(isinstance(inner, _NEVER_RETRIED) for inner in _errors(error))


def should_retry(error: BaseException, attempt: int, strategy: RetryStrategy) -> bool:
    inner = _errors(error)
    if any(isinstance(item, RecoverableError) for item in inner):
        return True
    if not is_recoverable(error):
        return False
    return attempt <= strategy.max_retries


class RetryMiddleware:
    """Hand a failed message back to its transport with a delay, or let it fail."""

    def __init__(self, policy: RetryPolicy | RetryStrategy | None = None) -> None:
        if isinstance(policy, RetryStrategy):
            policy = RetryPolicy(default=policy)
        self.policy = policy or RetryPolicy()

    def handle(self, envelope: Envelope, next: Next) -> Envelope:
        return self.wrap(next)(envelope)

    def wrap(self, next: Next) -> Next:
        """The layer bound to ``next`` (see :func:`~courier.middleware.base.compose`)."""

        def retrying(envelope: Envelope) -> Envelope:
            try:
                return next(envelope)
            except TransportError:
                # Settling failed further in: nothing to retry, the broker redelivers.
                raise
            except Exception as error:
                retried = self._failed(envelope, error)
                if retried is None:
                    raise
                return retried

        return retrying

    def _failed(self, envelope: Envelope, error: Exception) -> Envelope | None:
        """Hand ``envelope`` back for a retry; None: let ``error`` fail it."""
        received = envelope.received
        if received is None:
            return None
        transport = received.transport
        strategy = self.policy.strategy_for(transport.name, envelope.type)
        if not should_retry(error, envelope.attempt, strategy):
            return None
        delay = strategy.delay_for(envelope.attempt)
        longest = transport.capabilities.max_delay
        if longest is not None and delay > longest:
            delay = longest
        details = ErrorDetails.from_exception(error, transport=transport.name, queue=received.queue)
        retried = envelope.with_(
            attempt=envelope.attempt + 1, delay=delay, error=details, received=None
        )
        transport.retry(received, retried, delay)
        received.outcome = Outcome.RETRIED
        received.failure = error
        logger.debug("retrying %s as attempt %d in %.3fs", envelope, retried.attempt, delay)
        return retried
