"""Connections cut under the transport, through courier.testing.proxy.

After a cut RabbitMQ takes back every unacknowledged delivery of the dead
connection, so courier must send nothing for a delivery of an older
generation (its ack id names a subscription the new connection does not
have), reconnect on the next call with a new generation, and lose nothing,
whether it was consuming or publishing.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any, ClassVar

import pytest

from courier import Bus, Message
from courier.envelope import Envelope
from courier.errors import ConnectionLost, PublishNotConfirmed
from courier.testing.contract import ContractMessage
from courier.testing.proxy import TcpProxy
from courier.testing.waiting import wait_for
from courier.transports.dsn import Dsn
from courier.worker import Worker, WorkerOptions

pytestmark = pytest.mark.stomp


class Job(Message):
    message_name: ClassVar[str] = "courier.stomp-test.job"

    n: int


@pytest.fixture
def proxy(stomp_url: str) -> Any:
    dsn = Dsn.parse(stomp_url)
    with TcpProxy(dsn.host or "127.0.0.1", dsn.port or 61613) as running:
        yield running


def proxied(url: str, proxy: TcpProxy) -> str:
    dsn = Dsn.parse(url)
    return url.replace(f"@{dsn.host}:{dsn.port}", f"@127.0.0.1:{proxy.port}", 1)


def test_a_cut_between_handling_and_ack_sends_nothing_stale(janitor: Any, proxy: TcpProxy) -> None:
    transport = janitor.transport(url=proxied(janitor.url, proxy))
    transport.setup()
    sent = transport.send(Envelope(ContractMessage(n=1)))
    [got] = transport.receive(max=1, timeout=5)
    old = transport.consumer
    assert proxy.cut() == 2  # the publishing and the consuming connection
    wait_for(lambda: old.lost is not None)
    # Every settling verb is silent for a delivery of the lost connection.
    transport.ack(got)
    transport.ack_many([got])
    transport.release(got)
    transport.reject(got, "stale")
    transport.retry(got, got.envelope.with_(attempt=2, received=None), 0.0)
    assert old.settled == 0
    [again] = transport.receive(max=1, timeout=5)  # reconnects
    session = transport.consumer
    assert session is not None
    assert session is not old
    assert again.generation == session.generation == transport.generation > got.generation
    assert again.envelope.id == sent.id
    assert again.envelope.attempt == 1
    assert again.delivery_count == 2  # redelivered
    transport.ack(got)  # stale: still nothing
    assert session.settled == 0
    transport.ack(again)
    assert session.settled == 1
    assert transport.receive(max=1, timeout=0.3) == []
    assert session.lost is None
    assert janitor.count(transport.queue) == 0


def test_a_waiting_receive_raises_connection_lost_and_the_next_call_reconnects(
    janitor: Any, proxy: TcpProxy
) -> None:
    transport = janitor.transport(url=proxied(janitor.url, proxy))
    transport.setup()
    assert transport.receive(max=1, timeout=0.1) == []
    threading.Timer(0.3, proxy.cut).start()
    started = time.monotonic()
    with pytest.raises(ConnectionLost):
        transport.receive(max=1, timeout=5)
    assert time.monotonic() - started < 3
    transport.send(Envelope(ContractMessage(n=2)))
    [got] = transport.receive(max=1, timeout=5)
    transport.ack(got)


def test_a_silent_network_is_noticed_through_heartbeats(janitor: Any, proxy: TcpProxy) -> None:
    transport = janitor.transport(url=proxied(janitor.url, proxy), heartbeat="1")
    transport.setup()
    assert transport.receive(max=1, timeout=0.1) == []
    proxy.pause()
    started = time.monotonic()
    # stomp.py gives up after twice the broker's heart-beat interval of silence.
    with pytest.raises(ConnectionLost, match=r"(?i)heart-beat|closed"):
        transport.receive(max=1, timeout=20)
    assert time.monotonic() - started < 8
    proxy.resume()
    proxy.cut()
    transport.send(Envelope(ContractMessage(n=3)))
    [got] = transport.receive(max=1, timeout=5)
    transport.ack(got)


def test_a_silent_holders_message_comes_back_within_the_lease(
    janitor: Any, proxy: TcpProxy
) -> None:
    # A consumer that vanished without closing (a hung host, a dead network
    # path): RabbitMQ notices through heart-beats that lease= sets.
    queue = janitor.name()
    holder = janitor.transport(queue, url=proxied(janitor.url, proxy), lease="3")
    sent = holder.send(Envelope(ContractMessage(n=1)))
    [taken] = holder.receive(max=1, timeout=5)
    other = janitor.transport(queue)
    assert other.receive(max=1, timeout=0.2) == []
    proxy.pause()
    started = time.monotonic()
    [again] = other.receive(max=1, timeout=10)
    waited = time.monotonic() - started
    assert again.envelope is not None
    assert again.envelope.id == taken.envelope.id == sent.id
    assert 1.0 < waited < 3.0 + 1.0
    other.ack(again)
    proxy.resume()


def test_a_worker_survives_cuts_mid_stream_and_loses_nothing(janitor: Any, proxy: TcpProxy) -> None:
    queue = janitor.name()
    total = 300
    producer = Bus(transports={"work": janitor.dsn(queue)})
    producer.route(Job, "work")
    janitor.transports.append(producer.transport("work"))
    producer.dispatch_many([Job(n=n) for n in range(total)])

    consumer = Bus(transports={"work": proxied(janitor.dsn(queue, prefetch="20"), proxy)})
    consumer.route(Job, "work")
    janitor.transports.append(consumer.transport("work"))
    ledger: list[int] = []

    @consumer.handler(Job)
    def handle(job: Job) -> None:
        ledger.append(job.n)
        time.sleep(0.002)

    options = WorkerOptions(prefetch=10, sleep=0.2, reconnect_delay=0.05, reconnect_max_delay=0.2)
    worker = Worker(consumer, ["work"], options=options)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        for mark in (40, 120, 200):
            wait_for(lambda mark=mark: len(set(ledger)) >= mark, timeout=20)
            assert proxy.cut() >= 1
        wait_for(lambda: len(set(ledger)) == total, timeout=30)
    finally:
        worker.stop()
        thread.join(timeout=10)
    consumer.close()
    assert set(ledger) == set(range(total))
    duplicates = sum(count - 1 for count in Counter(ledger).values())
    # Only what was held (prefetched or awaiting its batched ack) comes twice.
    assert duplicates <= 3 * (20 + options.ack_batch)
    wait_for(lambda: janitor.count(queue) == 0)


def test_publishing_through_cuts_confirms_or_names_what_failed(
    janitor: Any, proxy: TcpProxy
) -> None:
    queue = janitor.name()
    transport = janitor.transport(queue, url=proxied(janitor.url, proxy))
    transport.setup()
    batch = [Envelope(ContractMessage(n=n)) for n in range(2000)]
    stop = threading.Event()

    def cutter() -> None:
        # The first cut at once: on a quiet machine the whole batch may be
        # sent in less time than the cuts are apart.
        for _ in range(3):
            proxy.cut()
            if stop.wait(0.05):
                return

    thread = threading.Thread(target=cutter)
    thread.start()
    failures = 0
    try:
        for start in range(0, len(batch), 100):
            pending = batch[start : start + 100]
            while pending:
                try:
                    transport.send_many(pending)
                    pending = []
                except PublishNotConfirmed as error:
                    failures += 1
                    failed = set(error.failed_ids)
                    assert failed
                    pending = [e for e in pending if e.id in failed]
    finally:
        stop.set()
        thread.join()
    consumer = janitor.transport(queue)  # straight to the broker
    seen: set[str] = set()
    deadline = time.monotonic() + 20
    while len(seen) < len(batch) and time.monotonic() < deadline:
        got = consumer.receive(max=100, timeout=1)
        seen.update(r.envelope.id for r in got if r.envelope)
        consumer.ack_many(got)
    assert seen == {e.id for e in batch}
    assert proxy.cuts >= 1


def test_a_publish_cut_before_its_receipts_names_every_unconfirmed_id(
    janitor: Any, proxy: TcpProxy
) -> None:
    queue = janitor.name()
    transport = janitor.transport(queue, url=proxied(janitor.url, proxy))
    transport.setup()
    transport.send(Envelope(ContractMessage(n=-1)))  # the publishing connection is open
    batch = [Envelope(ContractMessage(n=n)) for n in range(50)]
    proxy.pause()  # the frames leave the client but never reach the broker
    errors: list[BaseException] = []

    def send() -> None:
        try:
            transport.send_many(batch)
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=send)
    thread.start()
    time.sleep(0.3)
    proxy.cut()
    thread.join(timeout=10)
    [error] = errors
    assert isinstance(error, PublishNotConfirmed)
    assert set(error.failed_ids) == {e.id for e in batch}
    proxy.resume()
    transport.send_many(batch)  # a new connection
    consumer = janitor.transport(queue)
    got: list[Any] = []
    while len(got) < 51 and (more := consumer.receive(max=51, timeout=2)):
        got += more
    consumer.ack_many(got)
    assert sorted(r.envelope.message.n for r in got) == list(range(-1, 50))
