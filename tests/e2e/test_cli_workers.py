"""``courier workers`` and ``courier health`` judging rows written straight to the store.

In-process and fast: the rows a heartbeat would write are written by the
test, so every verdict (alive, stalled, dead) is reached without waiting.
The real-process scenarios are in test_operating_workers.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
import pytest

from courier.cli.health import parse_since
from courier.status import WorkerStatus


def row(instance: str, now: float, **fields: Any) -> WorkerStatus:
    values: dict[str, Any] = {
        "worker_id": f"box.{instance}",
        "instance_id": instance,
        "host": "box",
        "pid": 1,
        "state": "idle",
        "started_at": now - 600,
        "last_beat": now - 1,
        "interval": 5.0,
        "queues": {"jobs": ["jobs"]},
        "last_progress_at": now - 2,
    }
    values.update(fields)
    return WorkerStatus(**values)


def beat(workspace: Any, *statuses: WorkerStatus) -> Any:
    bus = workspace.bus()
    store = bus.poison.store
    for status in statuses:
        store.beat(status)
    return bus


def test_alive_stalled_and_dead_workers(workspace: Any) -> None:
    now = time.time()
    bus = beat(
        workspace,
        row("a1", now),
        row("b2", now, state="handling email.send", state_since=now - 300, last_progress_at=0),
        row("c3", now, last_beat=now - 60),
        row("d4", now, last_beat=now - 3000),
    )
    bus.dispatch(workspace.app.SendEmail(to="waiting@example.com"))
    listed = workspace.courier("workers", "--json")
    assert listed.exit_code == 0, listed.output
    verdicts = {item["instance_id"]: item["verdict"] for item in json.loads(listed.stdout)}
    assert verdicts == {"a1": "alive", "b2": "stalled", "c3": "dead"}
    everything = workspace.courier("workers", "--json", "--all")
    assert len(json.loads(everything.stdout)) == 4
    table = workspace.courier("workers").stdout
    assert "STALLED handling email.send 5m" in table
    assert "dead (idle)" in table
    relaxed = workspace.courier("workers", "--json", "--stalled-after", "20m")
    assert "stalled" not in {item["verdict"] for item in json.loads(relaxed.stdout)}


def test_a_quiet_worker_on_an_empty_queue_is_not_stalled(workspace: Any) -> None:
    now = time.time()
    beat(workspace, row("a1", now, last_progress_at=0))
    listed = workspace.courier("workers", "--json")
    assert [item["verdict"] for item in json.loads(listed.stdout)] == ["alive"]


def test_health_without_any_worker_while_messages_wait(workspace: Any) -> None:
    bus = workspace.bus()
    fine = workspace.courier("health")
    assert fine.exit_code == 0, fine.output
    assert fine.stdout.strip() == "healthy: 0 live workers, 0 messages ready"
    bus.dispatch(workspace.app.SendEmail(to="a@example.com"))
    bus.dispatch(workspace.app.SendEmail(to="b@example.com"))
    sick = workspace.courier("health")
    assert sick.exit_code == 8, sick.output
    assert sick.stdout.strip() == (
        "unhealthy: no worker made progress in 60s (0 live workers) "
        "while messages wait: jobs/jobs (2 ready)"
    )


def test_a_paused_transport_is_neither_stalled_nor_unhealthy(workspace: Any) -> None:
    now = time.time()
    bus = beat(workspace, row("a1", now, last_progress_at=0))
    bus.dispatch(workspace.app.SendEmail(to="a@example.com"))
    assert workspace.courier("pause", "jobs").exit_code == 0
    assert workspace.courier("health").exit_code == 0
    listed = workspace.courier("workers", "--json")
    assert [item["verdict"] for item in json.loads(listed.stdout)] == ["alive"]
    assert workspace.courier("resume", "jobs").exit_code == 0
    assert workspace.courier("health").exit_code == 8


def test_stop_workers_writes_the_order(workspace: Any) -> None:
    bus = workspace.bus()
    before = time.time()
    done = workspace.courier("stop-workers")
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == "asked 0 running workers to stop after the message in hand"
    stopped_at = bus.poison.store.stop_requested_at()
    assert stopped_at is not None
    assert stopped_at >= before


def test_since_is_a_duration_ago_or_an_iso_time() -> None:
    assert parse_since("10m", 1_000.0) == 400.0
    assert parse_since("2026-01-01T00:00:00Z", 0) == 1_767_225_600.0
    assert parse_since("2026-01-01T00:00:00", 0) == 1_767_225_600.0
    with pytest.raises(click.BadParameter, match="neither a duration"):
        parse_since("yesterday", 0)
