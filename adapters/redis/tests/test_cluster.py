"""On a real three-master Redis Cluster (started for the session by conftest.py).

The contract runs here too (test_contract.py); these are what only a
cluster shows: queues on different nodes served by their own workers, one
worker reading queues in several slots, and a topic's subscription queues
written by one script because they share the topic's slot.
"""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

import pytest
from redis.crc import key_slot

from courier import Bus, Message
from courier.envelope import Envelope
from courier.testing.contract import ContractEvent, ContractMessage
from courier.testing.waiting import wait_for
from courier.transports.base import subscription_queue
from courier.worker import Worker, WorkerOptions

pytestmark = pytest.mark.redis_cluster


class Job(Message):
    message_name: ClassVar[str] = "courier.redis-test.job"

    n: int


def node_of(janitor: Any, queue: str) -> str:
    return str(janitor.raw.get_node_from_key(janitor.stream(queue)).name)


def queues_on_different_nodes(janitor: Any, count: int) -> list[str]:
    found: dict[str, str] = {}
    while len(found) < count:
        queue = janitor.name()
        found.setdefault(node_of(janitor, queue), queue)
    return list(found.values())


def recorder(ledger: list[int]) -> Any:
    def handle(job: Job) -> None:
        ledger.append(job.n)

    return handle


def test_two_workers_on_queues_that_live_on_different_nodes(cluster_janitor: Any) -> None:
    janitor = cluster_janitor
    queues = queues_on_different_nodes(janitor, 2)
    assert node_of(janitor, queues[0]) != node_of(janitor, queues[1])
    ledgers: dict[str, list[int]] = {queue: [] for queue in queues}
    workers, threads, buses = [], [], []
    for queue in queues:
        bus = Bus(transports={"work": janitor.dsn(queue)})
        bus.route(Job, "work")
        bus.setup()
        bus.dispatch_many([Job(n=n) for n in range(100)])

        bus.add_handler(recorder(ledgers[queue]), Job)
        worker = Worker(bus, ["work"], options=WorkerOptions(sleep=0.2, time_limit=30))
        workers.append(worker)
        buses.append(bus)
        threads.append(threading.Thread(target=worker.run))
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: all(len(ledger) >= 100 for ledger in ledgers.values()), 30, "both")
    finally:
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(timeout=10)
    for bus in buses:
        bus.close()
    for queue, ledger in ledgers.items():
        assert sorted(ledger) == list(range(100))
        assert janitor.raw.xlen(janitor.stream(queue)) == 0


def test_one_worker_reads_queues_in_several_slots(cluster_janitor: Any) -> None:
    janitor = cluster_janitor
    first, second = queues_on_different_nodes(janitor, 2)
    transport = janitor.transport(first)
    transport.setup([second])
    assert transport.receive([first, second], max=10, timeout=0.2) == []
    transport.send(Envelope(ContractMessage(n=2)), second)
    transport.send(Envelope(ContractMessage(n=1)), first)
    got = transport.receive([first, second], max=10, timeout=2)
    assert [(r.queue, r.envelope.message.n) for r in got] == [(first, 1)]
    got += transport.receive([first, second], max=10, timeout=2)
    assert [(r.queue, r.envelope.message.n) for r in got] == [(first, 1), (second, 2)]
    # A blocking read on both wakes for the second slot's queue too.
    threading.Timer(0.3, lambda: transport.send(Envelope(ContractMessage(n=3)), second)).start()
    started = time.monotonic()
    later = transport.receive([first, second], max=10, timeout=5)
    assert [r.envelope.message.n for r in later] == [3]
    assert time.monotonic() - started < 1.5
    transport.ack_many(got + later)


def test_a_topics_subscription_queues_share_its_slot_and_one_script_fills_them(
    cluster_janitor: Any,
) -> None:
    janitor = cluster_janitor
    transport = janitor.transport()
    topic = f"{janitor.name('user')}.registered"
    subscriptions = ["mail", "audit", "crm.sync"]
    transport.setup(topics={topic: subscriptions})
    queues = [subscription_queue(topic, name) for name in subscriptions]
    slots = {key_slot(janitor.stream(queue).encode()) for queue in queues}
    assert len(slots) == 1
    transport.publish(Envelope(ContractEvent(n=1)), topic, [])
    transport.publish(Envelope(ContractEvent(n=2), delay=0.2), topic, [])
    got: list[Any] = []
    deadline = time.monotonic() + 5
    while len(got) < 6 and time.monotonic() < deadline:
        got += transport.receive(queues, max=10, timeout=1)
    assert sorted((r.queue, r.envelope.message.n) for r in got) == sorted(
        (queue, n) for queue in queues for n in (1, 2)
    )
    transport.ack_many(got)
    # courier setup's orphan check lists every queue, on every node.
    others = queues_on_different_nodes(janitor, 3)
    for queue in others:
        transport.send(Envelope(ContractMessage(n=1)), queue)
    assert set(queues) | set(others) <= set(transport.queues())
    assert transport.subscriptions(topic) == sorted(subscriptions)
