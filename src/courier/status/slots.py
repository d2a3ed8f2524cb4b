"""Handling slots: which message a worker's handler is running, readable after it dies.

Writing "handling <id>" to a database before every handler would cost a
write transaction per message, more than the message itself on a fast
broker. A slot costs two memory writes: each worker process owns one small
file, mapped into memory, and writes the message id there before a
handler and zeroes it after. The page cache keeps what was written when
the process is killed (SIGKILL, the OOM killer, ``os._exit``), which is all
this needs: a machine crash kills every worker, and is not a message's fault.

Whether the owner is alive is the kernel's answer, not a guess from pids or
clocks: the owner holds an exclusive ``flock`` on its slot for as long as it
lives, and the kernel drops it when the process ends, however it ends.
:func:`harvest` takes the lock of every slot it can; those owners are dead,
and a slot of theirs that still names a message is that message's death.

A new slot is created under a temporary name and only renamed into place
once locked, so a harvester never mistakes a worker that is just starting
for a dead one. A harvester checks, with the lock held, that the file is
still linked, so two harvesters never charge one death twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from courier.status.base import StatusStore

__all__ = ["SLOT_SIZE", "HandlingSlot", "harvest"]

logger = logging.getLogger("courier.poison")

#: Bytes per slot: a message id (courier's are 32 characters; foreign ones
#: are cut to fit) and its terminator.
SLOT_SIZE = 256
_SUFFIX = ".slot"


class HandlingSlot:
    """One worker process's slot; ``begin`` before a handler, ``end`` after."""

    def __init__(self, directory: Path, worker_id: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in worker_id)[:80]
        name = f"{safe}.{socket.gethostname()}.{os.getpid()}.{os.urandom(4).hex()}"
        temporary = directory / f".{name}.new"
        self.path = directory / f"{name}{_SUFFIX}"
        self._fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(self._fd, SLOT_SIZE)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            os.rename(temporary, self.path)
            self._map = mmap.mmap(self._fd, SLOT_SIZE)
        except BaseException:
            os.close(self._fd)
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        self._empty = bytes(SLOT_SIZE)

    def begin(self, message_id: str) -> None:
        """The handler of ``message_id`` is about to run."""
        data = message_id.encode("utf-8", "replace")[: SLOT_SIZE - 1]
        self._map[: len(data) + 1] = data + b"\0"

    def end(self) -> None:
        """No handler is running: a death from now on blames nobody."""
        self._map[0] = 0

    def close(self) -> None:
        """Remove the slot; the worker is stopping in good order."""
        with contextlib.suppress(OSError):
            self.path.unlink()
        self._map.close()
        os.close(self._fd)


def harvest(directory: Path, store: StatusStore, *, harvester: str) -> list[str]:
    """Charge a death to every message a dead worker's slot names; return those ids."""
    try:
        names = [entry.name for entry in os.scandir(directory) if entry.name.endswith(_SUFFIX)]
    except FileNotFoundError:
        return []
    charged = []
    for name in names:
        message_id = _reap(directory / name)
        if message_id:
            deaths = store.record_death(message_id, harvester)
            logger.warning(
                "a worker died while handling message %s (%s); deaths so far: %d",
                message_id,
                name.removesuffix(_SUFFIX),
                deaths,
            )
            charged.append(message_id)
    return charged


def _reap(path: Path) -> str | None:
    """The message id in a dead worker's slot, removing the slot; None if alive or empty."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # its owner is alive
        if os.fstat(fd).st_nlink == 0:
            return None  # another harvester took it first
        data = os.pread(fd, SLOT_SIZE, 0)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return data.split(b"\0", 1)[0].decode("utf-8", "replace") or None
    finally:
        os.close(fd)
