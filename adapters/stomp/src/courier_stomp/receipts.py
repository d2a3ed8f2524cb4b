"""SEND receipts, many outstanding: the publishing connection's bookkeeping.

Part of the connection (:mod:`courier_stomp.connection`). Every SEND carries
a ``receipt`` header; RabbitMQ answers with a RECEIPT only once the message
is confirmed (its STOMP plugin uses publisher confirms), so a receipt means
"the broker has it". The sending thread registers each receipt id in a
:class:`ReceiptBook` before the frame leaves and then waits on its
:class:`Batch`; stomp.py's listener thread settles them.

STOMP has no negative receipt. A broker that refuses a frame answers with an
ERROR that, on RabbitMQ, names no receipt, and usually closes the
connection; so an ERROR or a lost connection fails every receipt still
outstanding on it: exactly the messages whose arrival is not known.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

__all__ = ["Batch", "ReceiptBook"]


class Batch:
    """Messages sent together, settled one by one as their receipts arrive."""

    __slots__ = ("event", "ids", "lock", "remaining", "status")

    def __init__(self, ids: Sequence[str]) -> None:
        self.ids = ids
        #: ``done`` runs on the sending thread (a message that could not be
        #: built) and on the receiver thread (its receipt) alike.
        self.lock = threading.Lock()
        #: Per message: None pending, "" received, else why it was not.
        self.status: list[str | None] = [None] * len(ids)
        self.remaining = len(ids)
        self.event = threading.Event()
        if not ids:
            self.event.set()

    def done(self, index: int, error: str) -> None:
        """Settle one message ("" for received); any thread."""
        with self.lock:
            if self.status[index] is not None:
                return
            self.status[index] = error
            self.remaining -= 1
            finished = not self.remaining
        if finished:
            self.event.set()

    def fail_rest(self, error: str) -> None:
        for index, status in enumerate(self.status):
            if status is None:
                self.done(index, error)

    def wait(self, timeout: float) -> dict[str, str]:
        """Wait for every receipt; return the failures by message id."""
        finished = self.event.wait(timeout)
        late = "" if finished else f"no receipt from the broker within {timeout:g}s"
        ids = self.ids
        return {ids[i]: s or late for i, s in enumerate(self.status) if s or s is None}


class ReceiptBook:
    """Receipt id -> (batch, index) for what is outstanding; at most ``window`` at once.

    A full window lets the sender go on once ``slack`` receipts came back,
    not at each one, so frames leave in groups rather than one per wake-up.
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self.slack = max(1, min(64, window))
        self._low = window - self.slack
        self._pending: dict[str, tuple[Batch, int]] = {}
        self._cond = threading.Condition()
        #: Why no receipt can come any more (the connection failed), or None.
        self.failed: str | None = None

    def expect(self, receipt: str, batch: Batch, index: int, timeout: float) -> bool:
        """Register ``receipt`` before its frame is sent; False if it cannot be.

        Waits while ``window`` receipts are outstanding (flow control); a
        failed book, or no room within ``timeout``, fails the message at once.
        """
        with self._cond:
            if len(self._pending) >= self.window and self.failed is None:
                self._cond.wait_for(
                    lambda: len(self._pending) <= self._low or self.failed is not None, timeout
                )
            if self.failed is not None:
                batch.done(index, self.failed)
                return False
            if len(self._pending) >= self.window:
                batch.done(index, f"no receipt from the broker within {timeout:g}s")
                return False
            self._pending[receipt] = (batch, index)
            return True

    def forget(self, receipt: str, error: str) -> None:
        """The frame for ``receipt`` could not be sent: fail it now."""
        with self._cond:
            entry = self._pending.pop(receipt, None)
            if entry is not None:
                entry[0].done(entry[1], error)
                self._cond.notify_all()

    def settle(self, receipt: str) -> bool:
        """A RECEIPT arrived (listener thread); False if nothing waited for it."""
        with self._cond:
            entry = self._pending.pop(receipt, None)
            if entry is None:
                return False
            entry[0].done(entry[1], "")
            if len(self._pending) == self._low:
                self._cond.notify_all()
            return True

    def fail(self, error: str) -> None:
        """No receipt will come: fail everything outstanding, and all that follows."""
        with self._cond:
            if self.failed is None:
                self.failed = error
            pending, self._pending = self._pending, {}
            for batch, index in pending.values():
                batch.done(index, error)
            self._cond.notify_all()

    def outstanding(self) -> int:
        with self._cond:
            return len(self._pending)
