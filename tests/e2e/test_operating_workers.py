"""Operating workers on SQLite, as users run it: real ``courier consume`` processes.

The scenarios live in :mod:`courier.testing.operating`; the Redis adapter
runs the same ones with its status store on Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from courier.testing import operating
from courier.testing.scenarios import Project

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow

DSN = "sqlite:///courier.db?queue=jobs&poll_interval=0.02"


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path, dsn=DSN, settings="[retry]\nmax_retries = 0")


def test_workers_lists_a_worker_then_shows_it_dead(project: Project) -> None:
    operating.workers_lists_a_worker_then_shows_it_dead(project)


def test_a_stalled_worker_is_flagged_and_health_fails(project: Project) -> None:
    operating.workers_flags_a_stalled_worker_and_health_fails(project)


def test_stop_workers_stops_every_worker_after_its_message(project: Project) -> None:
    operating.stop_workers_stops_every_worker_after_its_message(project)


def test_pause_keeps_messages_waiting_until_resume(project: Project) -> None:
    operating.pause_keeps_messages_waiting_until_resume(project)


def test_health_turns_unhealthy_when_failures_pile_up(project: Project) -> None:
    operating.health_turns_unhealthy_when_failures_pile_up(project)


def test_read_only_commands_create_no_database(project: Project) -> None:
    listed = project.courier("workers")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "no workers have reported to the status store"
    assert not project.database.exists()


def test_a_pool_is_seen_replaced_counted_and_stopped(project: Project) -> None:
    operating.pool_replaces_a_killed_child_counts_in_one_endpoint_and_obeys_stop_workers(project)
