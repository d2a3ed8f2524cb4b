"""The status store on Redis: worker deaths, beats, the stop order and pauses.

For buses whose workers run on several hosts, where a SQLite file cannot
be shared. Every key starts with the DSN's ``prefix`` then ``status:``:

- ``status:workers``, a hash: instance id -> the worker's last beat (JSON).
  Each beat pushes the whole hash's expiry :attr:`workers_kept_for` ahead,
  so it disappears once every worker is gone; a reader deletes the fields
  of single rows that are older than that.
- ``status:deaths``, a hash: message id -> deaths, expiring
  :data:`~courier.status.base.DEATHS_KEPT_FOR` after the last death.
- ``status:stop`` (the stop order's time) and ``status:paused`` (a set).

Each verb touches one key, so the store works on a Redis Cluster as well.
Handling slots are files, and a slot is read by a worker of the same host,
so :meth:`RedisStatusStore.slot_directory` is a local folder named after a
hash of the store's (masked) address: the workers of one host that share a
store share a folder. The password stays in the client: ``describe()``,
``repr()`` and errors show the DSN masked.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from courier.status.base import DEATHS_KEPT_FOR, StatusStore
from courier.status.workers import WorkerStatus
from courier.transports.dsn import Dsn
from courier_redis.connection import Link
from courier_redis.options import RedisOptions

__all__ = ["RedisStatusStore"]


class RedisStatusStore(StatusStore):
    """The whole status store in a few Redis keys under a prefix."""

    def __init__(self, dsn: Dsn) -> None:
        self.dsn = dsn
        options = dsn.option_model(RedisOptions)
        self._link = Link(dsn, options, name="status store", on_lost=lambda: None)
        self._link.name_clients("courier-status")
        base = f"{options.prefix}status:"
        self._workers_key = base + "workers"
        self._deaths_key = base + "deaths"
        self._stop_key = base + "stop"
        self._paused_key = base + "paused"

    @classmethod
    def from_dsn(cls, dsn: Dsn) -> RedisStatusStore:
        """The entry point of the ``redis*`` schemes in ``courier.status_stores``."""
        return cls(dsn)

    # -- deaths ----------------------------------------------------------------

    def record_death(self, message_id: str, worker_id: str) -> int:
        with self._link.errors("record_death"):
            pipe = self._link.pipeline()
            pipe.hincrby(self._deaths_key, message_id, 1)
            pipe.expire(self._deaths_key, int(DEATHS_KEPT_FOR))
            deaths, _ = pipe.execute()
        return int(deaths)

    def deaths(self, message_id: str) -> int:
        with self._link.errors("deaths"):
            found = self._link.call("HGET", self._deaths_key, message_id)
        return 0 if found is None else int(found)

    def has_deaths(self) -> bool:
        with self._link.errors("has_deaths"):
            return bool(self._link.call("EXISTS", self._deaths_key))

    def forget(self, message_id: str) -> None:
        with self._link.errors("forget"):
            self._link.call("HDEL", self._deaths_key, message_id)

    # -- workers -----------------------------------------------------------------

    def beat(self, status: WorkerStatus) -> None:
        with self._link.errors("beat"):
            pipe = self._link.pipeline()
            pipe.hset(self._workers_key, status.instance_id, status.to_json())
            pipe.expire(self._workers_key, max(1, int(self.workers_kept_for)))
            pipe.execute()

    def workers(self, now: float) -> list[WorkerStatus]:
        with self._link.errors("workers"):
            rows = self._link.call("HGETALL", self._workers_key) or {}
        found: list[WorkerStatus] = []
        expired: list[bytes] = []
        items = rows.items() if isinstance(rows, dict) else zip(rows[::2], rows[1::2], strict=True)
        for instance, data in items:
            status = WorkerStatus.from_json(data)
            if now - status.last_beat > self.workers_kept_for:
                expired.append(instance)
            else:
                found.append(status)
        if expired:
            with self._link.errors("workers"):
                self._link.call("HDEL", self._workers_key, *expired)
        return sorted(found, key=lambda s: (s.worker_id, s.last_beat))

    def request_stop(self, at: float) -> None:
        with self._link.errors("request_stop"):
            self._link.call("SET", self._stop_key, repr(at))

    def stop_requested_at(self) -> float | None:
        with self._link.errors("stop_requested_at"):
            found = self._link.call("GET", self._stop_key)
        return None if found is None else float(found)

    def pause(self, transport: str) -> None:
        with self._link.errors("pause"):
            self._link.call("SADD", self._paused_key, transport)

    def resume(self, transport: str) -> None:
        with self._link.errors("resume"):
            self._link.call("SREM", self._paused_key, transport)

    def paused(self) -> frozenset[str]:
        with self._link.errors("paused"):
            members = self._link.call("SMEMBERS", self._paused_key) or ()
        return frozenset(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    # -- the rest ------------------------------------------------------------------

    def slot_directory(self) -> Path:
        where = hashlib.sha256(self.describe().encode()).hexdigest()[:16]
        return Path(tempfile.gettempdir()) / f"courier-{os.getuid()}-handling-{where}"

    def close(self) -> None:
        self._link.close()

    def describe(self) -> str:
        return self.dsn.render()

    def __repr__(self) -> str:
        return f"<RedisStatusStore {self.describe()}>"
