"""Where the workers of a bus keep what the others must be able to read."""

from courier.status.base import StatusStore
from courier.status.memory import MemoryStatusStore
from courier.status.registry import check_status_dsn, open_status_store
from courier.status.sqlite import SqliteStatusStore
from courier.status.workers import WorkerBoard, WorkerStatus, stop_requested_since

__all__ = [
    "MemoryStatusStore",
    "SqliteStatusStore",
    "StatusStore",
    "WorkerBoard",
    "WorkerStatus",
    "check_status_dsn",
    "open_status_store",
    "stop_requested_since",
]
