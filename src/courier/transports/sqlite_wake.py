"""Waking idle ``sqlite://`` workers when a message is committed, from any process.

SQLite has no notifications: a worker with nothing to do could only look
again every ``poll_interval``. So each worker waiting in ``receive`` binds
a Unix datagram socket in a folder beside the database file
(``<db>-wake/``, or a folder under the temporary directory when that path
is too long for a socket), and a producer, after its commit, sends an empty
datagram to every socket there. The worker waits on its socket with the
poll interval as the timeout: a wake ends the wait at once, and the poll
stays as the backstop for everything a wake cannot promise (a full socket
buffer, a producer that cannot write in the folder, a delayed message
coming due, a lease running out).

Why datagram sockets, one per worker:

- a producer in another process can send one without blocking and without
  a connection, and learns for free that its receiver is gone:
  ``ECONNREFUSED`` (nobody bound it: a killed worker's leftover) or
  ``ENOENT``; it then removes the leftover. A full buffer (``EAGAIN``)
  means the worker has wakes waiting already, which is enough;
- a file in a folder is all the registry needed: a worker adds itself by
  binding and removes itself on close; a producer lists the folder again
  only when its modification time changes;
- a FIFO would block or fail to open without a reader, and one shared
  FIFO wakes a single reader; an ``inotify`` watch on the WAL file is
  Linux-only and fires on every write (acknowledgements too).

The wake carries no data: a worker that wakes runs the same claim as a poll,
so a stray datagram costs one indexed read, never a wrong delivery.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import select
import socket
import tempfile
import threading
import time
import weakref
from pathlib import Path

__all__ = ["WakeListener", "Waker", "supported", "wake_directory"]

#: ``sun_path`` holds 108 bytes on Linux (104 on macOS), the final NUL included.
_MAX_SOCKET_PATH = 100
_SUFFIX = ".sock"
#: A folder changed this recently may change again within its clock tick:
#: list it again rather than trust the modification time.
_FRESH_NS = 200_000_000


def supported() -> bool:
    """Whether this platform has Unix datagram sockets."""
    return hasattr(socket, "AF_UNIX")


def wake_directory(database: str) -> Path:
    """Where the wake sockets of ``database``'s workers live; the same for every process."""
    path = os.path.abspath(database)
    beside = Path(f"{path}-wake")
    if len(os.fsencode(beside)) + 32 <= _MAX_SOCKET_PATH:
        return beside
    digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"courier-wake-{digest}"


class WakeListener:
    """A waiting worker's socket: bound on open, removed on close."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{os.getpid()}-{os.urandom(6).hex()}{_SUFFIX}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(os.fspath(self.path))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._socket = sock
        # A transport dropped without close(): its socket closes and its file
        # goes when the listener is collected, quietly (no ResourceWarning).
        self._finalizer = weakref.finalize(self, _close, sock, self.path, os.getpid())

    def drain(self) -> None:
        """Forget the wakes received so far (the claim that follows sees their messages)."""
        recv = self._socket.recv
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while True:
                recv(16)

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a wake; True if one came."""
        try:
            ready, _, _ = select.select([self._socket], [], [], timeout)
        except InterruptedError:  # pragma: no cover - retried by Python since 3.5
            return False
        return bool(ready)

    def close(self) -> None:
        self._finalizer()


def _close(sock: socket.socket, path: Path, owner: int) -> None:
    if os.getpid() == owner:  # a forked child leaves its parent's socket alone
        with contextlib.suppress(OSError):
            path.unlink()
    sock.close()


class Waker:
    """A producer's side: one datagram to each waiting worker, after a commit."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._mtime = -1
        self._targets: list[str] = []

    def wake(self) -> None:
        """Wake every worker waiting on this database; never blocks, never raises."""
        try:
            mtime = os.stat(self.directory).st_mtime_ns
        except OSError:
            return  # no folder: no worker ever waited here
        with self._lock:
            if mtime != self._mtime or time.time_ns() - mtime < _FRESH_NS:
                self._mtime = mtime
                self._targets = self._list()
            targets = self._targets
            if not targets:
                return
            sock = self._socket
            if sock is None:
                sock = self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sock.setblocking(False)
                # Closed quietly with the waker if its transport is never closed.
                weakref.finalize(self, sock.close)
            gone = []
            for target in targets:
                try:
                    sock.sendto(b"", target)
                except (BlockingIOError, InterruptedError):
                    pass  # its buffer is full of wakes already: it will look
                except OSError as error:
                    if error.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
                        gone.append(target)
            for target in gone:
                # A dead worker's leftover (nobody bound to it): remove it.
                with contextlib.suppress(OSError):
                    os.unlink(target)
                self._targets.remove(target)

    def _list(self) -> list[str]:
        try:
            return [
                entry.path for entry in os.scandir(self.directory) if entry.name.endswith(_SUFFIX)
            ]
        except OSError:
            return []

    def close(self) -> None:
        with self._lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
