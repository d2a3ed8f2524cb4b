"""The status store: what every worker of a bus can read about the others.

A worker that dies while a handler runs leaves no exception behind, only a
broker that hands the message out again; and a broker's delivery count
also counts the messages that were merely prefetched beside it. So the
worker notes which message its handler is running (a *handling slot*, see
:mod:`courier.status.slots`), and when a worker turns out to have died with
a note in its slot, that message is charged one *death* here. The poison
guard (:mod:`courier.poison`) reads the deaths, not the broker's count.

The same store keeps the workers' heartbeats, the stop order and the
paused transports (:mod:`courier.status.workers`). It is SQLite by default
(the file that holds the failure store), Redis with ``courier-bus-redis``
(workers on several hosts), and in-process memory for tests.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from courier.status.workers import WorkerBoard

__all__ = ["DEATHS_KEPT_FOR", "StatusStore"]

#: Seconds a death is remembered after the last one was recorded: far longer
#: than any message takes to be redelivered, short enough to forget ids that
#: will never come again.
DEATHS_KEPT_FOR = 7 * 24 * 3600.0


class StatusStore(WorkerBoard, ABC):
    """Where deaths are counted and workers beat; readable by every worker of the bus."""

    @abstractmethod
    def record_death(self, message_id: str, worker_id: str) -> int:
        """Charge ``message_id`` one worker death; return its deaths so far."""

    @abstractmethod
    def deaths(self, message_id: str) -> int:
        """How many workers died while handling ``message_id`` (0 if none)."""

    @abstractmethod
    def has_deaths(self) -> bool:
        """Whether any message has a death recorded: the common answer is no."""

    @abstractmethod
    def forget(self, message_id: str) -> None:
        """Drop the deaths of ``message_id`` (it was handled, or dead-lettered)."""

    @abstractmethod
    def slot_directory(self) -> Path:
        """The folder for this host's handling slots (see :mod:`courier.status.slots`)."""

    def close(self) -> None:
        """Release the store's connection."""

    def describe(self) -> str:
        """Where it is, for ``courier debug`` (never a password)."""
        return type(self).__name__
