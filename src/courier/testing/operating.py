"""Real-process scenarios of operating workers, run on any transport and status store.

Each function takes a :class:`~courier.testing.scenarios.Project` whose
configuration names its status store (SQLite by default, or ``status_store
= "redis://..."``), starts ``courier consume`` processes with a short
heartbeat, and checks what ``courier workers``, ``stop-workers``,
``pause``/``resume`` and ``health`` do to them and say about them. The
SQLite suite (tests/e2e) and the Redis adapter's suite call the same
functions, so the stores are held to one behaviour.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from courier.config import build_bus, load_settings
from courier.testing.scenarios import Project, courier_command
from courier.testing.waiting import wait_for

if TYPE_CHECKING:
    from courier.bus import Bus
    from courier.status.workers import WorkerStatus

__all__ = [
    "HEARTBEAT",
    "configured_bus",
    "health_turns_unhealthy_when_failures_pile_up",
    "pause_keeps_messages_waiting_until_resume",
    "pool_replaces_a_killed_child_counts_in_one_endpoint_and_obeys_stop_workers",
    "start_worker",
    "stop_workers_stops_every_worker_after_its_message",
    "workers_flags_a_stalled_worker_and_health_fails",
    "workers_lists_a_worker_then_shows_it_dead",
]

#: Seconds between beats in these scenarios: dead is three of them.
HEARTBEAT = "0.5"


def start_worker(project: Project, *args: str) -> subprocess.Popen[str]:
    """``courier consume jobs`` with a short heartbeat, its output kept in a pipe."""
    return subprocess.Popen(  # noqa: S603 - our own courier command
        [*courier_command(), "consume", "jobs", "--no-progress", "--heartbeat", HEARTBEAT, *args],
        cwd=project.root,
        env=project.environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@contextmanager
def configured_bus(project: Project) -> Iterator[Bus]:
    """The project's bus from its configuration alone, for the test's side.

    The scenarios wait by reading the status store directly: each ``courier``
    command costs an interpreter start, so the commands run only where
    their output is what is checked.
    """
    settings, _ = load_settings(project.root / "courier.toml")
    bus = build_bus(settings, base=project.root)
    try:
        yield bus
    finally:
        bus.close()


def rows(bus: Bus) -> list[WorkerStatus]:
    store = bus.poison.store
    assert store is not None, "the project has no status store"
    return store.workers(time.time())


def dispatch_jobs(project: Project, jobs: list[dict[str, Any]]) -> None:
    """Dispatch ``Job`` fields one per line, in this order, with one command."""
    lines = "\n".join(json.dumps(job) for job in jobs)
    result = project.courier("dispatch", "scenario.job", "-", input_text=lines)
    assert result.returncode == 0, result.stderr


def workers(project: Project, *args: str) -> list[dict[str, Any]]:
    """``courier workers --json`` rows."""
    result = project.courier("workers", "--json", *args)
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def _ended(process: subprocess.Popen[str], timeout: float = 10.0) -> tuple[int, str]:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"the worker did not stop:\n{output}") from None
    return process.returncode, output


def _kill(*processes: subprocess.Popen[str]) -> None:
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate()


def workers_lists_a_worker_then_shows_it_dead(project: Project) -> None:
    worker = start_worker(project, "--id", "box.1")
    try:
        with configured_bus(project) as bus:
            wait_for(lambda: len(rows(bus)) == 1, 15, "the worker's first beat")
            (row,) = workers(project)
            assert row["verdict"] == "alive", row
            assert (row["worker_id"], row["pid"], row["state"]) == ("box.1", worker.pid, "idle")
            assert row["queues"] == {"jobs": ["jobs"]}
            worker.send_signal(signal.SIGKILL)
            worker.wait(10)
            wait_for(lambda: rows(bus)[0].is_dead(time.time()), 15, "the beats to stop")
        table = project.courier("workers")
        assert "box.1" in table.stdout, table.stdout
        assert "dead (idle)" in table.stdout, table.stdout
    finally:
        _kill(worker)


def workers_flags_a_stalled_worker_and_health_fails(project: Project) -> None:
    """A handler stuck in a long sleep while more jobs are ready: stalled, unhealthy."""
    worker = start_worker(project, "--prefetch", "1")
    try:
        with configured_bus(project) as bus:
            wait_for(lambda: len(rows(bus)) == 1, 15, "the worker's first beat")
            healthy = project.courier("health", "--stalled-after", "1")
            assert healthy.returncode == 0, healthy.stdout + healthy.stderr
            assert healthy.stdout.startswith("healthy: 1 live worker, 0 messages ready")
            dispatch_jobs(project, [{"n": 0, "sleep": 60}, {"n": 1}, {"n": 2}, {"n": 3}])
            wait_for(lambda: rows(bus)[0].state == "handling scenario.job", 15, "the stuck handler")
            time.sleep(1.2)
        table = project.courier("workers", "--stalled-after", "1")
        assert "STALLED handling scenario.job" in table.stdout, table.stdout
        unhealthy = project.courier("health", "--stalled-after", "1")
        assert unhealthy.returncode == 8, unhealthy.stdout + unhealthy.stderr
        assert unhealthy.stdout.startswith("unhealthy: no worker made progress in 1s"), (
            unhealthy.stdout
        )
        assert "jobs/jobs (3 ready)" in unhealthy.stdout
        assert project.started() == {0: 1}
    finally:
        _kill(worker)


def stop_workers_stops_every_worker_after_its_message(project: Project, count: int = 3) -> None:
    """Each worker is in a 1 s handler when the order comes: it finishes it, exits 0."""
    running = [start_worker(project, "--prefetch", "1") for _ in range(count)]
    try:
        with configured_bus(project) as bus:
            wait_for(lambda: len(rows(bus)) == count, 30, "every worker's first beat")
            dispatch_jobs(project, [{"n": n, "sleep": 1.0} for n in range(count * 20)])
            wait_for(lambda: len(project.started()) >= count, 15, "every worker in a handler")
            stop = project.courier("stop-workers")
            assert stop.returncode == 0, stop.stderr
            assert f"asked {count} running workers to stop" in stop.stdout
            results = [_ended(process) for process in running]
            assert [code for code, _ in results] == [0] * count, results
            assert all("stopped: stop_requested" in output for _, output in results), results
            started, handled = project.started(), project.handled()
            assert started == handled, "a message in hand was not finished"
            assert len(handled) < count * 20
            final = rows(bus)
            assert {row.state for row in final} == {"stopped"}
            # From the order to each worker's last beat: one poll, the message in hand.
            ordered_at = bus.poison.store.stop_requested_at()  # type: ignore[union-attr]
            assert ordered_at is not None
            took = max(row.last_beat for row in final) - ordered_at
            assert took < 1.0 + 1.0 + 2.0, f"took {took:.1f}s"
    finally:
        _kill(*running)


def pause_keeps_messages_waiting_until_resume(project: Project) -> None:
    worker = start_worker(project)
    try:
        with configured_bus(project) as bus:
            wait_for(lambda: len(rows(bus)) == 1, 15, "the worker's first beat")
            paused = project.courier("pause", "jobs")
            assert paused.returncode == 0, paused.stderr
            wait_for(lambda: rows(bus)[0].state == "paused", 15, "the paused state")
            dispatch_jobs(project, [{"n": n} for n in range(5)])
            time.sleep(1.0)
            assert project.handled() == {}
            (counts,) = bus.transport("jobs").stats(["jobs"])
            assert counts.ready == 5
            resumed = project.courier("resume", "jobs")
            assert resumed.returncode == 0, resumed.stderr
            wait_for(lambda: len(project.handled()) == 5, 15, "the jobs handled after resume")
            assert worker.poll() is None
    finally:
        _kill(worker)
    unknown = project.courier("pause", "nope")
    assert unknown.returncode == 4, unknown.stderr
    assert "unknown transport 'nope'" in unknown.stderr


def health_turns_unhealthy_when_failures_pile_up(project: Project) -> None:
    """``--max-failed``: healthy below the threshold, 8 above it (needs max_retries = 0)."""
    dispatch_jobs(project, [{"n": 0, "fail": True}, {"n": 1, "fail": True}, {"n": 2}])
    done = project.courier("consume", "jobs", "--stop-when-empty", "--no-progress")
    assert done.returncode == 0, done.stderr
    fine = project.courier("health", "--max-failed", "2", "--since", "10m")
    assert fine.returncode == 0, fine.stdout + fine.stderr
    bad = project.courier("health", "--max-failed", "1", "--since", "10m")
    assert bad.returncode == 8, bad.stdout + bad.stderr
    assert bad.stdout.strip() == "unhealthy: 2 messages failed since 10m (more than 1)"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def _handled_total(port: int) -> float:
    """``courier_messages_handled_total`` summed over children and labels."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "courier_messages_handled_total"
    )


