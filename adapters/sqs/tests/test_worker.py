"""courier's Worker and Bus on SQS: foreign bytes, killed workers, leases, delays, poison.

Real worker processes (``kill_worker.py``) are SIGKILLed or kill
themselves; a ledger file of every message handled counts what was lost
and what came twice.
"""

from __future__ import annotations

import base64
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
from courier.transports.dsn import Dsn
from courier.transports.memory import MemoryTransport
from courier.transports.sqlite import SqliteTransport
from courier.worker import Worker, WorkerOptions

pytestmark = pytest.mark.sqs

SCRIPT = Path(__file__).with_name("kill_worker.py")


class Job(Message):
    message_name: ClassVar[str] = "courier.sqs-test.job"

    n: int


def read_ledger(path: Path) -> list[tuple[int, float]]:
    entries = []
    for line in path.read_text().splitlines():
        n, at = line.split()
        entries.append((int(n), float(at)))
    return entries


def start_worker(ledger: Path, stderr: Any, dsn: str, **environ: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(ledger)],
        env={**os.environ, "COURIER_TEST_WORKER_DSN": dsn, **environ},
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


def producer(janitor: Any, dsn: str) -> Bus:
    bus = Bus(transports={"work": dsn})
    bus.route(Job, "work")
    janitor.transports.append(bus.transport("work"))
    return bus


def job_serializer() -> JsonSerializer:
    registry = MessageRegistry()
    registry.register(Job)
    return JsonSerializer(registry)


def test_raw_bad_bytes_end_in_the_invalid_transport_and_the_worker_goes_on(janitor: Any) -> None:
    queue = janitor.name()
    bus = Bus(
        transports={"work": janitor.dsn(queue), "failed": "memory://", "invalid": "memory://"},
        failure_transport="failed",
        invalid_transport="invalid",
    )
    bus.route(Job, "work")
    janitor.transports.append(bus.transport("work"))
    handled: list[int] = []
    bus.add_handler(lambda job: handled.append(job.n), Job)
    bus.setup()
    job = {"courier-type": Job.message_name}
    binary = base64.b64encode(b"\xff\xfe{\x00").decode()
    bus.dispatch(Job(n=1))
    janitor.send_raw(queue, '{"n": 1', {**job, "courier-id": "truncated"})
    janitor.send_raw(queue, '{"n": 2}', {"courier-type": "os.system", "courier-id": "unknown"})
    janitor.send_raw(queue, '{"n": "two"}', {**job, "courier-id": "invalid"})
    bus.dispatch(Job(n=2))
    janitor.send_raw(queue, binary, {**job, "courier-id": "not-utf8", "courier-encoding": "base64"})
    janitor.send_raw(queue, '{"n": 3}', {"courier-id": "no-type"})
    janitor.send_raw(queue, '{"n": 4}')  # no attributes at all
    janitor.send_raw(queue, "%%%", {"courier-id": "bad-base64", "courier-encoding": "base64"})
    janitor.send_raw(queue, "[1]", {"courier-id": "bad-packed", "courier-encoding": "packed"})
    bus.dispatch(Job(n=3))

    worker = Worker(bus, ["work"], options=WorkerOptions(limit=11, sleep=0.2, time_limit=30))
    worker.run()

    assert sorted(handled) == [1, 2, 3]
    invalid = bus.transport("invalid")
    assert isinstance(invalid, MemoryTransport)
    reasons = {}
    for envelope in invalid.list():
        message = envelope.message
        assert isinstance(message, InvalidMessage)
        assert message.queue == queue
        assert message.transport == "work"
        reasons[message.headers.get("courier-id", "none")] = (message.reason, message.body)
    assert set(reasons) == {
        "truncated",
        "unknown",
        "invalid",
        "not-utf8",
        "no-type",
        "none",
        "bad-base64",
        "bad-packed",
    }
    assert reasons["truncated"][0].startswith("malformed JSON")
    assert reasons["truncated"][1] == b'{"n": 1'
    assert "unknown message type 'os.system'" in reasons["unknown"][0]
    assert reasons["invalid"][0].startswith(f"invalid {Job.message_name}: n")
    assert reasons["not-utf8"][1] == b"\xff\xfe{\x00"
    assert reasons["no-type"][0] == reasons["none"][0] == "no courier-type header"
    assert "not base64" in reasons["bad-base64"][0]
    assert "not a courier envelope" in reasons["bad-packed"][0]
    bus.close()  # acknowledgements were flushed: nothing goes back to the queue
    assert janitor.count(queue) == 0


