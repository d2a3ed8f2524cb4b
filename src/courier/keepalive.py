"""The worker's keepalive thread: leases renewed for every message it holds.

A message held longer than its lease (SQS visibility, beanstalkd TTR, a
Redis idle time, a SQLite lease) would be handed to another worker while
this one still works on it. The thread renews everything held, in hand or
prefetched, every ``interval`` seconds; never from a signal handler.

The worker takes a message out of the held set *before* it acknowledges it,
and each renewal happens under the same lock after checking the message is
still held, so a renewal never races an acknowledgement into a false "the
lease was lost" warning.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from courier.errors import TransportError
from courier.transports.base import Received

__all__ = ["Keepalive"]

logger = logging.getLogger("courier.worker")


class Keepalive:
    """What a worker holds, and the thread that renews it."""

    def __init__(self, interval: float | None) -> None:
        #: Seconds between rounds; None: no transport asks, nothing is tracked.
        self.interval = interval
        self._held: set[Received] = set()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        return self.interval is not None

    def hold(self, received: Iterable[Received]) -> None:
        if self.interval is not None:
            with self._lock:
                self._held.update(received)

    def let_go(self, received: Iterable[Received]) -> None:
        """Stop renewing these (waits for a renewal of one of them to finish)."""
        if self.interval is not None:
            with self._lock:
                self._held.difference_update(received)

    def start(self) -> None:
        interval = self.interval
        if interval is None:
            return
        self._thread = threading.Thread(
            target=self._renew_forever, args=(interval,), name="courier-keepalive", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _renew_forever(self, interval: float) -> None:
        while not self._done.wait(interval):
            self._renew_held()

    def _renew_held(self) -> None:
        """One round of renewals; its own frame, so nothing held outlives the round."""
        with self._lock:
            held = list(self._held)
        for received in held:
            with self._lock:
                if received not in self._held:
                    continue
                try:
                    received.transport.renew(received)
                except TransportError as error:
                    logger.warning("could not renew %r: %s", received, error)
