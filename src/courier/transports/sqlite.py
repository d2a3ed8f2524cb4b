"""``sqlite://``: a durable queue in one SQLite file, courier's default.

It is what courier uses when nothing else is configured, and where failed
and undecodable messages are kept, so it keeps a broker's promises: several
worker processes share one file, a killed worker's messages come back when
its lease ends, and nothing is acknowledged twice by mistake.

``sqlite:///relative/path.db?queue=email`` (relative to the working
directory) or ``sqlite:////absolute/path.db``; parent directories are
created. Options, with their defaults: ``queue`` (``default``), ``lease``
(30 s a claim lasts before the message is handed out again; ``renew``
extends it), ``poll_interval`` (0.1 s between looks while ``receive``
waits), ``busy_timeout`` (5 s to wait for another process's write lock),
``synchronous`` (``normal``; ``full`` survives power loss too),
``max_message_size`` (bytes, none), ``wake`` (``true``: a producer wakes
the workers waiting on the file when it commits, see
:mod:`courier.transports.sqlite_wake`; the poll stays as the backstop).
Unknown options are errors.

How it stays correct under concurrency:

- every claim is one short ``BEGIN IMMEDIATE`` transaction holding an
  ``UPDATE ... RETURNING`` that takes up to ``max`` rows. Python's implicit
  deferred transactions would turn a SELECT-then-UPDATE into "database is
  locked"; an immediate one waits for the write lock (``busy_timeout``);
- a claim stamps the rows with a random token; ack, retry, reject, release
  and renew match on it, so a worker whose lease ran out cannot delete or
  extend a message another worker has claimed since;
- one lock serializes the connection, so the worker thread and the
  keepalive thread (``renew``) can share it.

WAL with ``synchronous=NORMAL`` commits without an fsync: a killed process
loses nothing, but an OS crash or power cut may roll back the last
transactions (the file stays consistent). Use ``synchronous=full`` where
that matters more than throughput.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from courier.errors import (
    ConfigurationError,
    MessageDecodingFailed,
    MessageTooLarge,
    PublishNotConfirmed,
    ValidationFailed,
)
from courier.transports import sqlite_schema as sql
from courier.transports import sqlite_wake
from courier.transports.base import (
    KEPT_HEADER,
    Capabilities,
    QueueStats,
    Received,
    Transport,
    Unacked,
    subscription_queue,
)
from courier.transports.dsn import Dsn, TransportOptions
from courier.transports.sqlite_connection import SqliteConnection, immediate

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from courier.envelope import Envelope
    from courier.serializer import Serializer

__all__ = ["SqliteOptions", "SqliteTransport"]

logger = logging.getLogger("courier.transports.sqlite")

#: A claimed row: (queue, (id, priority, ord, body, headers, deliveries)).
_Claimed = tuple[str, tuple[int, int, float, Any, Any, int]]


class SqliteOptions(TransportOptions):
    """The DSN options of ``sqlite://``; see the module docstring."""

    queue: str = "default"
    lease: float = Field(30.0, gt=0)
    poll_interval: float = Field(0.1, gt=0)
    busy_timeout: float = Field(5.0, ge=0)
    synchronous: Literal["normal", "full", "extra"] = "normal"
    max_message_size: int | None = Field(None, gt=0)
    wake: bool = True


def _token() -> int:
    """A claim's token: random, so no other claim (in any process) shares it."""
    return int.from_bytes(os.urandom(8), "big") >> 1


