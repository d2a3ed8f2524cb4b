"""The tables, indexes and statements of the ``sqlite://`` transport.

Kept apart from the transport so the SQL can be read in one place, and so a
foreign producer (or a benchmark) can see exactly what a row looks like.

One table holds every queue of a file. A row is in one of four states:

====== ========= ==========================================================
state  name      ``available_at`` means
====== ========= ==========================================================
0      ready     when it became available (not used)
1      delayed   when it becomes due
2      claimed   when the lease ends; ``token`` names the claim
3      dead      when it was rejected; ``reason`` says why
====== ========= ==========================================================

Ready rows are served most urgent ``priority`` first, then by ``ord``: when
the row last became available (sent, due, lease lapsed; 0 when released, so
it goes first). It is a column of its own because a claim overwrites
``available_at`` with the lease, and the claim must still return the order.

A foreign producer needs only ``queue``, ``body`` and ``headers`` (a JSON
object of strings); ``message_id`` makes the row findable by envelope id.

Due delayed rows and claimed rows whose lease ran out are *promoted* to
ready inside the claiming transaction. That keeps the claim itself a walk
down a partial index that holds nothing but claimable rows, in the order
they are served: taking ten rows costs the same with a million waiting, and
neither a million delayed rows nor a thousand in flight are ever skipped
over. The hot statements name their index (``INDEXED BY``): the planner has
no statistics on a queue table, and a wrong guess would scan every row.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import TYPE_CHECKING

from pydantic_core import from_json, to_json

from courier.transports.base import QueueStats

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "ACK",
    "CHECK",
    "CLAIM",
    "CLAIMED",
    "DEAD",
    "DELAYED",
    "FIND",
    "HOLDER",
    "INSERT",
    "LIST",
    "PROMOTE",
    "QUEUES",
    "READY",
    "REJECT",
    "RELEASE",
    "REMOVE",
    "RENEW",
    "REPLACE",
    "RETRY",
    "SCHEMA",
    "STATS_OTHER",
    "STATS_READY",
    "SUBSCRIBE",
    "SUBSCRIPTIONS",
    "configure",
    "create_schema",
    "dump_headers",
    "load_headers",
    "queue_stats",
]

logger = logging.getLogger("courier.transports.sqlite")

READY, DELAYED, CLAIMED, DEAD = 0, 1, 2, 3

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS courier_messages (
        id           INTEGER PRIMARY KEY,
        queue        TEXT    NOT NULL,
        message_id   TEXT    NOT NULL DEFAULT '',
        body         BLOB    NOT NULL,
        headers      TEXT    NOT NULL DEFAULT '{}',
        priority     INTEGER NOT NULL DEFAULT 0,
        state        INTEGER NOT NULL DEFAULT 0,
        available_at REAL    NOT NULL DEFAULT (julianday('now') * 86400 - 210866760000),
        ord          REAL    NOT NULL DEFAULT (julianday('now') * 86400 - 210866760000),
        deliveries   INTEGER NOT NULL DEFAULT 0,
        token        INTEGER,
        reason       TEXT,
        lease        REAL
    )""",
    # Claimable rows only, in the order they are served.
    """CREATE INDEX IF NOT EXISTS courier_ready
        ON courier_messages (queue, priority DESC, ord, id) WHERE state = 0""",
    # Everything else: due delayed rows and lapsed leases are found by time;
    # stats count from it without touching the table.
    """CREATE INDEX IF NOT EXISTS courier_waiting
        ON courier_messages (queue, state, available_at) WHERE state <> 0""",
    # Listable: find and remove by envelope id, list by queue.
    """CREATE INDEX IF NOT EXISTS courier_message_id
        ON courier_messages (queue, message_id)""",
    """CREATE TABLE IF NOT EXISTS courier_subscriptions (
        topic        TEXT NOT NULL,
        subscription TEXT NOT NULL,
        PRIMARY KEY (topic, subscription)
    ) WITHOUT ROWID""",
)

INSERT = (
    "INSERT INTO courier_messages (queue, message_id, body, headers, priority, state,"
    " available_at, ord, lease) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?8)"
)

