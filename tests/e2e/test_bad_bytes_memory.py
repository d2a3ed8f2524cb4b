"""Bad bytes do not pile up in a worker's memory: 80 bodies of 10 MB, one at a time.

Each body is over the decoder's limit, so it is refused unparsed and kept
(its first 4 MiB) in the invalid-message store. The worker's peak resident
memory after 80 of them must be within 10% of its peak after 10: nothing
holds a refused body once its record is written.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from courier.testing.scenarios import Project, Supervisor, peak_rss_mib

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

BODY = b'{"n": "' + b"x" * (10 * 1024 * 1024) + b'"}'


def feed(database: Path, count: int) -> None:
    headers = json.dumps({"courier-type": "scenario.job", "courier-id": "big"})
    with closing(sqlite3.connect(database, timeout=30)) as connection, connection:
        connection.executemany(
            "INSERT INTO courier_messages (queue, body, headers, available_at) VALUES (?, ?, ?, ?)",
            [("jobs", BODY + str(n).encode(), headers, time.time()) for n in range(count)],
        )


def wait_for_records(project: Project, count: int, supervisor: Supervisor) -> None:
    supervisor.wait_until(lambda: project.stored_count("invalid") >= count, timeout=240)


def test_a_worker_fed_80_oversized_bodies_stays_flat(tmp_path: Path) -> None:
    project = Project(tmp_path, dsn="sqlite:///courier.db?queue=jobs")
    assert project.courier("setup").returncode == 0
    with Supervisor(project, workers=1) as supervisor:
        [worker] = supervisor.processes
        feed(project.database, 10)
        wait_for_records(project, 10, supervisor)
        after_10 = peak_rss_mib(worker.pid)
        for done in range(20, 81, 10):
            feed(project.database, 10)
            wait_for_records(project, done, supervisor)
        after_80 = peak_rss_mib(worker.pid)
        assert supervisor.restarts == 0
    assert after_80 <= after_10 * 1.10, f"peak {after_10:.0f} MiB after 10, {after_80:.0f} after 80"
    assert project.stored_count("invalid") == 80
