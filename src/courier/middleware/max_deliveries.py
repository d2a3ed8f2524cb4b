"""Dead-letter a message the broker keeps handing out, before its handler runs.

Catches the message whose handler kills the worker every time (a
segfault, ``os._exit``, the OOM killer): no exception is ever raised, so
retries never count it, but the broker does. ``received.delivery_count`` is
the broker's own count, normalised so the first delivery is 1.

Parameters
----------
max_deliveries (10)
    Deliveries allowed; the next one is dead-lettered. Generous, because
    releases at shutdown and connection losses count too on most brokers.
"""

from __future__ import annotations

from courier.envelope import Envelope
from courier.errors import ConfigurationError, DeliveryLimitExceeded
from courier.middleware.base import Next

__all__ = ["DEFAULT_MAX_DELIVERIES", "MaxDeliveriesMiddleware"]

DEFAULT_MAX_DELIVERIES = 10


class MaxDeliveriesMiddleware:
    def __init__(self, max_deliveries: int = DEFAULT_MAX_DELIVERIES) -> None:
        if max_deliveries < 1:
            raise ConfigurationError("max_deliveries must be at least 1")
        self.max_deliveries = max_deliveries

    def handle(self, envelope: Envelope, next: Next) -> Envelope:
        received = envelope.received
        if received is not None and received.delivery_count > self.max_deliveries:
            raise DeliveryLimitExceeded(
                f"delivered {received.delivery_count} times, more than max_deliveries="
                f"{self.max_deliveries}; its handler may be killing the worker"
            )
        return next(envelope)
