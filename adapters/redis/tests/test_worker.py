"""courier's Worker and Bus on Redis: foreign bytes, SIGKILL, a poison message, restarts.

The worker processes are real (``kill_worker.py``), each handled job is
written to a ledger file, so lost and duplicated messages are counted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pytest

from courier import Bus, Message
from courier.dead_letters import InvalidMessage
from courier.registry import MessageRegistry
from courier.serializer import JsonSerializer
from courier.testing.waiting import wait_for
from courier.worker import Worker, WorkerOptions
from courier_redis import RedisTransport

pytestmark = pytest.mark.redis

SCRIPT = Path(__file__).with_name("kill_worker.py")


class Job(Message):
    message_name: ClassVar[str] = "courier.redis-test.job"

    n: int


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.touch()

    def handled(self) -> list[int]:
        return [int(line) for line in self.path.read_text().split("\n") if line.isdigit()]

    def starts(self, n: int) -> int:
        return self.path.read_text().split("\n").count(f"start {n}")


def spawn(ledger: Ledger, errors: Path, **environ: str) -> subprocess.Popen[bytes]:
    with errors.open("a") as stderr:
        return subprocess.Popen(
            [sys.executable, str(SCRIPT), str(ledger.path)],
            env={**os.environ, **environ},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


def producer(janitor: Any, queue: str) -> Bus:
    bus = Bus(transports={"work": janitor.dsn(queue)})
    bus.route(Job, "work")
    bus.transport("work").setup()
    return bus


def test_foreign_bytes_end_in_the_invalid_store_while_the_worker_goes_on(janitor: Any) -> None:
    queue, invalid_queue = janitor.name(), janitor.name("invalid")
    bus = Bus(
        transports={
            "work": janitor.dsn(queue),
            "failed": janitor.dsn(janitor.name("failed")),
            "invalid": janitor.dsn(invalid_queue),
        },
        failure_transport="failed",
        invalid_transport="invalid",
    )
    bus.route(Job, "work")
    handled: list[int] = []
    bus.add_handler(lambda job: handled.append(job.n), Job)
    bus.setup()
    worker = Worker(bus, ["work"], options=WorkerOptions(sleep=0.1, time_limit=30))
    thread = threading.Thread(target=worker.run)
    thread.start()
    job = {"courier-type": Job.message_name, "content-type": "application/json"}
    foreign = {
        "malformed": {"body": b'{"n": 1', **job},
        "unknown-type": {"body": b'{"n": 1}', "courier-type": "os.system"},
        "invalid-fields": {"body": b'{"n": "one"}', **job},
        "not-utf8": {"body": b"\xff\xfe\xfd", **job},
        "empty": {"body": b"", **job},
        "no-body": {"payload": b'{"n": 1}', **job},
        "no-type": {"body": b'{"n": 1}'},
        "array": {"body": b"[1, 2]", **job},
    }
    try:
        bus.dispatch(Job(n=1))
        for number, (name, fields) in enumerate(foreign.items()):
            janitor.xadd_raw(queue, {**fields, "courier-id": name})
            if number % 3 == 0:
                bus.dispatch(Job(n=10 + number))
        bus.dispatch(Job(n=99))
        invalid = bus.transport("invalid")
        assert isinstance(invalid, RedisTransport)
        wait_for(lambda: len(invalid.list()) == len(foreign), 15, "the invalid records")
        wait_for(lambda: 99 in handled, 15, "the last good message")
    finally:
        worker.stop()
        thread.join(timeout=10)
    assert handled == [1, 10, 13, 16, 99]
    # A record's id is the id the bytes claimed, then a digest of the entry's id.
    kept = {envelope.id.split(".")[0]: envelope.message for envelope in invalid.list()}
    assert set(kept) == set(foreign)
    reasons = {}
    for name, message in kept.items():
        assert isinstance(message, InvalidMessage)
        assert message.queue == queue
        assert message.transport == "work"
        reasons[name] = message.reason
        fields = foreign[name]
        assert message.body == fields.get("body", b"")
    assert "malformed JSON" in reasons["malformed"]
    assert "unknown message type 'os.system'" in reasons["unknown-type"]
    assert reasons["invalid-fields"].startswith(f"invalid {Job.message_name}: n")
    assert "malformed JSON" in reasons["not-utf8"]
    assert "malformed JSON" in reasons["empty"]
    assert "no 'body' field" in reasons["no-body"]
    assert "no courier-type header" in reasons["no-type"]
    assert "not a JSON object" in reasons["array"]
    assert kept["no-body"].headers["payload"] == '{"n": 1}'
    bus.close()
    assert janitor.raw.xlen(janitor.stream(queue)) == 0


@pytest.mark.slow
def test_a_worker_killed_while_holding_50_messages_loses_none(janitor: Any, tmp_path: Path) -> None:
    queue = janitor.name()
    total = 300
    dsn = janitor.dsn(queue, lease="2")
    bus = producer(janitor, queue)
    bus.dispatch_many([Job(n=n) for n in range(total)])
    bus.close()
    ledger, errors = Ledger(tmp_path / "ledger"), tmp_path / "stderr"
    process = spawn(
        ledger, errors, COURIER_TEST_WORKER_DSN=dsn, COURIER_TEST_PREFETCH="50",
        COURIER_TEST_SLEEP="0.02",
    )  # fmt: skip
    stream = janitor.stream(queue)
    try:
        wait_for(lambda: len(ledger.handled()) >= 20 or process.poll() is not None, 30, "work")
        assert process.poll() is None, errors.read_text()
        wait_for(lambda: janitor.raw.xpending(stream, "courier")["pending"] >= 40, 10, "50 held")
        held = janitor.raw.xpending(stream, "courier")["pending"]
        process.send_signal(signal.SIGKILL)
    finally:
        stop(process)
    assert process.returncode == -signal.SIGKILL
    assert held >= 40
    before = set(ledger.handled())

    consumer = Bus(transports={"work": dsn})
    consumer.route(Job, "work")
    with ledger.path.open("a", buffering=1) as record:

        @consumer.handler(Job)
        def handle(job: Job) -> None:
            record.write(f"{job.n}\n")

        worker = Worker(consumer, ["work"], options=WorkerOptions(prefetch=50, sleep=0.2))
        thread = threading.Thread(target=worker.run)
        started = time.monotonic()
        thread.start()
        try:
            wait_for(lambda: set(ledger.handled()) == set(range(total)), 30, "every message")
        finally:
            worker.stop()
            thread.join(timeout=10)
    consumer.close()
    handled = Counter(ledger.handled())
    assert set(handled) == set(range(total))
    # Only what the killed worker held came twice: its batch and unflushed acks.
    assert sum(count - 1 for count in handled.values()) <= held
    assert time.monotonic() - started >= 1.5, "the held ones waited for the lease"
    assert set(range(total)) - before, "the killed worker left work for the next"
    wait_for(lambda: janitor.raw.xlen(stream) == 0, 5, "an empty stream")


@pytest.mark.slow
def test_a_poison_message_ends_in_the_failure_store_and_the_rest_flow(
    janitor: Any, tmp_path: Path
) -> None:
    queue, failed_queue = janitor.name(), janitor.name("failed")
    total, poison, max_deliveries = 40, 7, 2
    bus = producer(janitor, queue)
    bus.dispatch_many([Job(n=n) for n in range(total)])
    bus.close()
    registry = MessageRegistry()
    registry.register(Job)
    failed = janitor.transport(failed_queue, JsonSerializer(registry))
    environ = {
        "COURIER_TEST_WORKER_DSN": janitor.dsn(queue, lease="1", reclaim_interval="0.2"),
        "COURIER_TEST_FAILED_DSN": janitor.dsn(failed_queue),
        "COURIER_TEST_POISON": str(poison),
        "COURIER_TEST_MAX_DELIVERIES": str(max_deliveries),
    }
    ledger, errors = Ledger(tmp_path / "ledger"), tmp_path / "stderr"
    healthy = set(range(total)) - {poison}
    deaths = 0
    deadline = time.monotonic() + 60
    process = spawn(ledger, errors, **environ)
    try:
        while not (set(ledger.handled()) >= healthy and failed.list()):
            assert time.monotonic() < deadline, f"stuck: {errors.read_text()[-3000:]}"
            if process.poll() is not None:  # the supervisor restarts a dead worker
                assert process.returncode == 3, errors.read_text()[-2000:]
                deaths += 1
                process = spawn(ledger, errors, **environ)
            time.sleep(0.05)
    finally:
        stop(process)
    [record] = failed.list()
    assert record.message == Job(n=poison)
    assert record.error is not None
    assert record.error.short_class == "DeliveryLimitExceeded"
    assert ledger.starts(poison) == max_deliveries == deaths
    assert set(ledger.handled()) == healthy  # batch-mates were not blamed


@pytest.mark.slow
def test_a_delayed_message_survives_a_worker_restart(janitor: Any, tmp_path: Path) -> None:
    queue = janitor.name()
    dsn = janitor.dsn(queue)
    bus = producer(janitor, queue)
    sent_at = time.monotonic()
    bus.dispatch(Job(n=5), delay=2.0)
    bus.close()
    ledger, errors = Ledger(tmp_path / "ledger"), tmp_path / "stderr"
    first = spawn(ledger, errors, COURIER_TEST_WORKER_DSN=dsn)
    time.sleep(1.0)
    first.send_signal(signal.SIGKILL)
    stop(first)
    assert ledger.handled() == []
    second = spawn(ledger, errors, COURIER_TEST_WORKER_DSN=dsn)
    try:
        wait_for(lambda: ledger.handled() == [5], 15, "the delayed message")
        assert time.monotonic() - sent_at >= 1.9
        time.sleep(0.5)
        assert ledger.handled() == [5]
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=10)
    assert second.returncode == 0, errors.read_text()
