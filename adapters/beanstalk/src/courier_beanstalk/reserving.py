"""Reserving: how courier waits for jobs, and in which order it takes them.

- ``reserve-with-timeout`` waits in whole seconds, and holds the
  connection while it waits. A wait is cut into slices of at most one
  second, with the lock released in between (a touch waiting for it goes
  first); the part of a timeout below a second is polled every
  ``poll_interval``.
- While the connection holds a job in the last second of its TTR, a
  reserve with nothing ready answers ``DEADLINE_SOON`` at once instead of
  waiting: the wait goes on by polling until the job is touched or lapses.
- With several tubes watched, beanstalkd serves the most urgent job of any
  of them. courier drains the first queue listed first, so each tube is
  asked on its own (watch it alone, reserve without waiting) in order, and
  only a wait watches them all; the next call asks in order again.
- A reserved job says nothing of its tube; with several tubes watched,
  ``stats-job`` tells (and gives ``reserves``, the delivery count).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import greenstalk

if TYPE_CHECKING:
    from courier_beanstalk.connection import Connection

__all__ = ["RESERVE_SLICE", "Reserved", "reserve"]

#: The longest a reserve holds the connection (beanstalkd counts whole seconds).
RESERVE_SLICE = 1


class Reserved(NamedTuple):
    """A job this connection reserved."""

    job_id: int
    body: bytes
    tube: str
    #: ``stats-job`` ``reserves`` (1 on the first delivery); 0 when not asked.
    reserves: int


def reserve(
    connection: Connection, tubes: Sequence[str], most: int, timeout: float, *, count: bool
) -> list[Reserved]:
    """Up to ``most`` jobs, the first tube listed drained first; wait up to ``timeout``."""
    deadline = time.monotonic() + timeout
    several = len(tubes) > 1
    if several:
        for tube in tubes:
            got, _ = _take(connection, (tube,), most, 0, count)
            if got:
                return got
        if timeout <= 0:
            return []
    while True:
        remaining = deadline - time.monotonic()
        wait = min(RESERVE_SLICE, int(remaining + 0.02)) if remaining > 0 else 0
        # Waiting on every tube at once: the first job of any, then the
        # next call asks them in order again.
        got, soon = _take(connection, tubes, 1 if several else most, wait, count)
        if got:
            return got
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return []
        if wait == 0 or soon:
            time.sleep(min(connection.poll_interval, remaining))
        elif connection.waiting:
            time.sleep(0.001)  # a touch is waiting for the connection: let it in


def _take(
    connection: Connection, tubes: Sequence[str], most: int, wait: int, count: bool
) -> tuple[list[Reserved], bool]:
    """Reserve waiting up to ``wait`` s, then more without waiting: (jobs, deadline soon)."""
    with connection.command("reserve"):
        connection.watch_only(tubes)
        client = connection.client
        try:
            job = client.reserve(wait)
        except greenstalk.TimedOutError:
            return [], False
        except greenstalk.DeadlineSoonError:
            return [], True
        got = [_reserved(connection, job, tubes, count)]
        while len(got) < most:
            try:
                job = client.reserve(0)
            except (greenstalk.TimedOutError, greenstalk.DeadlineSoonError):
                break
            got.append(_reserved(connection, job, tubes, count))
        return got, False


def _reserved(
    connection: Connection, job: greenstalk.Job[bytes], tubes: Sequence[str], count: bool
) -> Reserved:
    connection.held.add(job.id)
    if not count and len(tubes) == 1:
        return Reserved(job.id, job.body, tubes[0], 0)
    try:
        stats = connection.client.stats_job(job.id)
    except greenstalk.NotFoundError:  # pragma: no cover - a reserved job always has stats
        return Reserved(job.id, job.body, tubes[0], 0)
    return Reserved(job.id, job.body, str(stats["tube"]), int(stats["reserves"]))
