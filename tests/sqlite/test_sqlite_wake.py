"""A producer wakes an idle SQLite worker in another process when it commits.

The worker polls every 5 seconds (``poll_interval=5``), so a message handled
well within a second can only have been noticed through its wake socket.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import pytest

from courier import Bus, Message
from courier.transports.sqlite_wake import wake_directory


class Ping(Message):
    """The message wake_worker.py consumes (the same wire name)."""

    message_name: ClassVar[str] = "tests.sqlite.ping"

    n: int


SCRIPT = os.path.join(os.path.dirname(__file__), "wake_worker.py")

pytestmark = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="needs Unix sockets")


def producer(database: Path) -> Bus:
    bus = Bus(transports={"jobs": f"sqlite:///{database}?queue=jobs"})
    bus.route(Ping, "jobs")
    return bus


def wait_for_socket(directory: Path, worker: subprocess.Popen[bytes]) -> None:
    """Until the consumer waits on its socket (bound on its first receive that waits)."""
    deadline = time.monotonic() + 30
    while not (directory.exists() and any(directory.glob("*.sock"))):
        assert worker.poll() is None, "the worker exited before waiting"
        assert time.monotonic() < deadline, "the worker never started waiting"
        time.sleep(0.02)
    time.sleep(0.2)  # inside its wait, past the first claim


def start(mode: str, database: Path, ledger: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, SCRIPT, mode, str(database), str(ledger), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def finish(process: subprocess.Popen[bytes]) -> None:
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, (out, err)


def test_a_receive_in_another_process_is_woken_long_before_its_poll(tmp_path: Path) -> None:
    """The transport's wait: 5 s between polls, so under a second means a wake."""
    database, ledger = tmp_path / "queue.db", tmp_path / "handled"
    bus = producer(database)
    bus.transport("jobs").setup()
    consumer = start("receive", database, ledger)
    try:
        wait_for_socket(wake_directory(str(database)), consumer)
        sent = time.time()
        bus.dispatch(Ping(n=1))
        finish(consumer)
        latency = float(ledger.read_text()) - sent
        assert latency < 1.0, f"received {latency:.3f}s after the dispatch"
    finally:
        if consumer.poll() is None:
            consumer.kill()
            consumer.communicate()
        bus.close()
    # It removed its socket when it closed.
    assert not list(wake_directory(str(database)).glob("*.sock"))


def test_an_idle_worker_in_another_process_starts_each_handler_within_a_fraction_of_its_wait(
    tmp_path: Path,
) -> None:
    """A worker looks round every second at most; woken, it starts each handler far sooner."""
    database, ledger = tmp_path / "queue.db", tmp_path / "handled"
    bus = producer(database)
    bus.transport("jobs").setup()
    count = 5
    worker = start("worker", database, ledger, str(count))
    sent: dict[int, float] = {}
    try:
        wait_for_socket(wake_directory(str(database)), worker)
        for n in range(count):
            time.sleep(0.3)  # idle again, waiting in its receive
            sent[n] = time.time()
            bus.dispatch(Ping(n=n))
        finish(worker)
        started = {
            int(n): float(t)
            for n, t in (line.split() for line in ledger.read_text().split("\n") if line)
        }
        latencies = sorted(started[n] - sent[n] for n in range(count))
        # Without a wake each would wait up to 1 s (0.5 s on average).
        assert latencies[count // 2] < 0.25, latencies
        assert latencies[-1] < 1.0, latencies
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate()
        bus.close()


def test_a_dead_workers_socket_does_not_break_dispatch(tmp_path: Path) -> None:
    database = tmp_path / "queue.db"
    directory = wake_directory(str(database))
    directory.mkdir(parents=True)
    # A killed worker's leftover: a socket file nobody is bound to any more.
    leftover = directory / "12345-deadbeef.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(leftover))
    dead.close()
    (directory / "not-a-socket.txt").write_text("ignored")
    bus = producer(database)
    try:
        bus.dispatch(Ping(n=1))
        bus.dispatch(Ping(n=2))
        assert [stats.ready for stats in bus.transport("jobs").stats()] == [2]
    finally:
        bus.close()
    assert not leftover.exists(), "the producer removes a dead worker's socket"
    assert (directory / "not-a-socket.txt").exists()


def test_a_living_listener_is_woken_and_a_full_buffer_does_not_block(tmp_path: Path) -> None:
    from courier.transports.sqlite_wake import WakeListener, Waker

    directory = tmp_path / "q.db-wake"
    listener = WakeListener(directory)
    waker = Waker(directory)
    try:
        assert not listener.wait(0)
        started = time.monotonic()
        for _ in range(10_000):  # far more than a socket buffer holds
            waker.wake()
        assert time.monotonic() - started < 10
        assert listener.wait(0)
        listener.drain()
        assert not listener.wait(0)
    finally:
        waker.close()
        listener.close()
    assert not listener.path.exists()


def test_wake_false_polls_only(tmp_path: Path) -> None:
    bus = Bus(transports={"jobs": f"sqlite:///{tmp_path / 'q.db'}?queue=jobs&wake=false"})
    try:
        transport = bus.transport("jobs")
        assert transport.receive(timeout=0.05) == []
        assert not wake_directory(str(tmp_path / "q.db")).exists()
    finally:
        bus.close()
