"""The status store in a SQLite file: by default the one that holds the failure store.

One small table, ``courier_deaths``, beside the queues; handling slots live
in a folder next to the file (``courier.db-handling/``), since SQLite is a
one-host store anyway.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import AbstractContextManager
from pathlib import Path

from courier.errors import TransportError
from courier.status.base import DEATHS_KEPT_FOR, StatusStore
from courier.transports.sqlite_connection import SqliteConnection

__all__ = ["SqliteStatusStore"]

_SCHEMA = """CREATE TABLE IF NOT EXISTS courier_deaths (
    message_id  TEXT PRIMARY KEY,
    deaths      INTEGER NOT NULL,
    last_worker TEXT NOT NULL,
    last_at     REAL NOT NULL
) WITHOUT ROWID"""

_RECORD = (
    "INSERT INTO courier_deaths (message_id, deaths, last_worker, last_at) VALUES (?1, 1, ?2, ?3)"
    " ON CONFLICT (message_id) DO UPDATE SET deaths = deaths + 1, last_worker = ?2, last_at = ?3"
    " RETURNING deaths"
)


class SqliteStatusStore(StatusStore):
    """Deaths in a table of a SQLite database file."""

    def __init__(self, path: str | Path, *, busy_timeout: float = 5.0) -> None:
        self.path = Path(path)
        self._db = SqliteConnection(str(self.path), busy_timeout=busy_timeout, synchronous="normal")
        self._ready = False

    def _use(self, verb: str) -> AbstractContextManager[sqlite3.Connection]:
        return self._db.use(f"status {verb}", TransportError)

    def _schema(self) -> None:
        if not self._ready:
            with self._use("setup") as connection:
                connection.execute(_SCHEMA)
            self._ready = True

    def record_death(self, message_id: str, worker_id: str) -> int:
        self._schema()
        now = time.time()
        with self._db.transaction("status record_death") as connection:
            connection.execute(
                "DELETE FROM courier_deaths WHERE last_at < ?", (now - DEATHS_KEPT_FOR,)
            )
            row = connection.execute(_RECORD, (message_id, worker_id, now)).fetchone()
        return int(row[0])

    def deaths(self, message_id: str) -> int:
        self._schema()
        with self._use("deaths") as connection:
            row = connection.execute(
                "SELECT deaths FROM courier_deaths WHERE message_id = ?", (message_id,)
            ).fetchone()
        return 0 if row is None else int(row[0])

    def has_deaths(self) -> bool:
        self._schema()
        with self._use("has_deaths") as connection:
            row = connection.execute("SELECT EXISTS (SELECT 1 FROM courier_deaths)").fetchone()
        return bool(row[0])

    def forget(self, message_id: str) -> None:
        self._schema()
        with self._use("forget") as connection:
            connection.execute("DELETE FROM courier_deaths WHERE message_id = ?", (message_id,))

    def slot_directory(self) -> Path:
        return self.path.with_name(self.path.name + "-handling")

    def close(self) -> None:
        self._db.close()

    def describe(self) -> str:
        return f"sqlite:///{self.path}"