def pool_replaces_a_killed_child_counts_in_one_endpoint_and_obeys_stop_workers(
    project: Project, jobs: int = 30
) -> None:
    """A pool of 3 as an operator sees it: ``courier workers``, the metrics, ``stop-workers``.

    One child is SIGKILLed: the pool starts another under the same worker id,
    and ``courier workers --all`` lists the dead instance and the new one.
    The pool's one metrics endpoint counts exactly the jobs handled, by
    whichever child. ``courier stop-workers`` then ends the whole pool, exit
    0, after the messages in hand, and none of its children is replaced.
    """
    port = _free_port()
    log = project.root / "pool.log"
    with log.open("wb") as output:
        pool = subprocess.Popen(  # noqa: S603 - our own courier command
            [
                *courier_command(),
                "consume",
                "jobs",
                "--processes",
                "3",
                "--id",
                "box",
                "--heartbeat",
                HEARTBEAT,
                "--prefetch",
                "1",
                "--metrics-port",
                str(port),
            ],
            cwd=project.root,
            env=project.environment(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        with configured_bus(project) as bus:
            wait_for(lambda: len(rows(bus)) == 3, 60, "every child's first beat")
            (victim,) = [row.pid for row in rows(bus) if row.worker_id == "box.2"]
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda: len(rows(bus)) == 4, 30, "the replacement's first beat")
            listed = {row["pid"]: row for row in workers(project, "--all")}
            (new,) = [
                row for pid, row in listed.items() if row["worker_id"] == "box.2" and pid != victim
            ]
            assert new["verdict"] == "alive", listed
            assert new["instance_id"] != listed[victim]["instance_id"]
            wait_for(lambda: rows_by_pid(bus)[victim].is_dead(time.time()), 15, "the victim dead")
            alive = sorted(row.worker_id for row in rows(bus) if not row.is_dead(time.time()))
            assert alive == ["box.1", "box.2", "box.3"]

            dispatch_jobs(project, [{"n": n} for n in range(jobs)])
            wait_for(lambda: len(project.handled()) == jobs, 60, "every job handled")
            wait_for(lambda: _handled_total(port) == jobs, 15, "the endpoint to count them all")

            dispatch_jobs(project, [{"n": n, "sleep": 1.0} for n in range(jobs, jobs + 30)])
            wait_for(lambda: len(project.started()) >= jobs + 3, 15, "three handlers running")
            stop = project.courier("stop-workers")
            assert stop.returncode == 0, stop.stderr
            ordered = time.monotonic()
            assert pool.wait(30) == 0, log.read_text()
            assert time.monotonic() - ordered < 1.0 + 1.0 + 3.0, log.read_text()
        said = log.read_text(errors="replace")
        assert len(re.findall(r"started as box\.\d", said)) == 4, said  # none replaced at the end
        assert project.started() == project.handled(), "a message in hand was not finished"
        assert set(project.handled().values()) == {1}
    finally:
        if pool.poll() is None:
            pool.kill()
            pool.wait()


def rows_by_pid(bus: Bus) -> dict[int, WorkerStatus]:
    return {row.pid: row for row in rows(bus)}