def database_path(dsn: Dsn) -> str:
    """The file a ``sqlite://`` DSN names, made absolute against the working directory."""
    path = dsn.path[1:] if dsn.path.startswith("/") else dsn.path
    if dsn.host or not path:
        raise ConfigurationError(
            "a sqlite DSN names a file: sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    if path == ":memory:":
        return path
    return str(Path(path).expanduser().absolute())


class SqliteTransport(Transport):
    """A queue in a SQLite file; many transports and processes may share one file."""

    capabilities = Capabilities(
        delay=True,
        priority=True,
        lease=True,
        ttr=True,
        native_dead_letter=True,
        delivery_count=True,
        listable=True,
        durable=True,
        unacked_on_reconnect=Unacked.KEPT,
    )

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str = "sqlite",
        queue: str = "default",
        serializer: Serializer,
        lease: float = 30.0,
        poll_interval: float = 0.1,
        busy_timeout: float = 5.0,
        synchronous: str = "normal",
        max_message_size: int | None = None,
        wake: bool = True,
    ) -> None:
        super().__init__(name=name, queue=queue, serializer=serializer)
        self.path = os.fspath(path)
        self.lease = lease
        self.poll_interval = poll_interval
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous
        if max_message_size is not None:
            self.capabilities = replace(self.capabilities, max_message_size=max_message_size)
        self._db = SqliteConnection(self.path, busy_timeout=busy_timeout, synchronous=synchronous)
        #: Where waiting workers' wake sockets live (None: poll only).
        self.wake_directory = (
            sqlite_wake.wake_directory(self.path)
            if wake and self.path != ":memory:" and sqlite_wake.supported()
            else None
        )
        self._waker = (
            sqlite_wake.Waker(self.wake_directory) if self.wake_directory is not None else None
        )
        self._listener: sqlite_wake.WakeListener | None = None
        self._listen_failed = False

    @classmethod
    def from_dsn(cls, dsn: Dsn, *, name: str, serializer: Serializer) -> SqliteTransport:
        options = dsn.option_model(SqliteOptions)
        return cls(
            database_path(dsn),
            name=name,
            queue=options.queue,
            serializer=serializer,
            lease=options.lease,
            poll_interval=options.poll_interval,
            busy_timeout=options.busy_timeout,
            synchronous=options.synchronous,
            max_message_size=options.max_message_size,
            wake=options.wake,
        )

    def close(self) -> None:
        self._db.close()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if self._waker is not None:
            self._waker.close()

    def _wake(self) -> None:
        """Committed something ready: wake the workers waiting on this file."""
        if self._waker is not None:
            self._waker.wake()

    def _listening(self) -> sqlite_wake.WakeListener | None:
        """This transport's wake socket, bound on the first receive that waits."""
        listener = self._listener
        if listener is None and self.wake_directory is not None and not self._listen_failed:
            try:
                listener = self._listener = sqlite_wake.WakeListener(self.wake_directory)
            except OSError as error:
                self._listen_failed = True
                logger.warning(
                    "cannot listen for wakes in %s (%s): polling every %gs",
                    self.wake_directory,
                    error,
                    self.poll_interval,
                )
        return listener

    def require_existing(self, required: bool = True) -> None:
        """Never create the file (while ``required``): a command that only looks leaves none."""
        self._db.must_exist = required

    # -- sending -----------------------------------------------------------

    def _row(self, envelope: Envelope, queue: str, delay: float) -> tuple[Any, ...]:
        """The INSERT parameters; raises MessageTooLarge before any I/O."""
        body, headers = self.encode(envelope)
        state = sql.DELAYED if delay > 0 else sql.READY
        available_at = time.time() + delay
        headers_text = sql.dump_headers(headers)
        return (
            queue,
            envelope.id,
            body,
            headers_text,
            envelope.priority,
            state,
            available_at,
            envelope.ttr,
        )

    def send(self, envelope: Envelope, queue: str | None = None) -> Envelope:
        row = self._row(envelope, queue or self.queue, envelope.delay)
        with self._db.use("send", PublishNotConfirmed, (envelope.id,)) as connection:
            connection.execute(sql.INSERT, row)
        if row[5] == sql.READY:
            self._wake()
        return envelope

    def send_many(self, envelopes: Sequence[Envelope], queue: str | None = None) -> list[Envelope]:
        """All in one transaction; only an oversized envelope fails alone."""
        name = queue or self.queue
        rows: list[tuple[Any, ...]] = []
        sent: list[Envelope] = []
        too_large: list[str] = []
        last: Exception | None = None
        for envelope in envelopes:
            try:
                rows.append(self._row(envelope, name, envelope.delay))
            except MessageTooLarge as error:
                too_large.append(envelope.id)
                last = error
                continue
            sent.append(envelope)
        if rows:
            ids = [envelope.id for envelope in envelopes]
            with self._db.transaction("send_many", PublishNotConfirmed, ids) as connection:
                connection.executemany(sql.INSERT, rows)
            if any(row[5] == sql.READY for row in rows):
                self._wake()
        if too_large:
            raise PublishNotConfirmed(
                f"{len(too_large)} of {len(envelopes)} messages were not sent: {last}", too_large
            ) from last
        return sent

    def publish(self, envelope: Envelope, topic: str, subscriptions: Sequence[str]) -> None:
        """One row per subscription queue, in one transaction: every copy or none.

        The subscriptions ``setup`` recorded are added to the given ones, so
        a producer that does not import the handlers reaches them all.
        """
        row = self._row(envelope, "", envelope.delay)
        with self._db.transaction("publish", PublishNotConfirmed, (envelope.id,)) as connection:
            recorded = [row[0] for row in connection.execute(sql.SUBSCRIPTIONS, (topic,))]
            names = sorted({*subscriptions, *recorded})
            rows = [(subscription_queue(topic, name), *row[1:]) for name in names]
            connection.executemany(sql.INSERT, rows)
        if row[5] == sql.READY:
            self._wake()

    def subscriptions(self, topic: str) -> list[str]:
        with self._db.use("subscriptions") as connection:
            return [row[0] for row in connection.execute(sql.SUBSCRIPTIONS, (topic,))]

    # -- receiving -----------------------------------------------------------

    def receive(
        self, queues: Sequence[str] | None = None, *, max: int = 1, timeout: float = 0.0
    ) -> list[Received]:
        """Claim up to ``max`` rows, waiting up to ``timeout`` for the first.

        A wait ends when a producer's wake arrives (see
        :mod:`courier.transports.sqlite_wake`) or after ``poll_interval``,
        whichever comes first, and then claims again. The first queue
        listed is drained first; within a queue, the most urgent priority,
        then the longest available.
        """
        if max < 1:
            return []
        names = queues or (self.queue,)
        listener = self._listening() if timeout > 0 else None
        deadline = time.monotonic() + timeout
        while True:
            if listener is not None:
                # Before the claim: a wake sent after it is for a later commit.
                listener.drain()
            token = _token()
            claimed = self._claim(names, max, token)
            if claimed:
                return self._received(claimed, token)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            if listener is not None:
                listener.wait(min(self.poll_interval, remaining))
            else:
                time.sleep(min(self.poll_interval, remaining))

    def _claim(self, names: Sequence[str], max: int, token: int) -> list[_Claimed]:
        claimed: list[_Claimed] = []
        with self._db.use("receive") as connection:
            # A read first: an idle poll never takes the write lock.
            now = time.time()
            found = [connection.execute(sql.CHECK, (name, now)).fetchone() for name in names]
            if not any(ready or due for ready, due in found):
                return claimed
            with immediate(connection):
                now = time.time()
                for name, (ready, due) in zip(names, found, strict=True):
                    if due:
                        connection.execute(sql.PROMOTE, (name, now))
                    elif not ready:
                        continue
                    rows = connection.execute(
                        sql.CLAIM, (token, now, self.lease, name, max - len(claimed))
                    ).fetchall()
                    # RETURNING comes back in row id order: restore the serving order.
                    rows.sort(key=lambda row: (-row[1], row[2], row[0]))
                    claimed += [(name, row) for row in rows]
                    if len(claimed) >= max:
                        break
        return claimed

    def _received(self, claimed: list[_Claimed], token: int) -> list[Received]:
        result = []
        for queue, (rowid, _, _, body, text, deliveries) in claimed:
            if type(body) is str:  # a foreign producer wrote TEXT
                body = body.encode()
            headers = sql.load_headers(text)
            if headers is None:
                received = Received(self, (rowid, token), queue, deliveries, self.generation)
                received.raw = body
                received.raw_headers = {}
                received.error = MessageDecodingFailed("malformed headers column", body)
            else:
                received = self.decoded(
                    body, headers, (rowid, token), queue, delivery_count=deliveries
                )
            result.append(received)
        return result

    # -- settling ------------------------------------------------------------

    def ack(self, received: Received) -> None:
        with self._db.use("ack") as connection:
            connection.execute(sql.ACK, received.handle)

    def ack_many(self, received: Sequence[Received]) -> None:
        if len(received) <= 1:
            if received:
                self.ack(received[0])
            return
        with self._db.transaction("ack_many") as connection:
            connection.executemany(sql.ACK, [item.handle for item in received])

    def retry(self, received: Received, envelope: Envelope, delay: float) -> None:
        """Rewrite the row in place: new content, due after ``delay``, deliveries reset."""
        row = self._row(envelope, "", delay)
        with self._db.use("retry") as connection:
            changed = connection.execute(sql.RETRY, (*row[1:], *received.handle)).rowcount
        if changed and row[5] == sql.READY:
            self._wake()
        if not changed:
            logger.warning("%r was claimed by another worker before its retry", received)

    def reject(self, received: Received, reason: str) -> None:
        with self._db.use("reject") as connection:
            connection.execute(sql.REJECT, (time.time(), reason, *received.handle))

    def release(self, received: Received) -> None:
        with self._db.use("release") as connection:
            connection.execute(sql.RELEASE, received.handle)
        self._wake()

    def renew(self, received: Received) -> None:
        with self._db.use("renew") as connection:
            changed = connection.execute(
                sql.RENEW, (time.time(), self.lease, *received.handle)
            ).rowcount
            if changed:
                return
            # Not ours any more. Only a claim by someone else is worth a warning:
            # a row that is gone or waiting again was settled (by this worker).
            row = connection.execute(sql.HOLDER, (received.handle[0],)).fetchone()
        if row is not None and row[0] == sql.CLAIMED and row[1] != received.handle[1]:
            logger.warning(
                "the lease on %r ran out and another worker claimed it: it may run twice",
                received,
            )
        else:
            logger.debug("not renewing %r: it was settled meanwhile", received)

    def message_key(self, received: Received) -> str | None:
        """The row id: it stays with the message through every claim."""
        handle = received.handle
        return f"row-{handle[0]}" if isinstance(handle, tuple) else None

    def keepalive_interval(self) -> float:
        """Renew three times per lease, so one late renewal never loses it."""
        return self.lease / 3

    # -- administration --------------------------------------------------------

    def setup(
        self, queues: Sequence[str] = (), topics: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        """Create the tables; record each topic's subscriptions for producers.

        Queues need no declaring: a queue is a column value.
        """
        rows = [(topic, name) for topic, names in (topics or {}).items() for name in names]
        if not rows:
            with self._db.use("setup"):  # connects, creating the schema
                pass
            return
        with self._db.transaction("setup") as connection:
            connection.executemany(sql.SUBSCRIBE, rows)

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """Counts per state; due delayed rows and lapsed leases count as ready."""
        with self._db.use("stats") as connection:
            return [sql.queue_stats(connection, name) for name in queues or [self.queue]]

    def queues(self) -> list[str]:
        """Every queue holding a row, and every subscription queue ``setup`` recorded."""
        with self._db.use("queues") as connection:
            return [row[0] for row in connection.execute(sql.QUEUES)]

    # -- Listable ----------------------------------------------------------

    def _envelope(self, body: Any, text: Any) -> Envelope | None:
        headers = sql.load_headers(text)
        if headers is None:
            return None
        try:
            return self.serializer.decode(body.encode() if type(body) is str else body, headers)
        except (MessageDecodingFailed, ValidationFailed):
            return None

    def list(self, queue: str | None = None, *, limit: int | None = None) -> list[Envelope]:
        """Waiting messages (ready and delayed), oldest first; undecodable rows are skipped.

        Messages a worker holds and dead (rejected) ones are not listed: a
        failure store's messages are simply waiting rows in its queue.
        """
        found: list[Envelope] = []
        if limit is not None and limit <= 0:
            return found
        with (
            self._db.use("list") as connection,
            closing(connection.execute(sql.LIST, (queue or self.queue,))) as cursor,
        ):
            for body, text in cursor:
                envelope = self._envelope(body, text)
                if envelope is not None:
                    found.append(envelope)
                    if len(found) == limit:
                        break
        return found

    def find(self, message_id: str, queue: str | None = None) -> Envelope | None:
        """The oldest waiting message with this envelope id."""
        with self._db.use("find") as connection:
            row = connection.execute(sql.FIND, (queue or self.queue, message_id)).fetchone()
        return None if row is None else self._envelope(row[1], row[2])

    def keep(self, envelope: Envelope, queue: str | None = None) -> int:
        """Replace the waiting record of ``envelope.id``, or add it; see Listable.keep."""
        name = queue or self.queue
        with self._db.transaction("keep", PublishNotConfirmed, (envelope.id,)) as connection:
            row = connection.execute(sql.FIND, (name, envelope.id)).fetchone()
            previous = sql.load_headers(row[2]) if row is not None else None
            count = 1
            if row is not None:
                try:
                    count = int((previous or {}).get(KEPT_HEADER, "1")) + 1
                except ValueError:
                    count = 2
            stored = envelope.with_headers(**{KEPT_HEADER: str(count)})
            fields = self._row(stored, name, stored.delay)
            if row is None:
                connection.execute(sql.INSERT, fields)
            else:
                connection.execute(sql.REPLACE, (fields[2], fields[3], fields[4], row[0]))
        return count

    def remove(self, message_id: str, queue: str | None = None) -> bool:
        """Delete the message ``find`` shows (the oldest waiting one with this id)."""
        with self._db.transaction("remove") as connection:
            row = connection.execute(sql.FIND, (queue or self.queue, message_id)).fetchone()
            if row is None:
                return False
            connection.execute(sql.REMOVE, (row[0],))
        return True

    def __repr__(self) -> str:
        return f"<SqliteTransport {self.name!r} queue={self.queue!r} path={self.path!r}>"
