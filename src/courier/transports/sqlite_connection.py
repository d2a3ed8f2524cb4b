"""One SQLite connection shared by a transport's threads, and SQLite's quirks.

The worker thread and the keepalive thread (``renew``) use the same
connection, so every use holds one lock (``check_same_thread=False`` only
says the sqlite3 module will not object). The connection runs in
autocommit (``isolation_level=None``): a single statement is its own
transaction, and a multi-statement one starts with ``BEGIN IMMEDIATE``,
which waits for the write lock (``busy_timeout``) before reading anything.
Python's default deferred transactions read first and then ask for the
lock; in WAL mode a reader whose snapshot went stale by then gets
"database is locked" at once, whatever the busy timeout.

Every ``sqlite3.Error`` becomes a :class:`~courier.errors.TransportError`
(or the subclass the caller names), so the worker backs off and carries on.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

from courier.errors import PublishNotConfirmed, TransportError
from courier.transports import sqlite_schema

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

__all__ = ["NoDatabase", "SqliteConnection"]


class NoDatabase(TransportError):
    """A command that only looks found no database file where the configuration points."""

    def __init__(self, path: str) -> None:
        self.path = path
        where = Path(path)
        super().__init__(f"no {where.name} here (looked in {where.parent})")


class SqliteConnection:
    """A lazily opened, locked connection to one database file."""

    def __init__(self, path: str, *, busy_timeout: float, synchronous: str) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.synchronous = synchronous
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._closed = False
        #: Refuse to create the file (commands that only look).
        self.must_exist = False

    def _open(self) -> sqlite3.Connection:
        """Open on first use, so configuring a bus touches no disk."""
        if self._closed:
            raise TransportError(f"the sqlite connection to {self.path} is closed")
        if self.must_exist and self.path != ":memory:" and not Path(self.path).exists():
            raise NoDatabase(self.path)
        if self.path != ":memory:":
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise TransportError(
                    f"cannot create the directory of {self.path}: {error}"
                ) from None
        connection = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            sqlite_schema.configure(
                connection, synchronous=self.synchronous, busy_timeout=self.busy_timeout
            )
            sqlite_schema.create_schema(connection)
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        return connection

    @contextmanager
    def use(
        self, verb: str, error_type: type[TransportError] = TransportError, ids: Sequence[str] = ()
    ) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; SQLite errors become ``error_type``.

        ``ids`` are the envelope ids a failed :class:`PublishNotConfirmed` names.
        """
        with self._lock:
            try:
                yield self._connection or self._open()
            except sqlite3.Error as error:
                message = f"sqlite {verb} on {self.path} failed: {error}"
                if error_type is PublishNotConfirmed:
                    raise PublishNotConfirmed(message, ids) from error
                raise error_type(message) from error

    @contextmanager
    def transaction(
        self, verb: str, error_type: type[TransportError] = TransportError, ids: Sequence[str] = ()
    ) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed, or rolled back on any error."""
        with self.use(verb, error_type, ids) as connection, immediate(connection):
            yield connection

    def close(self) -> None:
        """Close the connection; any later use raises :class:`TransportError`."""
        with self._lock:
            self._closed = True
            if self._connection is not None:
                self._connection.close()
                self._connection = None


@contextmanager
def immediate(connection: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` on a connection the caller already holds."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            with suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
        raise
