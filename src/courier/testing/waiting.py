"""Waiting for something another thread or process will do, in tests.

Tests of workers, brokers and pools watch other processes: a condition
polled until a deadline, failing with what was awaited, is the one way
they all wait (never a bare ``sleep`` that is too short on a busy machine).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["wait_for"]


def wait_for(
    condition: Callable[[], object],
    timeout: float = 5.0,
    what: str = "a condition",
    *,
    interval: float = 0.02,
) -> None:
    """Return once ``condition()`` is true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
