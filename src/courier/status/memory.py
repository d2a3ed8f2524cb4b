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

__all__ = ["MemoryStatusStore"]


class MemoryStatusStore(StatusStore):
    def __init__(self, directory: Path | None = None) -> None:
        self._deaths: dict[str, int] = {}
        self._lock = threading.Lock()
        self._directory = directory or Path(tempfile.gettempdir()) / (
            f"courier-handling-{os.getpid()}-{id(self):x}"
        )

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

    def slot_directory(self) -> Path:
        return self._directory

    def describe(self) -> str:
        return "memory (this process only)"
