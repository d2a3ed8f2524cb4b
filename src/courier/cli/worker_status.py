"""What ``courier workers`` and ``courier health`` share: the store and the judgement.

A worker's row says what it did; whether that is a problem depends on the
queues. A worker that moved no counter for a minute is fine on an empty
queue and *stalled* when messages are waiting on a queue it consumes (a
handler blocked on a lock, a socket without a timeout). So the rows are
judged against the ready counts the brokers report now; a broker that
cannot answer makes a count unknown, never the command fail.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from courier.cli import exit_codes
from courier.cli.context import CliContext, fail
from courier.errors import TransportError
from courier.status.sqlite import SqliteStatusStore
from courier.transports.sqlite_connection import NoDatabase

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from courier.bus import Bus
    from courier.status.base import StatusStore
    from courier.status.workers import WorkerStatus

__all__ = [
    "STALLED_AFTER",
    "Judged",
    "ReadyCounts",
    "consumed",
    "judge",
    "open_board",
    "ready_counts",
    "rows",
]

logger = logging.getLogger("courier.cli")

#: ``--stalled-after``'s default: seconds without progress while messages wait.
STALLED_AFTER = 60.0


def open_board(cli: CliContext, *, read_only: bool) -> tuple[Bus, StatusStore]:
    """The bus and its status store; ``read_only``: never create a SQLite file."""
    bus = cli.bus(read_only=read_only)
    store = bus.poison.store
    if store is None:
        raise fail(
            "no status store: set status_store (or use a SQLite failure transport)",
            exit_codes.USAGE,
        )
    if read_only and isinstance(store, SqliteStatusStore):
        store.require_existing(True)
        # A bus that outlives the command (a framework's) may create the file again.
        click.get_current_context().call_on_close(lambda: store.require_existing(False))
    return bus, store


def rows(store: StatusStore, now: float) -> list[WorkerStatus]:
    """Every row kept; none when the SQLite file does not exist yet (nothing ever ran)."""
    try:
        return store.workers(now)
    except NoDatabase:
        return []


@dataclass
class ReadyCounts:
    """Ready messages per (transport, queue); None where a broker could not tell."""

    counts: dict[tuple[str, str], int | None]
    #: One line per transport that could not be asked.
    errors: list[str]

    def ready(self, transport: str, queues: Iterable[str]) -> int | None:
        """Ready messages on ``queues`` of ``transport``; None if none could be counted."""
        known = [self.counts.get((transport, queue)) for queue in queues]
        counted = [count for count in known if count is not None]
        return sum(counted) if counted else None

    def total(self, paused: frozenset[str] = frozenset()) -> int:
        return sum(
            count or 0 for (transport, _), count in self.counts.items() if transport not in paused
        )

    def waiting(self, paused: frozenset[str] = frozenset()) -> list[str]:
        """``transport/queue (N ready)`` for every queue with ready messages."""
        return [
            f"{transport}/{queue} ({count} ready)"
            for (transport, queue), count in sorted(self.counts.items())
            if count and transport not in paused
        ]


def ready_counts(bus: Bus, wanted: dict[str, set[str]]) -> ReadyCounts:
    """Ask each transport of ``wanted`` (name -> queues) how many messages are ready."""
    result = ReadyCounts({}, [])
    for name, queues in sorted(wanted.items()):
        if name not in bus.transports or not queues:
            continue
        try:
            found = bus.transport(name).stats(sorted(queues))
        except TransportError as error:
            logger.debug("stats of %r failed", name, exc_info=error)
            result.errors.append(f"{name}: {error}")
            continue
        for stats in found:
            result.counts[(name, stats.queue)] = stats.ready
    return result


def consumed(statuses: Sequence[WorkerStatus]) -> dict[str, set[str]]:
    """The queues the workers consume, per transport name."""
    wanted: dict[str, set[str]] = {}
    for status in statuses:
        for transport, queues in status.queues.items():
            wanted.setdefault(transport, set()).update(queues)
    return wanted


@dataclass(frozen=True)
class Judged:
    """A row and what the reader makes of it."""

    status: WorkerStatus
    dead: bool
    stalled: bool

    @property
    def verdict(self) -> str:
        return "dead" if self.dead else "stalled" if self.stalled else "alive"


def judge(
    status: WorkerStatus,
    now: float,
    ready: ReadyCounts,
    *,
    stalled_after: float,
    paused: frozenset[str] = frozenset(),
) -> Judged:
    """Dead (no fresh beat), stalled (no progress while its queues hold ready messages)."""
    dead = status.is_dead(now)
    stalled = False
    quiet = now - status.progressed_at() > stalled_after
    if not dead and quiet and status.state not in ("paused", "stopping"):
        stalled = any(
            (ready.ready(transport, queues) or 0) > 0
            for transport, queues in status.queues.items()
            if transport not in paused
        )
    return Judged(status, dead, stalled)
