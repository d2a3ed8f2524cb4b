"""The transports a worker consumes, each with its own backoff.

One broker going away must not stop a worker that consumes others: each
source keeps its own count of errors in a row and rests for a doubling,
jittered while before it is asked again, and the worker carries on with
the rest. Transports reconnect by themselves on their next call.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from courier.errors import TransportError
from courier.transports.base import Transport
from courier.worker_options import WorkerOptions

__all__ = ["Source", "drained", "next_try_in"]

logger = logging.getLogger("courier.worker")


@dataclass
class Source:
    """One consumed transport, the queues the worker reads there, and its rest."""

    transport: Transport
    queues: list[str]
    #: Broker errors in a row, and when to try this transport again.
    failures: int = 0
    retry_at: float = 0.0

    def rest(self, error: TransportError, options: WorkerOptions) -> float:
        """Back off after ``error``: the seconds until this source is asked again."""
        self.failures += 1
        wait: float = min(
            options.reconnect_max_delay,
            options.reconnect_delay * 2 ** min(self.failures - 1, 30),
        )
        wait *= random.uniform(0.5, 1.5)
        self.retry_at = time.monotonic() + wait
        logger.warning(
            "transport %r failed (%s: %s); trying again in %.1fs (attempt %d)",
            self.transport.name,
            type(error).__name__,
            error,
            wait,
            self.failures,
        )
        return wait


def next_try_in(sources: Sequence[Source], sleep: float) -> float:
    """Seconds to wait when some source is resting: until it may be asked, or ``sleep``."""
    now = time.monotonic()
    resting = [source.retry_at for source in sources if source.retry_at > now]
    wait: float = (min(resting) - now) if resting else 0.0
    if len(resting) < len(sources):
        # The healthy ones were empty just now: look again after ``sleep``.
        wait = min(wait, max(sleep, 0.05))
    return wait


def drained(source: Source) -> bool:
    """Nothing ready, in flight or delayed on ``source``'s queues (a count it cannot tell is 0).

    Raises the broker's TransportError: the caller rests the source and
    does not conclude "empty" from a broker that could not answer.
    """
    for stats in source.transport.stats(source.queues):
        if (stats.ready or 0) + (stats.in_flight or 0) + (stats.delayed or 0):
            return False
    return True