@pytest.mark.slow
def test_a_worker_killed_while_holding_messages_loses_none(janitor: Any, tmp_path: Path) -> None:
    queue = janitor.name()
    total = 150
    dsn = janitor.dsn(queue, lease="2")
    producer(janitor, dsn).dispatch_many([Job(n=n) for n in range(total)])
    ledger, errors = tmp_path / "ledger", tmp_path / "stderr"
    ledger.touch()

    def handled() -> set[int]:
        return {n for n, _ in read_ledger(ledger)}

    with errors.open("w") as stderr:
        process = start_worker(ledger, stderr, dsn, COURIER_TEST_HANDLE_SECONDS="0.05")
        try:
            # Mid-batch: handled some of the ten it received, holding the rest.
            wait_for(
                lambda: (
                    (len(handled()) >= 20 and 2 <= len(handled()) % 10 <= 7)
                    or process.poll() is not None
                ),
                timeout=30,
            )
            assert process.poll() is None, errors.read_text()
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    held = janitor.sqs.get_queue_attributes(
        QueueUrl=janitor.queue_url(queue), AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]["ApproximateNumberOfMessagesNotVisible"]
    assert int(held) > 0, f"it died holding nothing ({len(handled())} handled)"

    consumer = Bus(transports={"work": dsn, "failed": "memory://"}, failure_transport="failed")
    consumer.route(Job, "work")
    janitor.transports.append(consumer.transport("work"))
    with ledger.open("a", buffering=1) as record:

        def handle(job: Job) -> None:
            record.write(f"{job.n} {time.time()!r}\n")

        consumer.add_handler(handle, Job)
        worker = Worker(consumer, ["work"], options=WorkerOptions(prefetch=10, sleep=0.2))
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            # Until the killed worker's handled-but-unacknowledged ones came again too.
            wait_for(lambda: handled() == set(range(total)) and janitor.count(queue) == 0, 60)
        finally:
            worker.stop()
            thread.join(timeout=10)
    consumer.close()
    counts = Counter(n for n, _ in read_ledger(ledger))
    assert set(counts) == set(range(total))
    # Only what the killed worker held came twice: a batch, and its unsent acks.
    assert sum(count - 1 for count in counts.values()) <= 20
    assert janitor.count(queue) == 0


def test_renew_keeps_a_long_handlers_message_from_other_workers(janitor: Any) -> None:
    queue = janitor.name()
    dsn = janitor.dsn(queue, lease="1")
    producer(janitor, dsn).dispatch_many([Job(n=n) for n in range(6)])
    handled: list[tuple[str, int]] = []
    workers = []
    for name in ("a", "b"):
        bus = Bus(transports={"work": dsn, "failed": "memory://"}, failure_transport="failed")
        bus.route(Job, "work")
        janitor.transports.append(bus.transport("work"))

        def handle(job: Job, name: str = name) -> None:
            handled.append((name, job.n))
            if job.n == 0:
                time.sleep(2.5)  # two and a half leases, renewed every third of one

        bus.add_handler(handle, Job)
        workers.append(Worker(bus, ["work"], options=WorkerOptions(prefetch=1, sleep=0.2)))
    threads = [threading.Thread(target=worker.run) for worker in workers]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: {n for _, n in handled} == set(range(6)), timeout=20)
        time.sleep(3.7)  # past the long handler, and a lease after it
    finally:
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(timeout=10)
    assert Counter(n for _, n in handled)[0] == 1, handled
    assert janitor.count(queue) == 0


@pytest.mark.slow
def test_a_delayed_message_survives_a_worker_restart(janitor: Any, tmp_path: Path) -> None:
    queue = janitor.name()
    dsn = janitor.dsn(queue, lease="2")
    sent_at = time.time()
    producer(janitor, dsn).dispatch(Job(n=7), delay=4)
    ledger, errors = tmp_path / "ledger", tmp_path / "stderr"
    ledger.touch()
    with errors.open("w") as stderr:
        first = start_worker(ledger, stderr, dsn)
        time.sleep(2.0)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        assert read_ledger(ledger) == []
        second = start_worker(ledger, stderr, dsn)
        try:
            wait_for(lambda: read_ledger(ledger) != [], timeout=20)
            time.sleep(1.0)  # nothing comes twice
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=10)
    assert second.returncode == 0, errors.read_text()
    [(n, at)] = read_ledger(ledger)
    assert n == 7
    assert at - sent_at >= 3.9
    assert janitor.count(queue) == 0


