"""The status store in a SQLite file: by default the one that holds the failure store.

Small tables beside the queues, created on first use: ``courier_deaths``,
``courier_workers`` (one row per worker instance: a few indexed columns and
the rest as JSON, so a new field needs no migration), ``courier_controls``
(the stop order) and ``courier_paused``. Handling slots live in a folder
next to the file (``courier.db-handling/``), since SQLite is a one-host
store anyway.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import AbstractContextManager
from pathlib import Path

from courier.errors import TransportError
from courier.status.base import DEATHS_KEPT_FOR, StatusStore
from courier.status.workers import WorkerStatus
from courier.transports.dsn import Dsn
from courier.transports.sqlite_connection import SqliteConnection

__all__ = ["SqliteStatusStore"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS courier_deaths (
    message_id  TEXT PRIMARY KEY,
    deaths      INTEGER NOT NULL,
    last_worker TEXT NOT NULL,
    last_at     REAL NOT NULL
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS courier_workers (
    instance_id TEXT PRIMARY KEY,
    worker_id   TEXT NOT NULL,
    last_beat   REAL NOT NULL,
    data        TEXT NOT NULL
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS courier_controls (
    name  TEXT PRIMARY KEY,
    value REAL NOT NULL
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS courier_paused (
    transport TEXT PRIMARY KEY,
    since     REAL NOT NULL
) WITHOUT ROWID""",
)

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

    @classmethod
    def from_dsn(cls, dsn: Dsn) -> SqliteStatusStore:
        """``sqlite:///courier.db`` (the entry point of the scheme)."""
        from courier.transports.sqlite import database_path

        return cls(database_path(dsn))

    def _use(self, verb: str) -> AbstractContextManager[sqlite3.Connection]:
        return self._db.use(f"status {verb}", TransportError)

    def _schema(self) -> None:
        if not self._ready:
            with self._use("setup") as connection:
                for statement in _SCHEMA:
                    connection.execute(statement)
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

    def require_existing(self, flag: bool = True) -> None:
        """Refuse to create the file (commands that only look)."""
        self._db.must_exist = flag

    def beat(self, status: WorkerStatus) -> None:
        self._schema()
        with self._use("beat") as connection:
            connection.execute(
                "INSERT OR REPLACE INTO courier_workers (instance_id, worker_id, last_beat, data)"
                " VALUES (?, ?, ?, ?)",
                (status.instance_id, status.worker_id, status.last_beat, status.to_json()),
            )

    def workers(self, now: float) -> list[WorkerStatus]:
        self._schema()
        with self._use("workers") as connection:
            connection.execute(
                "DELETE FROM courier_workers WHERE last_beat < ?", (now - self.workers_kept_for,)
            )
            rows = connection.execute(
                "SELECT data FROM courier_workers ORDER BY worker_id, last_beat"
            ).fetchall()
        return [WorkerStatus.from_json(row[0]) for row in rows]

    def request_stop(self, at: float) -> None:
        self._schema()
        with self._use("request_stop") as connection:
            connection.execute(
                "INSERT OR REPLACE INTO courier_controls (name, value) VALUES ('stop', ?)", (at,)
            )

    def stop_requested_at(self) -> float | None:
        self._schema()
        with self._use("stop_requested_at") as connection:
            row = connection.execute(
                "SELECT value FROM courier_controls WHERE name = 'stop'"
            ).fetchone()
        return None if row is None else float(row[0])

    def pause(self, transport: str) -> None:
        self._schema()
        with self._use("pause") as connection:
            connection.execute(
                "INSERT OR IGNORE INTO courier_paused (transport, since) VALUES (?, ?)",
                (transport, time.time()),
            )

    def resume(self, transport: str) -> None:
        self._schema()
        with self._use("resume") as connection:
            connection.execute("DELETE FROM courier_paused WHERE transport = ?", (transport,))

    def paused(self) -> frozenset[str]:
        self._schema()
        with self._use("paused") as connection:
            rows = connection.execute("SELECT transport FROM courier_paused").fetchall()
        return frozenset(str(row[0]) for row in rows)

    def slot_directory(self) -> Path:
        return self.path.with_name(self.path.name + "-handling")

    def close(self) -> None:
        self._db.close()

    def describe(self) -> str:
        return f"sqlite:///{self.path}"
