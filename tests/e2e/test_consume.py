"""``courier consume`` as a user runs it: real processes on one SQLite file.

Every handled message is written to a ledger (one line per handler start
and finish, appended atomically), so lost and duplicated messages are
counted rather than guessed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from courier.testing.waiting import wait_for

pytestmark = pytest.mark.slow

COURIER = str(Path(sys.executable).with_name("courier"))

APP = """
import os, time
from typing import ClassVar
from courier import Bus, Envelope, Message

LEDGER = os.environ["LEDGER"]
SLOW = float(os.environ.get("SLOW", "0"))

class Job(Message):
    message_name: ClassVar[str] = "e2e.job"
    n: int

bus = Bus.from_config()

def record(line: str) -> None:
    fd = os.open(LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\\n").encode())
    finally:
        os.close(fd)

@bus.handler(Job)
def handle(job: Job, envelope: Envelope) -> None:
    record(f"start {os.getpid()} {job.n}")
    if SLOW:
        time.sleep(SLOW)
    record(f"done {os.getpid()} {job.n}")
"""

CONFIG = """
app = "e2eapp:bus"
[transports]
jobs = "sqlite:///{db}?queue=jobs&lease={lease}&poll_interval=0.02"
[routing]
"e2e.job" = "jobs"
"""


class Project:
    def __init__(self, root: Path, lease: float = 30.0) -> None:
        self.root = root
        self.ledger = root / "ledger.txt"
        (root / "e2eapp.py").write_text(APP)
        (root / "courier.toml").write_text(
            textwrap.dedent(CONFIG.format(db=root / "courier.db", lease=lease))
        )
        self.env = {**os.environ, "LEDGER": str(self.ledger), "PYTHONPATH": str(root)}
        self.env.pop("COURIER_CONFIG", None)

    def courier(self, *args: str, slow: float = 0.0, check: bool = True) -> str:
        result = subprocess.run(
            [COURIER, *args],
            cwd=self.root,
            env={**self.env, "SLOW": str(slow)},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check:
            assert result.returncode == 0, result.stderr
        return result.stdout

    def spawn(self, *args: str, slow: float = 0.0) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [COURIER, "consume", "jobs", "--no-progress", *args],
            cwd=self.root,
            env={**self.env, "SLOW": str(slow)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def dispatch(self, count: int) -> None:
        script = textwrap.dedent(
            f"""
            from e2eapp import Job, bus
            bus.dispatch_many([Job(n=n) for n in range({count})])
            bus.close()
            """
        )
        subprocess.run(
            [sys.executable, "-c", script],
            cwd=self.root,
            env=self.env,
            check=True,
            timeout=60,
        )

    def entries(self, kind: str) -> list[tuple[int, int]]:
        if not self.ledger.exists():
            return []
        found = []
        for line in self.ledger.read_text().splitlines():
            what, pid, n = line.split()
            if what == kind:
                found.append((int(pid), int(n)))
        return found

    def done(self) -> Counter[int]:
        return Counter(n for _, n in self.entries("done"))


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


def test_two_workers_handle_every_message_exactly_once(project: Project) -> None:
    project.dispatch(200)
    workers = [project.spawn("--stop-when-empty", "--sleep", "0.5", slow=0.01) for _ in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
    done = project.done()
    assert sorted(done) == list(range(200))
    assert max(done.values()) == 1
    assert len({pid for pid, _ in project.entries("done")}) == 2, "both workers took part"


def test_a_killed_worker_loses_nothing(tmp_path: Path) -> None:
    project = Project(tmp_path, lease=1.0)
    project.dispatch(200)
    victim = project.spawn("--prefetch", "10", slow=0.02)
    survivor = project.spawn("--prefetch", "10", slow=0.02)
    wait_for(lambda: len(project.entries("done")) >= 40, 30)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=10)
    wait_for(lambda: set(project.done()) == set(range(200)), timeout=60)
    survivor.send_signal(signal.SIGTERM)
    _, err = survivor.communicate(timeout=30)
    assert survivor.returncode == 0, err
    done = project.done()
    assert set(done) == set(range(200)), "every message handled at least once"
    duplicates = {n for n, count in done.items() if count > 1}
    held_by_victim = {n for pid, n in project.entries("start") if pid == victim.pid}
    assert duplicates <= held_by_victim, "duplicates only among what the killed worker held"


def test_sigterm_mid_handler_finishes_and_acknowledges(project: Project) -> None:
    project.dispatch(1)
    worker = project.spawn(slow=1.5)
    wait_for(lambda: project.entries("start"), 30)
    worker.send_signal(signal.SIGTERM)
    _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert project.done() == Counter({0: 1}), "the message in hand was finished"
    # Acknowledged: a new worker finds nothing to do.
    project.courier("consume", "jobs", "--stop-when-empty", "--sleep", "0.2", "--no-progress")
    assert project.done() == Counter({0: 1})


def test_limit_stops_after_that_many(project: Project) -> None:
    project.dispatch(20)
    project.courier("consume", "jobs", "--limit", "7", "--no-progress")
    assert sum(project.done().values()) == 7
    project.courier("consume", "jobs", "--stop-when-empty", "--sleep", "0.2", "--no-progress")
    assert sorted(project.done()) == list(range(20))
    assert max(project.done().values()) == 1


def test_time_limit_stops_on_time(project: Project) -> None:
    started = time.monotonic()
    project.courier("consume", "jobs", "--time-limit", "1.5", "--sleep", "0.2", "--no-progress")
    assert 1.4 <= time.monotonic() - started < 15


def test_stop_when_empty_stops_when_drained(project: Project) -> None:
    project.dispatch(30)
    out = project.courier("consume", "jobs", "--stop-when-empty", "--sleep", "0.2")
    assert sorted(project.done()) == list(range(30))
    assert "handled 30" in out
    assert "stopped: empty" in out