@pytest.mark.slow
def test_a_poison_message_ends_in_the_failure_store_while_healthy_ones_flow(
    janitor: Any, tmp_path: Path
) -> None:
    queue = janitor.name()
    dsn = janitor.dsn(queue, lease="1")
    bus = producer(janitor, dsn)
    bus.dispatch_many([Job(n=n) for n in range(6)])
    bus.dispatch(Job(n=999))
    bus.dispatch_many([Job(n=n) for n in range(6, 12)])
    ledger, errors = tmp_path / "ledger", tmp_path / "stderr"
    ledger.touch()
    failed = f"sqlite:///{tmp_path / 'failed.db'}?queue=failed"
    # One message per receive: the core blames the broker's delivery count
    # (until "handling" notes land), so messages received beside the killer
    # would be blamed with it.
    environ = {
        "COURIER_TEST_FAILED_DSN": failed,
        "COURIER_TEST_POISON": "999",
        "COURIER_TEST_MAX_DELIVERIES": "2",
        "COURIER_TEST_PREFETCH": "1",
    }
    store = SqliteTransport.from_dsn(Dsn.parse(failed), name="failed", serializer=job_serializer())

    def finished() -> bool:
        return {n for n, _ in read_ledger(ledger)} == set(range(12)) and bool(store.list())

    deaths = 0
    deadline = time.monotonic() + 60
    try:
        with errors.open("w") as stderr:
            while not finished() and time.monotonic() < deadline:
                process = start_worker(ledger, stderr, dsn, **environ)
                try:
                    wait_for(lambda p=process: p.poll() is not None or finished(), timeout=30)
                finally:
                    if process.poll() is None:
                        process.send_signal(signal.SIGTERM)
                    process.wait(timeout=10)
                if process.returncode != 0:
                    assert process.returncode == 3, errors.read_text()
                    deaths += 1
        handled = Counter(n for n, _ in read_ledger(ledger))
        assert set(handled) == set(range(12))
        assert deaths == 2, errors.read_text()  # max_deliveries=2: the third goes to the store
        [kept] = store.list()
        assert kept.type == Job.message_name
        assert kept.error is not None
        assert kept.error.error_class.endswith("DeliveryLimitExceeded")
    finally:
        store.close()
    assert janitor.count(queue) == 0


def test_a_limited_worker_takes_no_more_than_its_limit(janitor: Any) -> None:
    queue = janitor.name()
    bus = producer(janitor, janitor.dsn(queue))
    handled: list[int] = []
    bus.add_handler(lambda job: handled.append(job.n), Job)
    bus.dispatch_many([Job(n=n) for n in range(12)])
    Worker(bus, ["work"], options=WorkerOptions(limit=2, sleep=0.2)).run()
    assert len(handled) == 2
    fresh = janitor.transport(queue)
    rest: list[Any] = []
    while len(rest) < 10 and (got := fresh.receive(max=10, timeout=1.0)):
        fresh.ack_many(got)
        rest += got
    assert len(rest) == 10
    assert {received.delivery_count for received in rest} == {1}


def test_sigterm_gives_prefetched_messages_back_at_once(janitor: Any, tmp_path: Path) -> None:
    queue = janitor.name()
    dsn = janitor.dsn(queue, lease="60")  # only a release makes them visible again soon
    producer(janitor, dsn).dispatch_many([Job(n=n) for n in range(10)])
    ledger, errors = tmp_path / "ledger", tmp_path / "stderr"
    ledger.touch()
    with errors.open("w") as stderr:
        process = start_worker(ledger, stderr, dsn, COURIER_TEST_HANDLE_SECONDS="0.5")
        try:
            wait_for(lambda: len(read_ledger(ledger)) >= 1, timeout=20)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0, errors.read_text()
        finally:
            process.kill()
    done = {n for n, _ in read_ledger(ledger)}
    assert 1 <= len(done) < 10
    fresh = janitor.transport(queue, job_serializer(), lease="60")
    rest: list[Any] = []
    while len(rest) < 10 - len(done) and (got := fresh.receive(max=10, timeout=1.0)):
        rest += got
    fresh.ack_many(rest)
    assert {r.envelope.message.n for r in rest} == set(range(10)) - done
    assert {r.delivery_count for r in rest} == {2}
