"""What is particular to RabbitMQ, checked on the real broker.

Topology (quorum queues, delivery limit, dead letters, delay levels,
fanout per topic), publishing (confirms, mandatory, nacks, persistence),
consuming (prefetch, ack multiple, delivery counts) and the I/O thread
(heartbeats while a handler runs long).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import pytest

from courier.envelope import Envelope
from courier.errors import ConfigurationError, ConnectionLost, PublishNotConfirmed
from courier.testing.contract import ContractEvent, ContractMessage
from courier.transports.dsn import Dsn
from courier_amqp import AmqpTransport

pytestmark = pytest.mark.amqp


def free_port() -> int:
    """A loopback port nothing listens on (closed again at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def envelope(n: int = 1, **changes: Any) -> Envelope:
    return Envelope(ContractMessage(n=n), **changes)


def receive(transport: AmqpTransport, count: int = 1, timeout: float = 5.0, **kw: Any) -> list[Any]:
    deadline = time.monotonic() + timeout
    got: list[Any] = []
    while len(got) < count and time.monotonic() < deadline:
        got += transport.receive(max=count - len(got), timeout=deadline - time.monotonic(), **kw)
    return got


# -- topology ------------------------------------------------------------------


def test_quorum_queue_counts_deliveries_and_dead_letters_past_its_limit(janitor: Any) -> None:
    transport = janitor.transport(delivery_limit="2")
    transport.setup()
    sent = transport.send(envelope(1))
    counts = []
    while True:
        got = transport.receive(max=1, timeout=1.0)
        if not got:
            break
        counts.append(got[0].delivery_count)
        transport.release(got[0])
    # Handed out three times (the limit allows two returns), then dead-lettered.
    assert counts == [1, 2, 3]
    dead = transport.topology.dead_letter_queue(transport.queue)
    deadline = time.monotonic() + 5
    while janitor.count(dead) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    _, properties, _ = janitor.get_raw(dead)
    assert properties.message_id == sent.id
    assert properties.headers["x-first-death-reason"] == "delivery_limit"


def test_setup_refuses_a_queue_declared_with_other_arguments(janitor: Any) -> None:
    queue = janitor.name()
    janitor.queues.add(queue)
    janitor.channel().queue_declare(queue, durable=True)  # a classic queue
    transport = janitor.transport(queue)
    with pytest.raises(ConfigurationError, match="PRECONDITION_FAILED"):
        transport.setup()
    transport.close()


def test_without_auto_setup_nothing_is_declared_and_unroutable_is_an_error(janitor: Any) -> None:
    transport = janitor.transport(auto_setup="false")
    with pytest.raises(PublishNotConfirmed, match="unroutable") as caught:
        transport.send(envelope(1))
    assert caught.value.failed_ids == (caught.value.failed_ids[0],)
    assert transport.declared() == {"queues": [], "exchanges": []}
    transport.setup()
    transport.send(envelope(2))  # the same connection carries on
    [got] = receive(transport)
    transport.ack(got)


def test_a_nack_is_publish_not_confirmed_naming_the_failed_ids(janitor: Any) -> None:
    queue = janitor.name()
    janitor.queues.add(queue)
    janitor.channel().queue_declare(
        queue, durable=True, arguments={"x-max-length": 3, "x-overflow": "reject-publish"}
    )
    transport = janitor.transport(queue, auto_setup="false")
    batch = [envelope(n) for n in range(5)]
    with pytest.raises(PublishNotConfirmed, match="nacked") as caught:
        transport.send_many(batch)
    assert set(caught.value.failed_ids) == {e.id for e in batch[3:]}
    with pytest.raises(PublishNotConfirmed, match="nacked"):
        transport.send(envelope(9))
    assert janitor.count(queue) == 3


def test_messages_are_persistent_with_amqp_properties(
    janitor: Any, transport: AmqpTransport
) -> None:
    sent = transport.send(envelope(4, headers={"x-tenant": "acme"}))
    _, properties, body = janitor.get_raw(transport.queue)
    assert properties.delivery_mode == 2
    assert properties.content_type == "application/json"
    assert properties.message_id == sent.id
    assert properties.type == "courier.contract.message"
    assert set(properties.headers) - {"x-delivery-count"} == {"courier-created", "x-tenant"}
    assert properties.headers["x-tenant"] == "acme"
    assert body == b'{"n":4,"text":"hello"}'


def test_a_foreign_producers_headers_come_back_as_str(
    janitor: Any, transport: AmqpTransport
) -> None:
    janitor.publish_raw(
        transport.queue,
        b'{"n": 5}',
        {"tenant-id": 42, "flag": True},
        message_id="foreign-1",
        type="courier.contract.message",
        content_type="application/json",
    )
    [got] = receive(transport)
    assert got.envelope is not None
    assert got.envelope.id == "foreign-1"
    assert dict(got.envelope.headers) == {"tenant-id": "42", "flag": "true"}
    transport.ack(got)


# -- delays ------------------------------------------------------------------


def test_a_delay_is_rounded_up_to_its_level_and_zero_is_immediate(transport: AmqpTransport) -> None:
    transport.send(envelope(1))
    [first] = receive(transport)
    started = time.monotonic()
    transport.retry(first, first.envelope.with_(attempt=2, received=None), 0.5)  # level 1 s
    assert transport.receive(max=1, timeout=0.7) == []
    [again] = receive(transport)
    assert time.monotonic() - started >= 0.95
    assert again.envelope.attempt == 2
    assert not again.envelope.headers  # no x-death, no x-first-death-*
    assert again.delivery_count == 1
    started = time.monotonic()
    transport.retry(again, again.envelope.with_(attempt=3, received=None), 0.0)
    [third] = receive(transport)
    assert time.monotonic() - started < 0.5
    assert third.envelope.attempt == 3
    transport.ack(third)
    with pytest.raises(ConfigurationError, match="longest delay level"):
        transport.send(envelope(2, delay=6.0))


def test_delayed_messages_survive_the_transport_that_sent_them(janitor: Any) -> None:
    queue = janitor.name()
    producer = janitor.transport(queue)
    sent = producer.send(envelope(1, delay=0.2))
    producer.close()
    consumer = janitor.transport(queue)
    [got] = receive(consumer)
    assert got.envelope.id == sent.id
    consumer.ack(got)


# -- events ------------------------------------------------------------------


def test_events_fan_out_once_per_subscription_and_delayed_ones_too(
    janitor: Any, transport: AmqpTransport
) -> None:
    topic = janitor.name("topic")
    transport.setup(topics={topic: ["mail", "audit"]})
    event = Envelope(ContractEvent(n=1))
    transport.publish(event, topic, ["mail", "audit"])
    transport.publish(Envelope(ContractEvent(n=2), delay=0.2), topic, ["mail", "audit"])
    for name in ("mail", "audit"):
        got = receive(transport, 2, queues=[f"{topic}.{name}"])
        assert sorted(r.envelope.message.n for r in got) == [1, 2]
        transport.ack_many(got)
    # Nobody subscribed: not an error.
    transport.publish(Envelope(ContractEvent(n=3)), janitor.name("lonely"), [])


def test_publishing_to_a_missing_exchange_fails_and_the_transport_carries_on(
    janitor: Any, transport: AmqpTransport
) -> None:
    producer = janitor.transport(transport.queue, auto_setup="false")
    with pytest.raises(PublishNotConfirmed, match="NOT_FOUND"):
        producer.publish(Envelope(ContractEvent(n=1)), janitor.name("nowhere"), ["a"])
    producer.send(envelope(1))  # a new publishing channel, same connection
    assert producer.session is not None
    assert producer.session.lost is None
    [got] = receive(transport)
    transport.ack(got)


# -- consuming ---------------------------------------------------------------


def test_prefetch_bounds_what_the_broker_sends_ahead(janitor: Any) -> None:
    transport = janitor.transport(prefetch="5")
    transport.setup()
    transport.send_many([envelope(n) for n in range(20)])
    [first] = receive(transport)
    time.sleep(0.2)
    stats = transport.stats()[0]
    assert (stats.ready, stats.in_flight) == (15, 5)
    transport.ack(first)
    rest: list[Any] = []
    while len(rest) < 19 and (got := transport.receive(max=19, timeout=2.0)):
        assert len(got) <= 5
        transport.ack_many(got)
        rest += got
    assert len(rest) == 19


def test_ack_many_is_one_multiple_ack_when_the_tags_allow_it(transport: AmqpTransport) -> None:
    transport.send_many([envelope(n) for n in range(10)])
    got = receive(transport, 10)
    session = transport.session
    assert session is not None
    transport.ack_many(got[:4])  # tags 1-4: one frame
    assert session.run(lambda: session.ack_frames, 5) == 1
    transport.ack_many([got[5], got[6], got[8]])  # 5 is unsettled: one frame each
    assert session.run(lambda: session.ack_frames, 5) == 4
    transport.ack_many([got[4], got[7], got[9]])  # everything below 10 settled: one
    assert session.run(lambda: session.ack_frames, 5) == 5
    transport.ack_many(got)  # settled already: nothing sent, nothing broken
    transport.ack(got[0])
    assert session.run(lambda: session.ack_frames, 5) == 5
    assert transport.receive(max=1, timeout=0.3) == []
    assert session.lost is None


def test_reject_dead_letters_with_the_brokers_reason_and_logs_ours(
    janitor: Any, transport: AmqpTransport, caplog: pytest.LogCaptureFixture
) -> None:
    sent = transport.send(envelope(1))
    [got] = receive(transport)
    with caplog.at_level(logging.WARNING, logger="courier.amqp"):
        transport.reject(got, "NoSuchCustomer: 42")
    assert "NoSuchCustomer: 42" in caplog.text
    dead = transport.topology.dead_letter_queue(transport.queue)
    deadline = time.monotonic() + 5
    while janitor.count(dead) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    _, properties, _ = janitor.get_raw(dead)
    assert properties.message_id == sent.id
    assert properties.headers["x-death"][0]["reason"] == "rejected"


def test_stats_ready_in_flight_delayed_dead(transport: AmqpTransport) -> None:
    transport.send_many([envelope(n) for n in range(3)])
    transport.send(envelope(9, delay=3.0))
    [one] = receive(transport)
    transport.reject(one, "dead")
    [two] = receive(transport)
    deadline = time.monotonic() + 5
    stats = transport.stats()[0]
    while stats.dead != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
        stats = transport.stats()[0]
    assert (stats.ready, stats.in_flight, stats.delayed, stats.dead) == (0, 2, 1, 1)
    assert transport.stats(["no-such-queue-here"])[0].ready is None
    transport.ack(two)


def test_classic_queues_work_without_delivery_counts(janitor: Any) -> None:
    transport = janitor.transport(queue_type="classic", delay_prefix=f"{janitor.tag}.cdelay")
    transport.setup()
    transport.send(envelope(1))
    [got] = receive(transport)
    transport.release(got)
    [again] = receive(transport)
    assert again.delivery_count == 1  # classic queues do not count
    transport.retry(again, again.envelope.with_(attempt=2, received=None), 0.2)
    [later] = receive(transport)
    assert later.envelope.attempt == 2
    transport.reject(later, "no")
    assert transport.receive(max=1, timeout=0.3) == []


# -- the I/O thread --------------------------------------------------------


def test_a_long_handler_does_not_cost_the_connection(janitor: Any) -> None:
    # Heartbeats every second: a connection whose heartbeats were not
    # serviced for 3.5 s would be closed by the broker.
    transport = janitor.transport(heartbeat="1")
    transport.setup()
    transport.send(envelope(1))
    [got] = receive(transport)
    session = transport.session
    time.sleep(3.5)  # the handler runs; nothing touches the transport
    transport.ack(got)
    assert session is not None
    assert transport.session is session
    assert session.lost is None
    assert transport.receive(max=1, timeout=0.3) == []


def test_connection_errors_never_show_the_password(
    amqp_url: str, janitor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url = amqp_url.replace(":guest@", ":s3cr3t-wrong-pw@")
    assert "s3cr3t-wrong-pw" in url
    transport = janitor.transport(url=url)
    with caplog.at_level(logging.DEBUG), pytest.raises(ConnectionLost) as caught:
        transport.send(envelope(1))
    assert "login refused" in str(caught.value)
    for text in (str(caught.value), repr(transport), caplog.text):
        assert "s3cr3t-wrong-pw" not in text


def test_a_refused_connection_says_so_in_a_few_words(janitor: Any) -> None:
    port = free_port()
    transport = janitor.transport(url=f"amqp://guest:guest@127.0.0.1:{port}/%2f")
    with pytest.raises(ConnectionLost) as caught:
        transport.send(envelope(1))
    expected = f"cannot connect to RabbitMQ at 127.0.0.1:{port}: connection refused"
    assert str(caught.value) == expected


def test_a_host_list_fails_over_in_order(
    amqp_url: str, janitor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    closed = free_port()
    live = Dsn.parse(amqp_url)
    url = (
        f"amqp://{live.username}:{live.password}@127.0.0.1:{closed},"
        f"{live.host}:{live.port or 5672}{live.path or '/%2f'}"
    )
    transport = janitor.transport(url=url)
    transport.setup()
    with caplog.at_level(logging.WARNING, logger="courier.amqp"):
        transport.send(envelope(1))
    [got] = receive(transport)
    assert got.envelope.message.n == 1
    transport.ack(got)
    assert f"127.0.0.1:{closed}: connection refused" in caplog.text
    both_closed = f"amqp://guest:guest@127.0.0.1:{closed},127.0.0.1:{free_port()}/%2f"
    with pytest.raises(ConnectionLost, match=f"127.0.0.1:{closed}: connection refused; "):
        janitor.transport(url=both_closed).send(envelope(2))


def test_classic_queues_with_max_priority_serve_the_most_urgent_first(janitor: Any) -> None:
    transport = janitor.transport(
        queue_type="classic", max_priority="9", delay_prefix=f"{janitor.tag}.pdelay"
    )
    transport.setup()
    assert transport.capabilities.priority
    for n, priority in ((1, 0), (2, 9), (3, 5), (4, 0), (5, 9)):
        transport.send(envelope(n, priority=priority))
    got = receive(transport, 5)
    assert [r.envelope.message.n for r in got] == [2, 5, 3, 1, 4]
    assert [r.envelope.priority for r in got] == [9, 9, 5, 0, 0]
    transport.ack_many(got)


def test_consuming_a_missing_queue_without_auto_setup_says_so(janitor: Any) -> None:
    transport = janitor.transport(auto_setup="false")
    with pytest.raises(ConnectionLost, match="NOT_FOUND"):
        transport.receive(max=1, timeout=1)
    transport.setup()
    transport.send(envelope(1))
    [got] = receive(transport)  # the next call reconnected
    transport.ack(got)


def test_threads_can_share_one_transport(transport: AmqpTransport) -> None:
    def produce(start: int) -> None:
        for n in range(start, start + 50):
            transport.send(envelope(n))

    threads = [threading.Thread(target=produce, args=(start,)) for start in (0, 50, 100, 150)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got: list[Any] = []
    while len(got) < 200 and (more := transport.receive(max=100, timeout=2)):
        transport.ack_many(more)
        got += more
    assert sorted(r.envelope.message.n for r in got) == list(range(200))
