"""An in-process status store, for tests and buses without a durable one.

Deaths recorded here are only seen by this process, so a SIGKILLed worker's
death is never counted by another: it exists for code that runs the worker
in-process (tests) and as the documented fallback.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

from courier.status.base import StatusStore
from courier.status.workers import WorkerStatus
from courier.transports.dsn import Dsn

__all__ = ["MemoryStatusStore"]


class MemoryStatusStore(StatusStore):
    def __init__(self, directory: Path | None = None) -> None:
        self._deaths: dict[str, int] = {}
        self._workers: dict[str, WorkerStatus] = {}
        self._stop_at: float | None = None
        self._paused: frozenset[str] = frozenset()
        self._lock = threading.Lock()
        self._directory = directory or Path(tempfile.gettempdir()) / (
            f"courier-handling-{os.getpid()}-{id(self):x}"
        )

    @classmethod
    def from_dsn(cls, dsn: Dsn) -> MemoryStatusStore:
        """``memory://`` (the entry point of the scheme)."""
        return cls()

    def record_death(self, message_id: str, worker_id: str) -> int:
        with self._lock:
            self._deaths[message_id] = self._deaths.get(message_id, 0) + 1
            return self._deaths[message_id]

    def deaths(self, message_id: str) -> int:
        return self._deaths.get(message_id, 0)

    def has_deaths(self) -> bool:
        return bool(self._deaths)

    def forget(self, message_id: str) -> None:
        with self._lock:
            self._deaths.pop(message_id, None)

    def beat(self, status: WorkerStatus) -> None:
        with self._lock:
            self._workers[status.instance_id] = status

    def workers(self, now: float) -> list[WorkerStatus]:
        with self._lock:
            for instance, status in list(self._workers.items()):
                if now - status.last_beat > self.workers_kept_for:
                    del self._workers[instance]
            return sorted(self._workers.values(), key=lambda s: (s.worker_id, s.started_at))

    def request_stop(self, at: float) -> None:
        self._stop_at = at

    def stop_requested_at(self) -> float | None:
        return self._stop_at

    def pause(self, transport: str) -> None:
        with self._lock:
            self._paused = self._paused | {transport}

    def resume(self, transport: str) -> None:
        with self._lock:
            self._paused = self._paused - {transport}

    def paused(self) -> frozenset[str]:
        return self._paused

    def slot_directory(self) -> Path:
        return self._directory

    def describe(self) -> str:
        return "memory (this process only)"
