"""Several worker processes on one SQLite file: exactly once, and nothing lost to SIGKILL.

Each worker is a separate Python process (``worker_process.py``) running a
real courier Worker. Every handled job is appended to a per-process ledger
file before its acknowledgement, so lost and duplicated jobs are counted,
not guessed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, ClassVar

import pytest

from courier.envelope import Envelope
from courier.message import Message
from courier.registry import MessageRegistry
from courier.serializer import JsonSerializer
from courier.transports.dsn import Dsn
from courier.transports.sqlite import SqliteTransport

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from courier.transports.base import Received

pytestmark = pytest.mark.slow

SCRIPT = os.path.join(os.path.dirname(__file__), "worker_process.py")


class Job(Message):
    message_name: ClassVar[str] = "tests.sqlite.job"

    n: int


class Processes:
    """Starts worker processes, releases them together, and cleans up after."""

    def __init__(self, tmp: Path, dsn: str) -> None:
        self.tmp = tmp
        self.dsn = dsn
        self.ledger = tmp / "ledger"
        self.ledger.mkdir()
        self.go = tmp / "go"
        self.running: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, mode: str, *args: str, wait: bool = True) -> subprocess.Popen[bytes]:
        name = uuid.uuid4().hex[:8]
        ready = self.tmp / f"ready-{name}"
        out = self.tmp / f"{name}.out"
        with open(out, "wb") as stdout:
            process = subprocess.Popen(
                [
                    sys.executable,
                    SCRIPT,
                    mode,
                    "--dsn",
                    self.dsn,
                    "--ready",
                    str(ready),
                    "--go",
                    str(self.go),
                    "--ledger",
                    str(self.ledger),
                    *args,
                ],
                stdout=stdout,
                stderr=subprocess.STDOUT,
                cwd=self.tmp,
            )
        self.running.append((process, out))
        deadline = time.monotonic() + 30
        while wait and not ready.exists():
            assert process.poll() is None, self.output(process)
            assert time.monotonic() < deadline, "a worker process did not start"
            time.sleep(0.01)
        return process

    def release(self) -> None:
        self.go.touch()

    def output(self, process: subprocess.Popen[bytes]) -> str:
        path = next(out for proc, out in self.running if proc is process)
        return path.read_text(errors="replace")

    def handled(self) -> Counter[int]:
        """How often each job number was handled, over every process's ledger."""
        counts: Counter[int] = Counter()
        for path in self.ledger.iterdir():
            counts.update(int(line) for line in path.read_text().split())
        return counts

    def stop_all(self) -> None:
        for process, _ in self.running:
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "queue.db"


def producer(dsn: str) -> SqliteTransport:
    registry = MessageRegistry()
    registry.register(Job)
    return SqliteTransport.from_dsn(
        Dsn.parse(dsn), name="jobs", serializer=JsonSerializer(registry)
    )


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path, "")
    yield started
    started.stop_all()


def fill(dsn: str, count: int) -> None:
    with producer(dsn) as transport:
        for start in range(0, count, 500):
            transport.send_many([Envelope(Job(n=n)) for n in range(start, min(count, start + 500))])


def test_three_processes_handle_each_of_5000_messages_exactly_once(
    database: Path, processes: Processes
) -> None:
    dsn = processes.dsn = f"sqlite:///{database}?queue=jobs&lease=10&poll_interval=0.01"
    fill(dsn, 5000)
    workers = [processes.start("consume", "--stop-when-empty") for _ in range(3)]
    processes.release()
    for worker in workers:
        assert worker.wait(timeout=90) == 0, processes.output(worker)
        output = processes.output(worker)
        assert "locked" not in output, output
        assert "Traceback" not in output, output
    handled = processes.handled()
    assert set(handled) == set(range(5000)), f"lost: {sorted(set(range(5000)) - set(handled))}"
    duplicates = {n: c for n, c in handled.items() if c > 1}
    assert duplicates == {}
    # All three took part: the claims really did compete.
    assert all(path.stat().st_size > 0 for path in processes.ledger.iterdir())
    assert len(list(processes.ledger.iterdir())) == 3
    with producer(dsn) as transport:
        [stats] = transport.stats()
    assert (stats.ready, stats.in_flight, stats.delayed, stats.dead) == (0, 0, 0, 0)


