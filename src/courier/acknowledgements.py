"""The worker's acknowledgements, batched: one ``ack_many`` per transport, not one ack each.

A handled message is acknowledged after its handler finished, but not
alone: acknowledgements wait until ``batch`` of them are pending or the
oldest has waited ``interval`` seconds, and always go out before the
worker blocks on a receive and before it stops (the worker calls
:meth:`flush`). A dead-lettered original is the exception: it is flushed at
once, since a death before its acknowledgement would bring it back to be
stored again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from courier.errors import TransportError
from courier.keepalive import Keepalive
from courier.transports.base import Received, Transport

__all__ = ["Acknowledgements"]

logger = logging.getLogger("courier.worker")


class Acknowledgements:
    """Pending acknowledgements per transport, flushed in batches."""

    def __init__(
        self,
        *,
        batch: int,
        interval: float,
        keepalive: Keepalive,
        on_error: Callable[[Transport, TransportError], None],
        before: Callable[[], None] | None = None,
    ) -> None:
        self.batch = batch
        #: Called before acknowledging anything: the bus's ``flush``, so what
        #: handlers dispatched is confirmed before their messages are acked.
        self._before = before
        self.interval = interval
        self._keepalive = keepalive
        self._on_error = on_error
        self._pending: dict[int, tuple[Transport, list[Received]]] = {}
        #: How many acknowledgements wait, over every transport.
        self.count = 0
        self._oldest = 0.0

    def add(self, received: Received) -> None:
        """Acknowledge ``received`` with the next batch (sent now if the batch is full)."""
        if not self.count:
            self._oldest = time.monotonic()
        transport = received.transport
        entry = self._pending.get(id(transport))
        if entry is None:
            entry = self._pending[id(transport)] = (transport, [])
        entry[1].append(received)
        self.count += 1
        # Only the size here: the worker asks ``due`` before every message.
        if self.count >= self.batch:
            self.flush()

    def due(self, now: float | None = None) -> bool:
        """Whether the oldest pending acknowledgement has waited ``interval``."""
        if not self.count:
            return False
        return (now if now is not None else time.monotonic()) - self._oldest >= self.interval

    def flush(self) -> None:
        """Send every pending acknowledgement; a transport that fails keeps its own."""
        if not self.count:
            return
        if self._before is not None:
            try:
                self._before()
            except TransportError as error:
                self._give_back(error)
                return
        for key, (transport, batch) in list(self._pending.items()):
            if not batch:
                continue
            # Out of the keepalive's reach before the ack: a renewal racing
            # the ack would find the message gone and warn of a lost lease.
            self._keepalive.let_go(batch)
            try:
                transport.ack_many(batch)
            except TransportError as error:
                # Kept for the next flush: the handle outlives the connection
                # where the broker keeps it; where it does not, the transport
                # drops acknowledgements from an older connection itself.
                self._keepalive.hold(batch)
                self._on_error(transport, error)
                continue
            self._pending[key] = (transport, [])
            self.count -= len(batch)

    def _give_back(self, error: TransportError) -> None:
        """What handlers dispatched was not confirmed: redeliver their messages, ack none.

        Which pending message dispatched the lost one is not known, so every
        pending one goes back to the broker: at least once, never lost.
        """
        logger.error(
            "a message dispatched while handling was not confirmed (%s); "
            "giving back the %d messages awaiting acknowledgement",
            error,
            self.count,
        )
        pending, self._pending = self._pending, {}
        self.count = 0
        for transport, batch in pending.values():
            self._keepalive.let_go(batch)
            for received in batch:
                try:
                    transport.release(received)
                except TransportError as failure:
                    logger.warning("could not give back %r: %s", received, failure)
