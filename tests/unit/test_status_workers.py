"""The worker half of every status store: beats, expiry, the stop order, pauses.

One class of tests, run on SQLite, memory and (marked ``redis``) Redis, so
the three stores mean the same thing by each verb.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from courier.errors import ConfigurationError
from courier.status import (
    MemoryStatusStore,
    SqliteStatusStore,
    StatusStore,
    WorkerStatus,
    open_status_store,
    stop_requested_since,
)
from courier.status.registry import check_status_dsn
from courier.transports.sqlite_connection import NoDatabase

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

NOW = 1_800_000_000.0


def status(instance: str = "i1", *, beat: float = NOW, worker: str = "host.1") -> WorkerStatus:
    return WorkerStatus(
        worker_id=worker,
        instance_id=instance,
        host="host",
        pid=1,
        state="idle",
        started_at=NOW - 100,
        last_beat=beat,
        interval=5.0,
        handled=3,
        queues={"jobs": ["jobs"]},
    )


def redis_dsn() -> str:
    url = os.environ.get("COURIER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    return f"{url}?prefix=test-{uuid.uuid4().hex[:8]}:"


@pytest.fixture(params=["sqlite", "memory", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StatusStore]:
    if request.param == "sqlite":
        opened: StatusStore = SqliteStatusStore(tmp_path / "courier.db")
    elif request.param == "memory":
        opened = MemoryStatusStore()
    else:
        pytest.importorskip("courier_redis")
        from courier.testing.services import require_tcp

        require_tcp("Redis", "127.0.0.1", 6379)
        opened = open_status_store(redis_dsn())
    yield opened
    if request.param == "redis":
        from courier_redis.status import RedisStatusStore

        assert isinstance(opened, RedisStatusStore)
        client = opened._link.client
        keys = list(client.scan_iter(match=opened._workers_key.rsplit("status:", 1)[0] + "*"))
        if keys:
            client.delete(*keys)
    opened.close()


class TestWorkerBoard:
    def test_a_beat_is_read_back_and_replaced_by_the_next(self, store: StatusStore) -> None:
        store.beat(status())
        store.beat(replace(status(), handled=7, last_beat=NOW + 5))
        store.beat(status("i2", worker="host.2"))
        rows = store.workers(NOW + 5)
        assert [(row.instance_id, row.handled) for row in rows] == [("i1", 7), ("i2", 3)]
        assert rows[0].queues == {"jobs": ["jobs"]}

    def test_rows_that_stopped_beating_expire(self, store: StatusStore) -> None:
        store.workers_kept_for = 60.0
        store.beat(status("old", beat=NOW - 61))
        store.beat(status("new", beat=NOW - 59))
        assert [row.instance_id for row in store.workers(NOW)] == ["new"]
        assert [row.instance_id for row in store.workers(NOW - 100)] == ["new"]

    def test_the_stop_order_is_the_last_one(self, store: StatusStore) -> None:
        assert store.stop_requested_at() is None
        assert not stop_requested_since(store, NOW)
        store.request_stop(NOW + 1)
        store.request_stop(NOW + 2.5)
        assert store.stop_requested_at() == NOW + 2.5
        assert stop_requested_since(store, NOW)
        assert not stop_requested_since(store, NOW + 3)

    def test_pause_and_resume(self, store: StatusStore) -> None:
        assert store.paused() == frozenset()
        store.pause("jobs")
        store.pause("jobs")
        store.pause("mail")
        assert store.paused() == {"jobs", "mail"}
        store.resume("jobs")
        store.resume("never-paused")
        assert store.paused() == {"mail"}

    def test_deaths_are_counted_and_forgotten(self, store: StatusStore) -> None:
        assert not store.has_deaths()
        assert store.record_death("m1", "w") == 1
        assert store.record_death("m1", "w") == 2
        assert store.deaths("m1") == 2
        assert store.has_deaths()
        store.forget("m1")
        assert store.deaths("m1") == 0


def test_a_dead_worker_is_one_silent_for_three_intervals() -> None:
    row = status()
    assert not row.is_dead(NOW + 15)
    assert row.is_dead(NOW + 15.1)
    assert replace(row, state="stopped").is_dead(NOW)


def test_a_row_from_a_newer_courier_still_reads() -> None:
    text = status().to_json().replace("{", '{"from_the_future":1,', 1)
    assert WorkerStatus.from_json(text) == status()


def test_sqlite_status_store_that_only_looks_creates_no_file(tmp_path: Path) -> None:
    store = SqliteStatusStore(tmp_path / "courier.db")
    store.require_existing()
    with pytest.raises(NoDatabase):
        store.workers(time.time())
    assert not (tmp_path / "courier.db").exists()


def test_unknown_schemes_are_refused_with_what_would_work() -> None:
    with pytest.raises(ConfigurationError, match=r"amqp:// cannot keep worker status; use"):
        check_status_dsn("amqp://localhost")


@pytest.mark.redis
def test_the_redis_password_never_shows(tmp_path: Path) -> None:
    pytest.importorskip("courier_redis")
    store = open_status_store("redis://user:hunter2@127.0.0.1:1/0?prefix=x:&connect_timeout=0.2")
    assert "hunter2" not in store.describe()
    assert "hunter2" not in repr(store)
    assert "hunter2" not in str(store.slot_directory())
    with pytest.raises(Exception, match="status store") as raised:
        store.paused()
    assert "hunter2" not in str(raised.value)
    store.close()
