"""Every beanstalkd and greenstalk quirk: one connection, one lock, errors translated.

What beanstalkd demands, and what this module does about it:

- A job is touched, released, buried (and, while reserved, deleted) only
  on the connection that reserved it. So a transport keeps one connection,
  and every command runs under one lock: the worker thread reserves and
  deletes, the keepalive thread touches (and goes first when a reserve is
  waiting; :mod:`courier_beanstalk.reserving` has how a reserve waits).
- greenstalk reads without a timeout unless its socket has one, and a
  Python socket timeout costs a poll() per read and write: the kernel keeps
  the timeout instead (SO_RCVTIMEO). greenstalk asserts on a truncated
  reply (an AssertionError, not a ConnectionError), and a malformed command
  leaves the rest of the conversation out of step. Any of that loses the
  connection: the socket is shut at once, so beanstalkd returns the
  reserved jobs, and the transport opens a new one.
- beanstalkd's answers NOT_FOUND, TIMED_OUT and DEADLINE_SOON are answers,
  not failures; JOB_TOO_BIG, DRAINING, OUT_OF_MEMORY refuse a job.
- ``release`` and ``bury`` take a priority: the job's own, from ``stats-job``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import greenstalk

from courier.errors import ConnectionLost, PublishNotConfirmed, TransportError
from courier_beanstalk import reserving
from courier_beanstalk.reserving import RESERVE_SLICE, Reserved

__all__ = ["Connection"]

logger = logging.getLogger("courier.beanstalk")

_ANSWERS = (greenstalk.NotFoundError, greenstalk.TimedOutError, greenstalk.DeadlineSoonError)
_REFUSALS = (
    greenstalk.JobTooBigError,
    greenstalk.DrainingError,
    greenstalk.OutOfMemoryError,
    greenstalk.BuriedError,
    greenstalk.InternalError,
)


#: A non-blocking peek (where the platform has it; elsewhere no idle check).
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)

#: What a broken or out-of-step conversation raises (greenstalk asserts on a
#: truncated reply; a greenstalk.Error here answers another command).
_BROKEN = (greenstalk.Error, OSError, AssertionError, ValueError, EOFError)


class Connection:
    """One greenstalk client (bodies as bytes) behind one lock."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        generation: int,
        connect_timeout: float,
        io_timeout: float,
        poll_interval: float,
        mask: Callable[[str], str],
    ) -> None:
        self.generation = generation
        self.address = f"{host}:{port}"
        self._mask = mask
        #: Seconds between looks while a wait cannot be left to beanstalkd.
        self.poll_interval = poll_interval
        self._lock = threading.Lock()
        #: Threads waiting for the lock with a short command (touch): a
        #: waiting reserve lets them go first.
        self.waiting = 0
        #: Why the connection is unusable, once it is.
        self.lost: str | None = None
        #: Jobs reserved here and not yet deleted, released or buried.
        self.held: set[int] = set()
        #: When the last command started (time.monotonic).
        self.last_used = time.monotonic()
        self._using = greenstalk.DEFAULT_TUBE
        self._watching = {greenstalk.DEFAULT_TUBE}
        #: The tubes of the last ``watch_only``, as given.
        self._watched: Sequence[str] = (greenstalk.DEFAULT_TUBE,)
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
        except OSError as error:
            raise ConnectionLost(
                mask(f"cannot connect to beanstalkd at {self.address}: {_describe(error)}")
            ) from None
        # A reply may take a reserve slice plus the I/O timeout; past that the
        # network is silent and the connection is given up. The kernel keeps
        # that time (SO_RCVTIMEO): a Python socket timeout would add a poll()
        # to every read and write, a quarter of a put's cost on loopback.
        self.reply_timeout = io_timeout + RESERVE_SLICE
        try:
            sock.settimeout(None)
            timeval = _timeval(self.reply_timeout)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            self.client: greenstalk.Client[bytes] = greenstalk.Client(sock, encoding=None)
        except OSError as error:
            sock.close()
            raise ConnectionLost(
                mask(f"cannot talk to beanstalkd at {self.address}: {_describe(error)}")
            ) from None
        self._sock = sock
        with self.command("stats"):
            stats = self.client.stats()
        #: The server's own limit on a job's size, in bytes.
        self.max_job_size = int(stats["max-job-size"])
        #: A random id beanstalkd draws when it starts: a new one means a
        #: restarted server, where old job ids name other jobs (or none).
        self.server_id = str(stats["id"])
        self.version = str(stats["version"])

    # -- the lock and the errors ----------------------------------------------

    def command(self, what: str, *, urgent: bool = False) -> _Exchange:
        """Hold the connection for one exchange (``with``); translate what goes wrong.

        beanstalkd's answers (NOT_FOUND, TIMED_OUT, DEADLINE_SOON) pass
        through for the caller; refusals of a job become
        :class:`PublishNotConfirmed`; anything else loses the connection.
        ``urgent``: a short command (touch) that a waiting reserve lets in first.
        """
        return _Exchange(self, what, urgent)

    def fail(self, error: BaseException, what: str, started: float) -> None:
        """Raise what ``error`` (raised by ``what``) means; return if it means itself.

        beanstalkd's answers and courier's own errors pass through; refusals
        of a job become PublishNotConfirmed; anything else loses the
        connection. Called after the lock was released.
        """
        if isinstance(error, (*_ANSWERS, TransportError)):
            return
        if isinstance(error, _REFUSALS):
            raise PublishNotConfirmed(
                f"beanstalkd refused the {what}: {_describe(error)}"
            ) from None
        if not isinstance(error, _BROKEN):
            # Interrupted (KeyboardInterrupt) or a bug: where the conversation
            # stands is unknown, so it ends here; the error goes on as it is.
            self.lose(f"{what} interrupted by {type(error).__name__}")
            return
        # A reply that never came looks like an end of file (SO_RCVTIMEO).
        waited = time.monotonic() - started
        reason = (
            f"timed out: no answer to {what} within {waited:.0f}s"
            if waited >= self.reply_timeout - 0.1
            else f"{what}: {_describe(error)}"
        )
        reason = self._mask(f"{reason} ({self.address})")
        self.lose(reason)
        raise ConnectionLost(f"the connection to beanstalkd was lost ({reason})") from None

    def closed_while_idle(self, idle: float) -> bool:
        """Whether, unused for ``idle`` seconds, the connection was closed meanwhile.

        beanstalkd never speaks unasked, so an idle socket with something to
        read has been closed (a server restart, a network device that drops
        idle connections): better found out now, with one non-blocking peek,
        than by a put whose answer never comes.
        """
        if time.monotonic() - self.last_used < idle or not _DONTWAIT:
            return False
        with self._lock:  # no command in flight, so no answer on its way
            try:
                self._sock.recv(1, socket.MSG_PEEK | _DONTWAIT)
            except BlockingIOError:
                return False
            except OSError:
                pass
            self.lose("closed by the server or the network while idle")
            return True

    def lose(self, reason: str) -> None:
        """Give the connection up now; beanstalkd returns its jobs when the socket closes."""
        if self.lost is None:
            self.lost = reason
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError, ValueError):
            self.client.close()

    def close(self) -> None:
        self.lose("closed")

    # -- tubes ---------------------------------------------------------------

    def _use(self, tube: str) -> None:
        if self._using != tube:
            self.client.use(tube)
            self._using = tube

    # -- producing -------------------------------------------------------------

    def put(self, tube: str, body: bytes, priority: int, delay: int, ttr: int) -> int:
        """Put one job; its id once beanstalkd answered INSERTED.

        The hot path of every dispatch: what ``command`` does, spelt out.
        """
        lock = self._lock
        lock.acquire()
        started = self.last_used = time.monotonic()
        try:
            if self.lost is not None:
                raise ConnectionLost(f"the connection to beanstalkd was lost ({self.lost})")
            if self._using != tube:
                self.client.use(tube)
                self._using = tube
            job_id = self.client.put(body, priority=priority, delay=delay, ttr=ttr)
        except BaseException as error:
            lock.release()
            self.fail(error, "put", started)
            raise
        lock.release()
        return job_id

    # -- consuming -----------------------------------------------------------

    def reserve(
        self, tubes: Sequence[str], most: int, timeout: float, *, count: bool
    ) -> list[Reserved]:
        """Up to ``most`` jobs, the first tube listed drained first; see :mod:`.reserving`."""
        return reserving.reserve(self, tubes, most, timeout, count=count)

    def watch_only(self, tubes: Sequence[str]) -> None:
        """Watch exactly ``tubes`` (call with the connection held)."""
        if tubes == self._watched:
            return  # the common case: the same tubes as last time
        wanted = set(tubes)
        for tube in tubes:  # watch first: the last watched tube cannot be ignored
            if tube not in self._watching:
                self.client.watch(tube)
                self._watching.add(tube)
        for tube in sorted(self._watching - wanted):
            self.client.ignore(tube)
            self._watching.discard(tube)
        self._watched = tuple(tubes)

    def delete(self, job_ids: Sequence[int]) -> list[tuple[int, bool]]:
        """Delete jobs; those beanstalkd did not find, each with whether it was held here.

        A job this connection held and cannot delete lapsed (its TTR ran
        out). beanstalkd also deletes a ready, delayed or buried job for any
        connection, so a job given back when an older connection died is
        deleted if nobody took it since.
        """
        missing = []
        with self.command("delete"):
            client = self.client
            held = self.held
            for job_id in job_ids:
                try:
                    client.delete(job_id)
                except greenstalk.NotFoundError:
                    missing.append((job_id, job_id in held))
                held.discard(job_id)
        return missing

    def touch(self, job_id: int) -> bool | None:
        """Restart a held job's TTR: True; False if it lapsed; None if no longer held here."""
        with self.command("touch", urgent=True):
            if job_id not in self.held:
                return None
            try:
                self.client.touch(greenstalk.Job(job_id, b""))
            except greenstalk.NotFoundError:
                self.held.discard(job_id)
                return False
            return True

    def release(self, job_id: int) -> bool:
        """Back to ready at once, at its own priority; False if no longer reserved here."""
        with self.command("release"):
            self.held.discard(job_id)
            try:
                priority = int(self.client.stats_job(job_id)["pri"])
                self.client.release(greenstalk.Job(job_id, b""), priority=priority, delay=0)
            except greenstalk.NotFoundError:
                return False
            return True

    def bury(self, job_id: int) -> bool:
        """Bury a held job at its own priority; False if no longer reserved here."""
        with self.command("bury"):
            self.held.discard(job_id)
            try:
                priority = int(self.client.stats_job(job_id)["pri"])
                self.client.bury(greenstalk.Job(job_id, b""), priority=priority)
            except greenstalk.NotFoundError:
                return False
            return True

    # -- looking around ----------------------------------------------------------

    def stats_job(self, job_id: int) -> dict[str, Any] | None:
        with self.command("stats-job"):
            try:
                return dict(self.client.stats_job(job_id))
            except greenstalk.NotFoundError:
                return None

    def stats_tube(self, tube: str) -> dict[str, Any] | None:
        """A tube's counts; None for a tube beanstalkd does not have (nothing in it)."""
        with self.command("stats-tube"):
            try:
                return dict(self.client.stats_tube(tube))
            except greenstalk.NotFoundError:
                return None

    def stats(self) -> dict[str, Any]:
        with self.command("stats"):
            return dict(self.client.stats())

    def tubes(self) -> list[str]:
        with self.command("list-tubes"):
            return self.client.tubes()

    def peek(self, job_id: int) -> bytes | None:
        with self.command("peek"):
            try:
                return self.client.peek(job_id).body
            except greenstalk.NotFoundError:
                return None

    def peek_first(self, tube: str, state: str) -> tuple[int, bytes] | None:
        """The first job of ``tube`` in ``state`` (ready, delayed or buried), or None."""
        with self.command(f"peek-{state}"):
            self._use(tube)
            peek = {
                "ready": self.client.peek_ready,
                "delayed": self.client.peek_delayed,
                "buried": self.client.peek_buried,
            }[state]
            try:
                job = peek()
            except greenstalk.NotFoundError:
                return None
            return job.id, job.body

    def kick_job(self, job_id: int) -> bool:
        """``kick-job``: a buried (or delayed) job to ready; False if there is none."""
        with self.command("kick-job"):
            try:
                self.client.kick_job(job_id)
            except greenstalk.NotFoundError:
                return False
            return True

    def delete_ready(self, tube: str) -> int:
        """Reserve and delete every ready job of ``tube`` (no peek: see subscriptions)."""
        deleted = 0
        with self.command("reserve"):
            self.watch_only((tube,))
            while True:
                try:
                    job = self.client.reserve(0)
                except (greenstalk.TimedOutError, greenstalk.DeadlineSoonError):
                    return deleted
                self.client.delete(job)
                deleted += 1

    def delete_any(self, job_id: int) -> bool:
        """Delete a job that is not reserved (ready, delayed, buried); False if not found."""
        return not self.delete([job_id])


class _Exchange:
    """One command's hold on the connection: the lock, and errors translated on the way out."""

    __slots__ = ("connection", "started", "urgent", "what")

    def __init__(self, connection: Connection, what: str, urgent: bool) -> None:
        self.connection = connection
        self.what = what
        self.urgent = urgent
        self.started = 0.0

    def __enter__(self) -> None:
        connection = self.connection
        if self.urgent:
            connection.waiting += 1
            try:
                connection._lock.acquire()
            finally:
                connection.waiting -= 1
        else:
            connection._lock.acquire()
        if connection.lost is not None:
            connection._lock.release()
            raise ConnectionLost(f"the connection to beanstalkd was lost ({connection.lost})")
        self.started = connection.last_used = time.monotonic()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any
    ) -> None:
        self.connection._lock.release()
        if error is not None:
            self.connection.fail(error, self.what, self.started)


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


def _describe(error: BaseException) -> str:
    """An exception as text without greenstalk's bare argument lists."""
    text = str(error)
    name = type(error).__name__
    if not text or text in ("[]", "()"):
        return name
    return f"{name}: {text}"