#: Anything ready? Anything due to promote? A read, so an idle poll never
#: takes the write lock, and a busy one skips PROMOTE when nothing is due.
CHECK = (
    "SELECT EXISTS (SELECT 1 FROM courier_messages INDEXED BY courier_ready"
    " WHERE queue = ?1 AND state = 0),"
    " EXISTS (SELECT 1 FROM courier_messages INDEXED BY courier_waiting"
    " WHERE queue = ?1 AND state <> 0 AND state IN (1, 2) AND available_at <= ?2)"
)

#: Due delayed rows and lapsed leases become ready, ordered by when that happened.
PROMOTE = (
    "UPDATE courier_messages INDEXED BY courier_waiting SET state = 0, ord = available_at"
    " WHERE queue = ? AND state <> 0 AND state IN (1, 2) AND available_at <= ?"
)

#: Claim up to ``limit`` ready rows in serving order, in one statement. A
#: row's own ``lease`` (the message's ttr) wins over the transport's.
CLAIM = (
    "UPDATE courier_messages SET state = 2, token = ?1, deliveries = deliveries + 1,"
    " available_at = ?2 + coalesce(lease, ?3) WHERE id IN (SELECT id FROM courier_messages"
    " INDEXED BY courier_ready WHERE queue = ?4 AND state = 0 ORDER BY priority DESC, ord, id"
    " LIMIT ?5) RETURNING id, priority, ord, body, headers, deliveries"
)

#: The claim's holder is done; a re-claimed row (another token) is left alone.
ACK = "DELETE FROM courier_messages WHERE id = ? AND token = ?"

RETRY = (
    "UPDATE courier_messages SET message_id = ?, body = ?, headers = ?, priority = ?,"
    " state = ?, available_at = ?6, ord = ?6, lease = ?7, deliveries = 0, token = NULL"
    " WHERE id = ?8 AND token = ?9"
)
REJECT = (
    "UPDATE courier_messages SET state = 3, available_at = ?, reason = ?, token = NULL"
    " WHERE id = ? AND token = ?"
)
RELEASE = "UPDATE courier_messages SET state = 0, ord = 0, token = NULL WHERE id = ? AND token = ?"
#: A lapsed lease nobody re-claimed yet (promoted, token intact) is taken back.
RENEW = (
    "UPDATE courier_messages SET state = 2, available_at = ?1 + coalesce(lease, ?2)"
    " WHERE id = ?3 AND token = ?4 AND state IN (0, 2)"
)

#: Who holds a row now, when a renewal found it was not this claim's any more.
HOLDER = "SELECT state, token FROM courier_messages WHERE id = ?"

STATS_READY = (
    "SELECT count(*) FROM courier_messages INDEXED BY courier_ready WHERE queue = ? AND state = 0"
)
STATS_OTHER = (
    "SELECT state, available_at <= ?2, count(*) FROM courier_messages INDEXED BY courier_waiting"
    " WHERE queue = ?1 AND state <> 0 GROUP BY 1, 2"
)

#: Listable sees waiting rows (ready and delayed): not in-flight, not dead.
LIST = "SELECT body, headers FROM courier_messages WHERE queue = ? AND state IN (0, 1) ORDER BY id"
FIND = (
    "SELECT id, body, headers FROM courier_messages WHERE queue = ? AND message_id = ?"
    " AND state IN (0, 1) ORDER BY id LIMIT 1"
)
REMOVE = "DELETE FROM courier_messages WHERE id = ?"
#: Listable.keep: the record of an id already waiting is replaced in place.
REPLACE = "UPDATE courier_messages SET body = ?, headers = ?, priority = ? WHERE id = ?"

SUBSCRIPTIONS = "SELECT subscription FROM courier_subscriptions WHERE topic = ? ORDER BY 1"
SUBSCRIBE = "INSERT OR IGNORE INTO courier_subscriptions (topic, subscription) VALUES (?, ?)"

