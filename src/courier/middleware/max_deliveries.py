"""Dead-letter the message that keeps killing its worker, before its handler runs again.

A handler that kills the process (a segfault, ``os._exit``, the OOM
killer) raises nothing, so retries never count it. :class:`PoisonGuard`
counts the deaths of workers that were running its handler, and this layer
asks it about each delivery before anything else runs; see
:mod:`courier.poison` for the rule and why the broker's delivery count
alone would blame the innocent.

Parameters
----------
guard
    The bus's :class:`~courier.poison.PoisonGuard`; its ``max_deliveries``
    (10) is the number of deaths allowed.
"""

from __future__ import annotations

from courier.envelope import Envelope
from courier.middleware.base import Next
from courier.poison import DEFAULT_MAX_DELIVERIES, PoisonGuard

__all__ = ["DEFAULT_MAX_DELIVERIES", "MaxDeliveriesMiddleware"]


class MaxDeliveriesMiddleware:
    def __init__(self, guard: PoisonGuard) -> None:
        self.guard = guard

    def handle(self, envelope: Envelope, next: Next) -> Envelope:
        return self.wrap(next)(envelope)

    def wrap(self, next: Next) -> Next:
        """The layer bound to ``next`` (see :func:`~courier.middleware.base.compose`)."""
        check = self.guard.check

        def guarded(envelope: Envelope) -> Envelope:
            received = envelope.received
            if received is not None:
                check(envelope, received)
            return next(envelope)

        return guarded