def test_a_killed_workers_messages_come_back_after_the_lease(
    database: Path, processes: Processes
) -> None:
    lease = 1.5
    dsn = processes.dsn = f"sqlite:///{database}?queue=jobs&lease={lease}&poll_interval=0.02"
    fill(dsn, 20)
    processes.release()
    holder = processes.start("hold", "--count", "20")
    deadline = time.monotonic() + 10
    while "holding 20" not in processes.output(holder):
        assert time.monotonic() < deadline, processes.output(holder)
        time.sleep(0.01)
    claimed_at = time.monotonic()
    holder.send_signal(signal.SIGKILL)
    assert holder.wait(timeout=10) == -signal.SIGKILL

    with producer(dsn) as transport:
        assert transport.stats()[0].in_flight == 20
        early = transport.receive(max=20, timeout=0.3)
        assert early == [], "a killed worker's message came back before its lease ended"
        got: list[Received] = []
        while len(got) < 20 and time.monotonic() < claimed_at + lease + 10:
            got += transport.receive(max=20 - len(got), timeout=1.0)
        waited = time.monotonic() - claimed_at
        assert waited >= lease * 0.9
        assert sorted(r.envelope.message.n for r in got if r.envelope) == list(range(20))  # type: ignore[attr-defined]
        assert {r.delivery_count for r in got} == {2}
        transport.ack_many(got)
        [stats] = transport.stats()
        assert (stats.ready, stats.in_flight) == (0, 0)


def test_sigkill_chaos_loses_nothing_and_duplicates_only_what_was_in_flight(
    database: Path, processes: Processes
) -> None:
    """RELIABILITY.md scenario 1: workers killed at random points and restarted."""
    count, kills = 1000, 4
    dsn = processes.dsn = f"sqlite:///{database}?queue=jobs&lease=1&poll_interval=0.01"
    fill(dsn, count)
    processes.release()
    workers = [processes.start("consume", "--sleep", "0.008") for _ in range(3)]
    rng = random.Random(7)
    for _ in range(kills):
        time.sleep(rng.uniform(0.3, 0.6))
        victim = rng.randrange(len(workers))
        workers[victim].send_signal(signal.SIGKILL)
        workers[victim].wait(timeout=10)
        workers[victim] = processes.start("consume", "--sleep", "0.008")

    deadline = time.monotonic() + 60
    with producer(dsn) as transport:
        while True:
            [stats] = transport.stats()
            if not (stats.ready or stats.in_flight or stats.delayed):
                break
            assert time.monotonic() < deadline, f"still queued: {stats}"
            time.sleep(0.1)
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    for worker in workers:
        assert worker.wait(timeout=30) == 0, processes.output(worker)
        assert "locked" not in processes.output(worker), processes.output(worker)

    handled = processes.handled()
    assert set(handled) == set(range(count)), "a message was lost"
    duplicates = sum(c - 1 for c in handled.values())
    # A kill can repeat at most what the victim held: its prefetch (10) and
    # the acknowledgements it had not flushed yet (ack_batch 50).
    assert duplicates <= kills * (10 + 50), f"{duplicates} duplicates"


def test_a_long_handler_keeps_its_lease_and_runs_once(database: Path, processes: Processes) -> None:
    """RELIABILITY.md scenario 6: renewed from the keepalive thread, never handed out twice."""
    lease = 0.6
    dsn = processes.dsn = f"sqlite:///{database}?queue=jobs&lease={lease}&poll_interval=0.02"
    fill(dsn, 1)
    worker = processes.start("consume", "--sleep", str(lease * 4), "--stop-when-empty")
    processes.release()
    with producer(dsn) as transport:
        deadline = time.monotonic() + 10
        while transport.stats()[0].in_flight != 1:
            assert time.monotonic() < deadline, "the worker never claimed the job"
            time.sleep(0.01)
        started = time.monotonic()
        while time.monotonic() - started < lease * 3:
            stolen = transport.receive(max=1, timeout=0.1)
            assert stolen == [], "a second worker got a message whose lease was being renewed"
    assert worker.wait(timeout=30) == 0, processes.output(worker)
    assert processes.handled() == Counter({0: 1})
