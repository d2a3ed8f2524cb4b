"""Which worker wrote a log line: its id and instance on every record.

Several workers (a pool, or one per host) write into one log stream; an
operator reading it must be able to tell them apart, and to match a line
with a row of ``courier workers``.
"""

from __future__ import annotations

import logging

__all__ = ["WorkerLogFilter"]


class WorkerLogFilter(logging.Filter):
    """Adds ``worker_id`` and ``instance_id`` to every record that passes a handler."""

    def __init__(self, worker_id: str = "-", instance_id: str = "-") -> None:
        super().__init__()
        self.worker_id = worker_id
        self.instance_id = instance_id

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker_id = self.worker_id
        record.instance_id = self.instance_id
        return True
