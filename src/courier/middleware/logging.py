"""Log what happens to each consumed message, at a cost only when the level is on.

Successful handling logs at DEBUG with its duration; a failure that will be
retried or given back at WARNING; a message dead-lettered at ERROR, by
:mod:`courier.dead_letters`, which also logs undecodable bytes. The logger
is ``courier.consume``; the worker adds its ids to every record.
(Dispatches log at DEBUG on ``courier.dispatch``, from the router.)
"""

from __future__ import annotations

import logging
import time

from courier.envelope import Envelope
from courier.middleware.base import Next
from courier.transports.base import Outcome

__all__ = ["LoggingMiddleware"]

consume_logger = logging.getLogger("courier.consume")


class LoggingMiddleware:
    def handle(self, envelope: Envelope, next: Next) -> Envelope:
        return self.wrap(next)(envelope)

    def wrap(self, next: Next) -> Next:
        """The layer bound to ``next`` (see :func:`~courier.middleware.base.compose`)."""
        debug = logging.DEBUG
        enabled = consume_logger.isEnabledFor
        clock = time.perf_counter

        def logged(envelope: Envelope) -> Envelope:
            received = envelope.received
            if received is None:
                return next(envelope)
            # The clock is read only when the record would be written.
            started = clock() if enabled(debug) else 0.0
            result = next(envelope)
            failure = received.failure
            if failure is None:
                if started:
                    elapsed = (clock() - started) * 1000
                    consume_logger.debug("handled %r in %.1f ms", envelope, elapsed)
                return result
            outcome = received.outcome
            if outcome is Outcome.RETRIED:
                consume_logger.warning(
                    "%r failed (%s: %s); retrying as attempt %d",
                    envelope,
                    type(failure).__name__,
                    failure,
                    result.attempt,
                )
            elif outcome is Outcome.RELEASED or outcome is Outcome.ACK:
                consume_logger.warning(
                    "%r failed (%s: %s); %s",
                    envelope,
                    type(failure).__name__,
                    failure,
                    "given back to the broker"
                    if outcome is Outcome.RELEASED
                    else "acknowledged anyway",
                )
            # Dead-lettered and rejected messages are logged where that happens.
            return result

        return logged
