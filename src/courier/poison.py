"""Poison messages: the one whose handler kills its worker, and nobody else.

A handler that calls ``os._exit``, segfaults or is OOM-killed raises no
exception, so retries never see it; only the broker does, as a message
that keeps coming back. But the broker's delivery count rises for every
message the dead worker held, prefetched or not, so judging by it alone
sends a whole prefetch of healthy messages to the failure store beside the
one that killed the worker.

The rule: only a death with the handler running counts. The worker writes
the message id into its handling slot before the handler and clears it
after (:mod:`courier.status.slots`); a dead worker's slot is *harvested*
into the status store as one death of that message, by whichever worker
looks first (every worker at start, and before handling any redelivered
message). When a message arrives whose deaths reached ``max_deliveries``,
it is dead-lettered before its handler runs again, with a reason that says
it killed its worker.

The broker's own count stays as a backstop, at four times
``max_deliveries``, for deaths a slot cannot see (a crash outside any
handler, a status store that was unreachable). Without a status store the
guard falls back to the broker's count alone, as before.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from courier.errors import ConfigurationError, DeliveryLimitExceeded
from courier.status.slots import HandlingSlot, harvest

if TYPE_CHECKING:
    from courier.envelope import Envelope
    from courier.status.base import StatusStore
    from courier.transports.base import Received

__all__ = ["BACKSTOP_FACTOR", "DEFAULT_MAX_DELIVERIES", "PoisonGuard"]

logger = logging.getLogger("courier.poison")

DEFAULT_MAX_DELIVERIES = 10
#: The broker's count may exceed ``max_deliveries`` this many times over
#: before it alone dead-letters a message: prefetched batch-mates of a
#: killer are handed out once more per death, and must survive it.
BACKSTOP_FACTOR = 4
#: Seconds between looks for dead workers' slots when the broker gives no
#: delivery count (every redelivery is looked at at once otherwise).
HARVEST_INTERVAL = 0.5


class PoisonGuard:
    """Counts worker deaths per message and refuses the message that killed too many."""

    def __init__(
        self,
        store: Callable[[], StatusStore | None],
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
    ) -> None:
        self._store_factory = store
        self._store: StatusStore | None = None
        self._resolved = False
        self.max_deliveries = max_deliveries
        self._slot: HandlingSlot | None = None
        self._worker_id = "-"
        self._next_harvest = 0.0
        self._any_deaths = False
        self._deaths_checked = 0.0

    @property
    def max_deliveries(self) -> int:
        return self._max

    @max_deliveries.setter
    def max_deliveries(self, value: int) -> None:
        if value < 1:
            raise ConfigurationError("max_deliveries must be at least 1")
        self._max = value

    @property
    def store(self) -> StatusStore | None:
        """The status store, found on first use (None: judge by the broker's count)."""
        if not self._resolved:
            self._store = self._store_factory()
            self._resolved = True
        return self._store

    def reset(self) -> None:
        """Look for the status store again on next use (the bus was given another)."""
        store, self._store, self._resolved = self._store, None, False
        if store is not None:
            store.close()

    # -- the worker's lifecycle ----------------------------------------------

    def start(self, worker_id: str) -> None:
        """Open this worker's slot, after charging the deaths of workers that died before."""
        store = self.store
        self._worker_id = worker_id
        if store is None:
            logger.info(
                "no status store: a message is dead-lettered after max_deliveries=%d "
                "deliveries by the broker, prefetched or not",
                self.max_deliveries,
            )
            return
        self.harvest()
        self._slot = HandlingSlot(store.slot_directory(), worker_id)

    def stop(self) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            slot.close()

    def harvest(self) -> None:
        """Charge a death to each message a dead worker of this host was handling."""
        store = self.store
        if store is None:
            return
        if harvest(store.slot_directory(), store, harvester=self._worker_id):
            self._any_deaths = True
            self._deaths_checked = time.monotonic()

    # -- around each message -------------------------------------------------

    def check(self, envelope: Envelope, received: Received) -> None:
        """Raise DeliveryLimitExceeded if this delivery must not reach its handler."""
        count = received.delivery_count
        limit = self._max
        store = self.store
        if store is None:
            if count > limit:
                raise DeliveryLimitExceeded(
                    f"delivered {count} times, more than max_deliveries={limit}; "
                    "its handler may be killing the worker"
                )
            return
        backstop = limit * BACKSTOP_FACTOR
        if count > backstop:
            raise DeliveryLimitExceeded(
                f"the broker delivered it {count} times, more than {backstop} "
                f"({BACKSTOP_FACTOR} x max_deliveries); something kills the worker around it"
            )
        redelivered = count > 1
        if not redelivered and received.transport.capabilities.delivery_count:
            return  # a first delivery: nobody died handling it yet
        now = time.monotonic()
        if redelivered or now >= self._next_harvest:
            self._next_harvest = now + HARVEST_INTERVAL
            self.harvest()
        if not redelivered and not self._deaths_known(now, store):
            return
        deaths = store.deaths(envelope.id)
        if deaths >= limit:
            store.forget(envelope.id)
            raise DeliveryLimitExceeded(
                f"its handler killed the worker {deaths} times (max_deliveries={limit}); "
                "dead-lettered without running it again"
            )

    def _deaths_known(self, now: float, store: StatusStore) -> bool:
        """Whether any death is recorded (looked up at most once per harvest interval)."""
        if now - self._deaths_checked >= HARVEST_INTERVAL:
            self._any_deaths = store.has_deaths()
            self._deaths_checked = now
        return self._any_deaths

    def begin(self, message_id: str) -> None:
        """A handler is about to run for ``message_id``."""
        slot = self._slot
        if slot is not None:
            slot.begin(message_id)

    def end(self) -> None:
        """The handler returned or raised: a death from now on is nobody's fault."""
        slot = self._slot
        if slot is not None:
            slot.end()
