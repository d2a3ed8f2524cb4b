"""Operating workers with the status store on Redis: real ``courier consume`` processes.

The same scenarios as the SQLite suite (:mod:`courier.testing.operating`),
with the jobs on a Redis stream and every worker's beat, the stop order and
the paused transports in Redis keys under a prefix of the test's own.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
import redis

from courier.testing import operating
from courier.testing.scenarios import Project

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
def project(tmp_path: Path, redis_url: str) -> Iterator[Project]:
    prefix = f"test-ops-{uuid.uuid4().hex[:8]}:"
    jobs = f"{redis_url}?queue=jobs&prefix={prefix}&prefetch=1&lease=30"
    status = f"{redis_url}?prefix={prefix}"
    yield Project(
        tmp_path,
        dsn=jobs,
        settings=f'status_store = "{status}"\n[retry]\nmax_retries = 0',
    )
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def test_workers_lists_a_worker_then_shows_it_dead(project: Project) -> None:
    operating.workers_lists_a_worker_then_shows_it_dead(project)


def test_a_stalled_worker_is_flagged_and_health_fails(project: Project) -> None:
    operating.workers_flags_a_stalled_worker_and_health_fails(project)


def test_stop_workers_stops_every_worker_after_its_message(project: Project) -> None:
    operating.stop_workers_stops_every_worker_after_its_message(project)


def test_pause_keeps_messages_waiting_until_resume(project: Project) -> None:
    operating.pause_keeps_messages_waiting_until_resume(project)


def test_the_status_store_is_on_redis(project: Project) -> None:
    shown = project.courier("debug")
    assert shown.returncode == 0, shown.stderr
    assert "status store: redis://" in shown.stdout, shown.stdout


def test_a_pool_is_seen_replaced_counted_and_stopped(project: Project) -> None:
    operating.pool_replaces_a_killed_child_counts_in_one_endpoint_and_obeys_stop_workers(project)
