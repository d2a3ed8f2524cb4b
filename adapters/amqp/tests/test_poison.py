"""A handler that kills its worker blames nobody else: real `courier consume` processes on RabbitMQ.

300 jobs on one quorum queue, one of them kills its worker (``os._exit``),
two workers under a supervisor that restarts them, with default options
(the DSN's prefetch of 100). RabbitMQ's delivery count rises for every
message a dead worker held; courier counts only the deaths with the
handler running: every healthy job is handled, none is in the failure
store, and the killer is stored once after ``max_deliveries`` deaths.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from courier.testing.scenarios import Project, Supervisor, interrupt_twice

pytestmark = [pytest.mark.amqp, pytest.mark.slow]

KILLER = 150
JOBS = set(range(300))


def test_only_the_killer_reaches_the_failure_store(tmp_path: Path, janitor: Any) -> None:
    queue = janitor.name("poison")
    janitor.queues.update({queue, f"{queue}.dead"})
    dsn = janitor.dsn(queue)
    assert "prefetch" not in dsn  # the default: RabbitMQ sends 100 ahead of each worker
    project = Project(tmp_path, dsn=dsn)
    project.dispatch(sorted(JOBS), kill={KILLER})
    with Supervisor(project, workers=2) as supervisor:
        supervisor.wait_until(
            lambda: set(project.handled()) >= JOBS - {KILLER} and project.stored_count() >= 1
        )
    assert set(project.handled()) == JOBS - {KILLER}
    [record] = project.failed_records()
    assert record["type"] == "scenario.job"
    assert record["error_class"] == "courier.errors.DeliveryLimitExceeded"
    assert "killed the worker 10 times" in str(record["error_message"])
    assert janitor.count(f"{queue}.dead") == 0  # nothing went past RabbitMQ's own limit


def test_ctrl_c_twice_gives_the_message_back_undamaged(tmp_path: Path, janitor: Any) -> None:
    queue = janitor.name("interrupted")
    janitor.queues.update({queue, f"{queue}.dead"})
    project = Project(tmp_path, dsn=janitor.dsn(queue))
    code, output = interrupt_twice(project)
    assert "stopping after the message in hand (Ctrl-C again to stop now)" in output
    assert code == 130, output
    assert project.handled() == {}
    assert project.failed_records() == []
    deadline = time.monotonic() + 10
    while janitor.count(queue) != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert janitor.count(queue) == 1  # requeued by RabbitMQ, not dead-lettered
    assert janitor.count(f"{queue}.dead") == 0
