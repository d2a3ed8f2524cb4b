"""``courier consume --processes N`` as an operator runs it: real processes on SQLite.

The project is :class:`courier.testing.scenarios.Project`: a handler that
appends each job's number to a ledger with one unbuffered write, so the
tests count what was handled (and how often) instead of trusting the
pool's own account. Pool lines name the slot and pid, which is how the
tests find the children.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from typing import TYPE_CHECKING, ClassVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from courier import Bus, Message
from courier.pool import Pool, PoolOptions
from courier.testing.scenarios import Project, courier_command

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from pathlib import Path

pytestmark = pytest.mark.slow

STARTED = re.compile(r"slot (\d+) pid (\d+): started as (\S+)")


class Job(Message):
    """The scenario app's job, as a producer that shares only the wire name knows it."""

    message_name: ClassVar[str] = "scenario.job"

    n: int
    sleep: float = 0.0
    fail: bool = False


def dispatch(
    project: Project, numbers: Iterable[int], *, sleep: float = 0.0, fail: bool = False
) -> None:
    """Put jobs on the project's queue from this process (a ``courier dispatch`` costs seconds)."""
    with Bus() as bus:
        bus.add_transport("jobs", f"sqlite:///{project.database}?queue=jobs")
        bus.route(Job, "jobs")
        for n in numbers:
            bus.dispatch(Job(n=n, sleep=sleep, fail=fail))


class RunningPool:
    """One ``courier consume jobs --processes N ...`` process and its output."""

    def __init__(self, project: Project, *args: str) -> None:
        self.project = project
        self.log = project.root / "pool.log"
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                [*courier_command(), "consume", "jobs", *args],
                cwd=project.root,
                env=project.environment(),
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def children(self) -> list[tuple[int, int, str]]:
        """Every child started so far: (slot, pid, worker id), in order."""
        return [
            (int(slot), int(pid), worker) for slot, pid, worker in STARTED.findall(self.output())
        ]

    def wait_until(self, done: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; the pool said:\n{self.output()}")
            if self.process.poll() is not None:
                raise AssertionError(f"the pool exited {self.process.returncode}:\n{self.output()}")
            time.sleep(0.05)

    def consuming(self, count: int) -> bool:
        return self.output().count("courier consuming jobs") >= count

    def stop(self, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(
        tmp_path / "app",
        dsn="sqlite:///courier.db?queue=jobs&poll_interval=0.01",
        settings="[retry]\nmax_retries = 0",
    )


@pytest.fixture
def pools() -> Iterator[list[RunningPool]]:
    started: list[RunningPool] = []
    yield started
    for pool in started:
        pool.kill()


def test_a_killed_child_is_replaced_and_sigterm_stops_the_pool_losing_nothing(
    project: Project, pools: list[RunningPool]
) -> None:
    pool = RunningPool(project, "--processes", "3", "--id", "box")
    pools.append(pool)
    pool.wait_until(lambda: pool.consuming(3))
    first = pool.children()
    assert sorted(worker for _, _, worker in first) == ["box.1", "box.2", "box.3"]
    _, victim, _ = next(child for child in first if child[0] == 2)

    os.kill(victim, signal.SIGKILL)
    pool.wait_until(lambda: len(pool.children()) == 4)
    slot, replacement, worker = pool.children()[-1]
    assert (slot, worker) == (2, "box.2")
    assert replacement != victim
    assert f"slot 2 pid {victim}: killed by SIGKILL, restarting in" in pool.output()

    pool.wait_until(lambda: pool.consuming(4))
    dispatch(project, range(90), sleep=0.05)
    pool.wait_until(lambda: len(project.handled()) >= 30)
    assert pool.stop() == 0

    handled = project.handled()
    assert set(handled.values()) == {1}  # nothing twice
    waiting = project.stored_count("jobs")
    assert len(handled) + waiting == 90  # nothing lost: handled, or still waiting
    output = pool.output()
    assert output.count("stopped: signal") == 3
    assert re.search(r"courier pool\[\d+\]: stopped \(signal\)", output)


def test_a_crash_loop_stops_the_pool_with_exit_7(
    project: Project, pools: list[RunningPool]
) -> None:
    """Every child stops on --failure-limit 1 (exit 3): restarting it forever helps nobody."""
    dispatch(project, range(10), fail=True)
    pool = RunningPool(
        project,
        "--processes",
        "1",
        "--failure-limit",
        "1",
        "--crash-limit",
        "2",
        "--crash-window",
        "60",
    )
    pools.append(pool)
    assert pool.process.wait(60) == 7
    output = pool.output()
    assert "exit 3 (failure limit reached), restarting in 0.5s" in output
    assert "failed 2 times in 60s: a crash loop, stopping the pool" in output
    assert len(pool.children()) == 2  # the children got the option the pool was given


def test_should_stop_ends_the_pool_after_the_message_in_hand(project: Project) -> None:
    """The stop-workers callback, faked by a file: within a second, plus the message in hand."""
    flag = project.root / "stop-workers"
    said: list[str] = []
    runner = Pool(
        [*courier_command(), "consume", "jobs", "--no-progress"],
        PoolOptions(2, "box"),
        env=project.environment(),
        cwd=str(project.root),
        should_stop=flag.exists,
        say=said.append,
    )
    dispatch(project, [1], sleep=1.0)

    def ask_when_the_handler_runs() -> None:
        deadline = time.monotonic() + 30
        while not project.started() and time.monotonic() < deadline:
            time.sleep(0.02)
        flag.touch()
        asked.append(time.monotonic())

    asked: list[float] = []
    asker = threading.Thread(target=ask_when_the_handler_runs)
    asker.start()
    assert runner.run() == 0
    took = time.monotonic() - asked[0]
    asker.join()
    assert took < 1.0 + 1.0 + 2.0  # the check interval, the handler, slack for a busy host
    assert project.handled() == Counter({1: 1})  # finished, not cut short
    # Both stopped; one still starting may go by SIGTERM's default, holding nothing.
    assert sum(bool(re.search(r"slot \d pid \d+: stopped \(", line)) for line in said) == 2
    assert sum("started as" in line for line in said) == 2  # none restarted


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def scrape(port: int) -> dict[str, float]:
    """Each metric's samples summed over their labels (children, types)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name
            if sample.name == "courier_queue_messages":
                key = f"{sample.name}:{sample.labels['state']}"
            totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def test_one_metrics_endpoint_counts_every_child(
    project: Project, pools: list[RunningPool]
) -> None:
    port = free_port()
    pool = RunningPool(project, "--processes", "3", "--metrics-port", str(port))
    pools.append(pool)
    pool.wait_until(lambda: pool.consuming(3))
    before = scrape(port)
    assert before.get("courier_messages_handled_total", 0.0) == 0.0
    assert before["courier_queue_stats_up"] == 1.0

    dispatch(project, range(45), sleep=0.01)
    pool.wait_until(lambda: project.stored_count("jobs") == 0 and len(project.handled()) == 45)
    pool.wait_until(lambda: scrape(port).get("courier_messages_handled_total") == 45.0)
    time.sleep(0.3)
    after = scrape(port)
    assert after["courier_messages_handled_total"] == 45.0  # exactly, across the children
    assert after["courier_message_handling_seconds_count"] == 45.0
    assert after["courier_queue_messages:ready"] == 0.0
    handlers = {pid for _, pid, _ in pool.children()}
    assert len(handlers) == 3
    assert pool.stop() == 0
    assert "metrics on http://127.0.0.1:" in pool.output()