#: Every queue holding a row (any state), and every subscription queue
#: ``setup`` recorded, sorted. The distinct queues are found by jumping from
#: one to the next in ``courier_message_id`` (a skip scan), so a million
#: waiting rows cost a few index lookups per queue, not a walk over them all.
QUEUES = (
    "WITH RECURSIVE queues(name) AS (SELECT min(queue) FROM courier_messages"
    " UNION ALL SELECT (SELECT min(queue) FROM courier_messages WHERE queue > queues.name)"
    " FROM queues WHERE name IS NOT NULL)"
    " SELECT name FROM queues WHERE name IS NOT NULL"
    " UNION SELECT topic || '.' || subscription FROM courier_subscriptions ORDER BY 1"
)

_OBJECTS = (
    "courier_messages",
    "courier_subscriptions",
    "courier_ready",
    "courier_waiting",
    "courier_message_id",
)


def configure(connection: sqlite3.Connection, *, synchronous: str, busy_timeout: float) -> None:
    """Per-connection settings (the busy timeout itself is the connection's ``timeout``).

    Switching a new file to WAL is the one step SQLite does not retry: when
    several processes open a fresh file at once, the losers get SQLITE_BUSY
    at once, whatever the busy timeout. So it is retried here, as long as
    the busy timeout would have waited. Once switched, the file remembers.
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.005)
    if mode not in ("wal", "memory"):
        logger.warning(
            "%s could not use WAL (journal mode %r): writers block readers", connection, mode
        )
    connection.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    # Cap the WAL file left behind after a checkpoint (bytes).
    connection.execute("PRAGMA journal_size_limit = 67108864")


def dump_headers(headers: Mapping[str, str]) -> str:
    """The headers column: a JSON object of strings."""
    return to_json(headers).decode()


def load_headers(text: str | bytes) -> dict[str, str] | None:
    """The headers column as a dict of strings, or None if a foreign row mangled it."""
    try:
        headers = from_json(text)
    except ValueError:
        return None
    if type(headers) is not dict:
        return None
    for value in headers.values():  # a loop: cheaper than all() over a generator
        if type(value) is not str:
            return None
    return headers


def queue_stats(connection: sqlite3.Connection, queue: str) -> QueueStats:
    """Counts by state, from the indexes alone; due delayed rows and lapsed leases are ready."""
    connection.execute("BEGIN")  # both counts from one snapshot
    try:
        ready = connection.execute(STATS_READY, (queue,)).fetchone()[0]
        other = connection.execute(STATS_OTHER, (queue, time.time())).fetchall()
    finally:
        connection.execute("COMMIT")
    in_flight = delayed = dead = 0
    for state, due, count in other:
        if state == DEAD:
            dead += count
        elif due:
            ready += count
        elif state == DELAYED:
            delayed += count
        else:
            in_flight += count
    return QueueStats(queue, ready, in_flight, delayed, dead)


#: Columns added since the first release, for files an older courier made.
_ADDED_COLUMNS = {"lease": "REAL"}


def _columns_present(connection: sqlite3.Connection) -> bool:
    present = {row[1] for row in connection.execute("PRAGMA table_info(courier_messages)")}
    return all(name in present for name in _ADDED_COLUMNS)


def _add_missing_columns(connection: sqlite3.Connection) -> None:
    present = {row[1] for row in connection.execute("PRAGMA table_info(courier_messages)")}
    for name, kind in _ADDED_COLUMNS.items():
        if name not in present:
            connection.execute(f"ALTER TABLE courier_messages ADD COLUMN {name} {kind}")


def create_schema(connection: sqlite3.Connection) -> None:
    """Create the tables and indexes once, safely against other processes doing the same.

    A read first, so opening an existing file never takes the write lock;
    otherwise one ``BEGIN IMMEDIATE`` transaction, in which ``IF NOT EXISTS``
    makes the loser of a race a no-op.
    """
    found = connection.execute(
        "SELECT count(*) FROM sqlite_master WHERE name IN (?, ?, ?, ?, ?)", _OBJECTS
    ).fetchone()[0]
    if found == len(_OBJECTS) and _columns_present(connection):
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        for statement in SCHEMA:
            connection.execute(statement)
        _add_missing_columns(connection)
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
