"""Worker status: one row per running worker, and the orders every worker reads.

A worker cannot be asked "what are you doing?" across hosts, so each one
writes what it is doing (a *beat*) to the status store every few seconds,
and the operator's commands read the rows: ``courier workers`` lists them,
``courier health`` judges them. The same store carries the two orders that
go the other way: a stop timestamp (every worker started before it stops
after the message in hand) and the set of paused transports.

A row belongs to one *instance* (one run of a process); the *worker id*
stays the same across restarts (``--id``), so a supervisor's slot keeps its
name while each run keeps its own row. Rows that stopped beating are kept
for :data:`WORKERS_KEPT_FOR` seconds, so a worker that died shows as dead
for a while instead of vanishing, then are deleted.
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEAD_AFTER_BEATS",
    "WORKERS_KEPT_FOR",
    "WorkerBoard",
    "WorkerStatus",
    "stop_requested_since",
]

#: Seconds a row is kept after its last beat (then it is deleted).
WORKERS_KEPT_FOR = 3600.0

#: A worker whose last beat is older than this many of its intervals is dead.
DEAD_AFTER_BEATS = 3.0


@dataclass(frozen=True)
class WorkerStatus:
    """What one worker instance said about itself in its last beat."""

    worker_id: str
    instance_id: str
    host: str
    pid: int
    #: ``idle``, ``handling <type>``, ``paused``, ``stopping`` or ``stopped``.
    state: str
    started_at: float
    last_beat: float
    #: Seconds between beats: how the reader tells a late beat from a dead worker.
    interval: float
    #: When the state began (how long a handler has run, for ``handling``).
    state_since: float = 0.0
    handled: int = 0
    failed: int = 0
    retried: int = 0
    #: The last failure, one short line (class and message; DSNs masked).
    last_error: str | None = None
    rss_mib: float = 0.0
    #: The queues consumed, per transport name.
    queues: dict[str, list[str]] = field(default_factory=dict)
    #: When a counter last moved (0: never since the start).
    last_progress_at: float = 0.0

    @property
    def transports(self) -> tuple[str, ...]:
        return tuple(self.queues)

    def is_dead(self, now: float) -> bool:
        """Stopped, or silent for longer than :data:`DEAD_AFTER_BEATS` intervals."""
        if self.state == "stopped":
            return True
        return now - self.last_beat > max(self.interval * DEAD_AFTER_BEATS, 1.0)

    def progressed_at(self) -> float:
        """When it last moved a counter, or started if it never did."""
        return max(self.last_progress_at, self.started_at)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> WorkerStatus:
        data: dict[str, Any] = json.loads(text)
        known = {item.name for item in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


class WorkerBoard(ABC):
    """The worker half of a status store: beats, the stop order and pauses."""

    #: Seconds a row is kept after its last beat.
    workers_kept_for: float = WORKERS_KEPT_FOR

    @abstractmethod
    def beat(self, status: WorkerStatus) -> None:
        """Write (insert or replace) the row of ``status.instance_id``."""

    @abstractmethod
    def workers(self, now: float) -> list[WorkerStatus]:
        """Every row beaten within :attr:`workers_kept_for` of ``now``; older ones are deleted."""

    @abstractmethod
    def request_stop(self, at: float) -> None:
        """Ask every worker started before ``at`` to stop after the message in hand."""

    @abstractmethod
    def stop_requested_at(self) -> float | None:
        """The last stop order's time, None if there never was one."""

    @abstractmethod
    def pause(self, transport: str) -> None:
        """Workers stop receiving from ``transport`` (what they hold is finished)."""

    @abstractmethod
    def resume(self, transport: str) -> None:
        """Workers receive from ``transport`` again."""

    @abstractmethod
    def paused(self) -> frozenset[str]:
        """The transports paused now."""


def stop_requested_since(store: WorkerBoard, started_at: float) -> bool:
    """Whether a stop order was given after ``started_at`` (a Unix time).

    What a supervisor of workers (the process pool) calls now and then to
    learn that ``courier stop-workers`` ran since its children started.
    """
    at = store.stop_requested_at()
    return at is not None and at > started_at
