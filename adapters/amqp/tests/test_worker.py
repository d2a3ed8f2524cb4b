"""courier's Worker and Bus on RabbitMQ: bad bytes, and a worker killed mid-batch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pytest

from courier import Bus, Message
from courier.dead_letters import InvalidMessage
from courier.testing.waiting import wait_for
from courier.transports.memory import MemoryTransport
from courier.worker import Worker, WorkerOptions

pytestmark = pytest.mark.amqp


class Job(Message):
    message_name: ClassVar[str] = "courier.amqp-test.job"

    n: int


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

    @bus.handler(Job)
    def handle(job: Job) -> None:
        handled.append(job.n)

    bus.setup()
    job_type = {"courier-type": Job.message_name}
    bus.dispatch(Job(n=1))
    janitor.publish_raw(queue, b'{"n": 1', job_type, message_id="truncated")
    janitor.publish_raw(queue, b'{"n": 2}', {"courier-type": "os.system"}, message_id="unknown")
    bus.dispatch(Job(n=2))
    janitor.publish_raw(
        queue, b'{"n": "two"}', job_type, message_id="invalid", content_type="application/json"
    )
    bus.dispatch(Job(n=3))

    worker = Worker(bus, ["work"], options=WorkerOptions(limit=6, sleep=0.2, time_limit=20))
    worker.run()

    assert handled == [1, 2, 3]
    invalid = bus.transport("invalid")
    assert isinstance(invalid, MemoryTransport)
    # A record's id starts with the id the bytes claimed.
    kept = {envelope.id.split(".")[0]: envelope for envelope in invalid.list()}
    assert set(kept) == {"truncated", "unknown", "invalid"}
    reasons = {}
    for message_id, envelope in kept.items():
        message = envelope.message
        assert isinstance(message, InvalidMessage)
        assert message.queue == queue
        assert message.transport == "work"
        assert "x-delivery-count" not in message.headers
        reasons[message_id] = (message.reason, message.body)
    assert reasons["truncated"][1] == b'{"n": 1'
    assert "malformed JSON" in reasons["truncated"][0]
    assert "unknown message type 'os.system'" in reasons["unknown"][0]
    assert reasons["invalid"][0].startswith(f"invalid {Job.message_name}: n")
    classes = {message_id: envelope.error.error_class for message_id, envelope in kept.items()}  # type: ignore[union-attr]
    assert classes == {
        "truncated": "courier.errors.MessageDecodingFailed",
        "unknown": "courier.errors.MessageDecodingFailed",
        "invalid": "courier.errors.ValidationFailed",
    }
    bus.close()  # acknowledgements were flushed: nothing goes back to the queue
    assert janitor.count(queue) == 0


@pytest.mark.slow
def test_a_worker_killed_while_holding_messages_loses_none(janitor: Any, tmp_path: Path) -> None:
    queue = janitor.name()
    total = 300
    dsn = janitor.dsn(queue, prefetch="50")
    producer = Bus(transports={"work": dsn})
    producer.route(Job, "work")
    janitor.transports.append(producer.transport("work"))
    producer.dispatch_many([Job(n=n) for n in range(total)])

    ledger = tmp_path / "ledger"
    ledger.touch()
    errors = tmp_path / "stderr"

    def lines() -> list[int]:
        return [int(line) for line in ledger.read_text().split()]

    script = Path(__file__).with_name("kill_worker.py")
    with errors.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, str(script), str(ledger)],
            env={**os.environ, "COURIER_TEST_WORKER_DSN": dsn},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            wait_for(lambda: len(lines()) >= 60 or process.poll() is not None, timeout=30)
            assert process.poll() is None, errors.read_text()
            ready = janitor.count(queue)
            held = total - ready - len(lines())
            assert held > 0, "the worker should hold prefetched, unacknowledged messages"
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL

    consumer = Bus(transports={"work": dsn, "failed": "memory://"}, failure_transport="failed")
    consumer.route(Job, "work")
    janitor.transports.append(consumer.transport("work"))
    with ledger.open("a", buffering=1) as record:

        @consumer.handler(Job)
        def handle(job: Job) -> None:
            record.write(f"{job.n}\n")

        worker = Worker(consumer, ["work"], options=WorkerOptions(prefetch=50, sleep=0.2))
        thread = threading.Thread(target=worker.run)
        thread.start()
        try:
            wait_for(lambda: set(lines()) == set(range(total)), timeout=30)
        finally:
            worker.stop()
            thread.join(timeout=10)
    consumer.close()
    handled = Counter(lines())
    assert set(handled) == set(range(total))
    # Only what the killed worker held came twice: its prefetch and unflushed acks.
    assert sum(count - 1 for count in handled.values()) <= 50 + 50
    assert janitor.count(queue) == 0


def test_a_limited_worker_takes_no_more_than_its_limit_from_the_broker(janitor: Any) -> None:
    queue = janitor.name()
    bus = Bus(transports={"work": janitor.dsn(queue)})
    bus.route(Job, "work")
    transport = bus.transport("work")
    janitor.transports.append(transport)
    handled: list[int] = []
    bus.add_handler(lambda job: handled.append(job.n), Job)
    bus.setup()  # connected before the worker starts, as `courier consume` does
    bus.dispatch_many([Job(n=n) for n in range(30)])

    worker = Worker(bus, ["work"], options=WorkerOptions(limit=2, sleep=0.2))
    worker.run()
    assert handled == [0, 1]
    bus.close()  # the worker process ends: what RabbitMQ sent ahead goes back

    # Nothing beyond the limit was sent ahead and taken back: every other
    # message is on its first delivery.
    fresh = janitor.transport(queue)
    rest: list[Any] = []
    while len(rest) < 28 and (got := fresh.receive(max=28, timeout=2.0)):
        fresh.ack_many(got)
        rest += got
    assert len(rest) == 28
    assert {received.delivery_count for received in rest} == {1}


def test_a_forged_courier_record_is_refused_as_a_reserved_type(janitor: Any) -> None:
    queue = janitor.name()
    bus = Bus(
        transports={"work": janitor.dsn(queue), "failed": "memory://", "invalid": "memory://"},
        failure_transport="failed",
        invalid_transport="invalid",
    )
    bus.route(Job, "work")
    janitor.transports.append(bus.transport("work"))
    bus.add_handler(lambda job: None, Job)
    bus.setup()
    forged = (
        b'{"body": "eyJuIjogMX0=", "headers": {"courier-type": "courier.amqp-test.job"},'
        b' "reason": "forged", "transport": "admin", "queue": "admin-commands"}'
    )
    janitor.publish_raw(
        queue, forged, {"courier-type": "courier.invalid-message"}, message_id="forged"
    )
    Worker(bus, ["work"], options=WorkerOptions(limit=1, sleep=0.2, time_limit=20)).run()
    invalid = bus.transport("invalid")
    assert isinstance(invalid, MemoryTransport)
    [kept] = invalid.list()
    record = kept.message
    assert isinstance(record, InvalidMessage)
    assert "reserved type 'courier.invalid-message'" in record.reason
    assert (record.transport, record.queue) == ("work", queue)  # where courier got it
    assert record.body == forged
