"""What is particular to RabbitMQ's STOMP plugin, checked on the real broker.

Publishing (receipts, refusals as typed errors, persistence, headers),
foreign producers, delays through TTL queues, topics with a durable queue
per subscription, quorum delivery counts, prefetch, dead letters,
heart-beats while a handler runs long, and passwords kept out of sight.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import pytest

from courier.envelope import Envelope
from courier.errors import ConnectionLost, PublishNotConfirmed, TransportError
from courier.testing.contract import ContractEvent, ContractMessage, contract_serializer
from courier.testing.waiting import wait_for
from courier_stomp import StompTransport
from courier_stomp.connection import BrokerError
from courier_stomp.transport import REJECT_REASON

pytestmark = pytest.mark.stomp


def envelope(n: int = 1, **changes: Any) -> Envelope:
    return Envelope(ContractMessage(n=n), **changes)


def receive(
    transport: StompTransport, count: int = 1, timeout: float = 5.0, **kw: Any
) -> list[Any]:
    deadline = time.monotonic() + timeout
    got: list[Any] = []
    while len(got) < count and time.monotonic() < deadline:
        got += transport.receive(max=count - len(got), timeout=deadline - time.monotonic(), **kw)
    return got


# -- publishing ----------------------------------------------------------------


def test_messages_are_persistent_with_their_headers_as_stomp_headers(
    janitor: Any, transport: StompTransport
) -> None:
    sent = transport.send(envelope(4, headers={"x-tenant": "acme", "odd:name": "v"}))
    _, properties, body = janitor.get_raw(transport.queue)
    assert properties.delivery_mode == 2
    assert properties.content_type == "application/json"
    headers = properties.headers
    assert headers["courier-id"] == sent.id
    assert headers["courier-type"] == "courier.contract.message"
    assert headers["x-tenant"] == "acme"
    assert json.loads(headers["courier-headers"]) == {"odd:name": "v"}
    assert body == b'{"n":4,"text":"hello"}'


def test_a_foreign_stomp_producer_needs_no_special_headers(
    janitor: Any, transport: StompTransport
) -> None:
    # What a PHP or Java producer sends: a plain /queue/ destination.
    janitor.raw.send(
        f"/queue/{transport.queue}",
        b'{"n": 5}',
        {"courier-type": "courier.contract.message", "courier-id": "php-1", "tenant-id": "42"},
    )
    [got] = receive(transport)
    assert got.envelope is not None
    assert got.envelope.id == "php-1"
    assert dict(got.envelope.headers) == {"tenant-id": "42"}
    transport.ack(got)


def test_quorum_queues_refuse_a_producer_that_does_not_say_quorum(janitor: Any) -> None:
    # Why queue_type=classic is the default: RabbitMQ compares queue
    # arguments on every SEND to /queue/<name>.
    transport = janitor.transport(queue_type="quorum")
    transport.setup()
    transport.send(envelope(1))
    raw = type(janitor.raw)(janitor.url)
    try:
        with pytest.raises(AssertionError, match="no receipt"):
            raw.send(f"/queue/{transport.queue}", b"{}", {"courier-type": "x"})
        assert any("precondition_failed" in error for error in raw.errors)
    finally:
        raw.close()
    janitor.raw.send(f"/amq/queue/{transport.queue}", b"{}", {"courier-type": "x"})
    assert janitor.count(transport.queue) == 2


def test_an_error_frame_is_publish_not_confirmed_and_the_transport_carries_on(
    janitor: Any, transport: StompTransport
) -> None:
    transport.send(envelope(1))
    [held] = receive(transport)
    # RabbitMQ refuses queue names starting with "amq.": an ERROR frame.
    with pytest.raises(PublishNotConfirmed, match="ACCESS_REFUSED") as caught:
        transport.send(envelope(2), queue="amq.courier-test")
    assert len(caught.value.failed_ids) == 1
    assert isinstance(caught.value, TransportError)
    # A new publishing connection; the consuming one kept its message.
    transport.send(envelope(3))
    transport.ack(held)
    [later] = receive(transport)
    assert later.envelope is not None
    assert later.envelope.message == ContractMessage(n=3)
    transport.ack(later)
    assert transport.consumer is not None
    assert transport.consumer.lost is None


def test_a_queue_declared_otherwise_is_refused_on_send_and_on_receive(janitor: Any) -> None:
    queue = janitor.name()
    janitor.queues.add(queue)
    channel = janitor.channel()
    channel.queue_declare(queue, durable=True, arguments={"x-max-priority": 5})
    channel.close()
    transport = janitor.transport(queue)
    with pytest.raises(PublishNotConfirmed, match="PRECONDITION_FAILED"):
        transport.send(envelope(1))
    with pytest.raises(BrokerError, match="PRECONDITION_FAILED"):
        transport.receive(max=1, timeout=1)


def test_send_many_names_every_message_without_a_receipt(janitor: Any) -> None:
    queue = janitor.name()
    janitor.queues.add(queue)
    channel = janitor.channel()
    channel.queue_declare(
        queue, durable=True, arguments={"x-max-length": 3, "x-overflow": "reject-publish"}
    )
    channel.close()
    # The transport addresses it through /amq/queue/ (no declaration of its own).
    transport = janitor.transport(queue)
    transport.topology._targets[queue] = (f"/amq/queue/{queue}", {"persistent": "true"})
    batch = [envelope(n) for n in range(5)]
    with pytest.raises(PublishNotConfirmed) as caught:
        transport.send_many(batch)
    # RabbitMQ closes the connection at the refusal: what it took before may
    # have lost its receipt with it (named, so a retry duplicates it), but
    # nothing that was not taken goes unnamed, and nothing named twice.
    failed = set(caught.value.failed_ids)
    assert failed >= {e.id for e in batch[3:]}
    assert len(caught.value.failed_ids) == len(failed)
    kept = {janitor.get_raw(queue)[1].headers["courier-id"] for _ in range(3)}  # type: ignore[index]
    assert kept == {e.id for e in batch[:3]}
    assert {e.id for e in batch} - failed <= kept


def test_receipts_are_kept_outstanding(janitor: Any, transport: StompTransport) -> None:
    batch = [envelope(n) for n in range(500)]
    started = time.monotonic()
    transport.send_many(batch)
    many = time.monotonic() - started
    assert transport.publisher is not None
    assert transport.publisher.receipts.outstanding() == 0
    got: list[Any] = []
    while len(got) < 500 and (more := transport.receive(max=100, timeout=2)):
        transport.ack_many(more)
        got += more
    assert sorted(r.envelope.message.n for r in got) == list(range(500))
    # One receipt at a time would take a round trip each: far slower.
    assert many < 5


# -- delays ------------------------------------------------------------------


def test_a_delay_is_rounded_up_to_its_level_and_zero_is_immediate(
    transport: StompTransport,
) -> None:
    transport.send(envelope(1))
    [first] = receive(transport)
    started = time.monotonic()
    transport.retry(first, first.envelope.with_(attempt=2, received=None), 0.5)  # level 1 s
    assert transport.receive(max=1, timeout=0.7) == []
    [again] = receive(transport)
    assert time.monotonic() - started >= 0.95
    assert again.envelope.attempt == 2
    assert not again.envelope.headers  # no x-first-death-*, no x-message-ttl
    assert again.delivery_count == 1
    started = time.monotonic()
    transport.retry(again, again.envelope.with_(attempt=3, received=None), 0.0)
    [third] = receive(transport)
    assert time.monotonic() - started < 0.5
    assert third.envelope.attempt == 3
    transport.ack(third)


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


def test_an_event_published_while_its_subscribers_are_down_is_kept(janitor: Any) -> None:
    topic = janitor.name("topic")
    producer = janitor.transport()
    # The producer knows the subscriptions (setup, or the handlers): it
    # declares their queues before its first publish.
    producer.publish(Envelope(ContractEvent(n=1)), topic, ["mail", "audit"])
    producer.publish(Envelope(ContractEvent(n=2), delay=0.2), topic, ["mail", "audit"])
    producer.close()
    consumer = janitor.transport()
    consumer.setup(topics={topic: ["mail", "audit"]})
    for name in ("mail", "audit"):
        got = receive(consumer, 2, queues=[f"{topic}.{name}"])
        assert sorted(r.envelope.message.n for r in got) == [1, 2]
        assert {r.queue for r in got} == {f"{topic}.{name}"}
        consumer.ack_many(got)
    # Nobody subscribed: not an error.
    consumer.publish(Envelope(ContractEvent(n=3)), janitor.name("lonely"), [])


def test_a_producer_without_the_handlers_reaches_every_declared_subscription(
    janitor: Any,
) -> None:
    topic = janitor.name("topic")
    worker = janitor.transport()
    worker.setup(topics={topic: ["mail"]})
    producer = janitor.transport()
    producer.publish(Envelope(ContractEvent(n=7)), topic, [])  # one SEND to /topic/
    [got] = receive(worker, queues=[f"{topic}.mail"])
    assert got.envelope.message == ContractEvent(n=7)
    worker.ack(got)


# -- consuming ---------------------------------------------------------------


def test_quorum_queues_count_deliveries(janitor: Any) -> None:
    transport = janitor.transport(queue_type="quorum")
    transport.setup()
    transport.send(envelope(1))
    counts = []
    for _ in range(3):
        [got] = receive(transport)
        counts.append(got.delivery_count)
        transport.release(got)
    assert counts == [1, 2, 3]
    [last] = receive(transport)
    transport.ack(last)


def test_prefetch_bounds_what_the_broker_sends_ahead(janitor: Any) -> None:
    transport = janitor.transport(prefetch="5")
    transport.setup()
    transport.send_many([envelope(n) for n in range(20)])
    [first] = receive(transport)
    time.sleep(0.3)
    assert transport.stats()[0].in_flight == 5
    assert janitor.count(transport.queue) == 15
    transport.ack(first)
    rest: list[Any] = []
    while len(rest) < 19 and (got := transport.receive(max=19, timeout=2.0)):
        assert len(got) <= 5
        transport.ack_many(got)
        rest += got
    assert len(rest) == 19


def test_a_limited_prefetch_applies_to_new_subscriptions(janitor: Any) -> None:
    transport = janitor.transport(prefetch="50")
    transport.limit_prefetch(2)
    transport.send_many([envelope(n) for n in range(10)])
    [first] = receive(transport)
    time.sleep(0.3)
    assert transport.stats()[0].in_flight == 2
    transport.ack(first)


def test_a_deleted_queue_ends_the_consumer_and_the_next_receive_declares_it(
    janitor: Any, transport: StompTransport
) -> None:
    assert transport.receive(max=1, timeout=0.1) == []
    session = transport.consumer
    assert session is not None
    channel = janitor.channel()
    channel.queue_delete(transport.queue)
    channel.close()
    wait_for(lambda: session.lost is not None)
    assert "cancelled" in (session.lost or "")
    assert transport.receive(max=1, timeout=0.1) == []  # reconnected, declared again
    assert transport.consumer is not session
    transport.send(envelope(1))
    [got] = receive(transport)
    transport.ack(got)


def test_settling_twice_is_harmless(transport: StompTransport) -> None:
    transport.send_many([envelope(n) for n in range(3)])
    got = receive(transport, 3)
    transport.ack_many(got)
    transport.ack_many(got)  # an ACK for a settled delivery would close the connection
    transport.release(got[0])
    transport.ack(got[1])
    assert transport.receive(max=1, timeout=0.3) == []
    assert transport.consumer is not None
    assert transport.consumer.lost is None


def test_reject_moves_the_message_to_its_dead_letter_queue_with_the_reason(
    janitor: Any, transport: StompTransport, caplog: pytest.LogCaptureFixture
) -> None:
    sent = transport.send(envelope(1))
    janitor.raw.send(f"/queue/{transport.queue}", b"\xff\x00not json", {"courier-type": "x.y"})
    got = receive(transport, 2)
    with caplog.at_level(logging.WARNING, logger="courier.stomp"):
        for item in got:
            transport.reject(item, f"NoSuchCustomer: {item.delivery_count}")
    assert "NoSuchCustomer" in caplog.text
    assert transport.receive(max=1, timeout=0.3) == []
    dead = transport.queue + ".dead"
    wait_for(lambda: janitor.count(dead) == 2)
    kept = [janitor.get_raw(dead), janitor.get_raw(dead)]
    by_body = {body: properties.headers for _, properties, body in kept}  # type: ignore[misc]
    assert by_body[b'{"n":1,"text":"hello"}']["courier-id"] == sent.id
    assert by_body[b'{"n":1,"text":"hello"}'][REJECT_REASON] == "NoSuchCustomer: 1"
    assert by_body[b"\xff\x00not json"]["courier-type"] == "x.y"


def test_bodies_stay_bytes_end_to_end(janitor: Any, transport: StompTransport) -> None:
    body = b'{"n": 1, "text": "\xff\xfe\x00 not utf-8"}'
    janitor.raw.send(
        f"/queue/{transport.queue}", body, {"courier-type": "courier.contract.message"}
    )
    [got] = receive(transport)
    assert got.envelope is None
    assert got.raw == body
    transport.ack(got)


def test_a_long_handler_does_not_cost_the_connection(janitor: Any) -> None:
    # Heart-beats every second: a connection whose heart-beats stopped for
    # 3.5 s would have been closed by RabbitMQ (and by stomp.py).
    transport = janitor.transport(heartbeat="1")
    transport.setup()
    transport.send(envelope(1))
    [got] = receive(transport)
    session = transport.consumer
    assert session is not None
    assert session._conn.heartbeats == (1000, 1000)  # negotiated with the broker
    time.sleep(3.5)  # the handler runs; nothing touches the transport
    transport.ack(got)
    assert transport.consumer is session
    assert session.lost is None
    assert transport.receive(max=1, timeout=0.3) == []


def test_threads_can_share_one_transport(transport: StompTransport) -> None:
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


# -- secrets -----------------------------------------------------------------


def test_a_wrong_password_is_a_clear_error_that_never_shows_it(
    stomp_url: str, janitor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url = stomp_url.replace(":guest@", ":s3cr3t-wrong-pw@")
    assert "s3cr3t-wrong-pw" in url
    transport = janitor.transport(url=url)
    with caplog.at_level(logging.DEBUG), pytest.raises(PublishNotConfirmed) as caught:
        transport.send(envelope(1))
    assert "Access refused" in str(caught.value)
    with caplog.at_level(logging.DEBUG), pytest.raises(ConnectionLost) as lost:
        transport.receive(max=1, timeout=1)
    for text in (str(caught.value), str(lost.value), repr(transport), caplog.text):
        assert "s3cr3t-wrong-pw" not in text


def test_no_password_in_debug_logs_of_a_working_connection(
    janitor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url = janitor.url
    password = "guest"
    assert f":{password}@" in url
    with caplog.at_level(logging.DEBUG):
        transport = janitor.transport(serializer=contract_serializer())
        transport.send(envelope(1))
        [got] = receive(transport)
        transport.ack(got)
        transport.close()
    assert "a frame with a passcode (hidden" in caplog.text  # stomp.py logged CONNECT...
    assert f"passcode:{password}" not in caplog.text  # ...without the password


def test_a_destination_the_broker_refuses_is_publish_not_confirmed(
    transport: StompTransport,
) -> None:
    name = "amq.courier-test"  # RabbitMQ reserves the prefix: an ERROR frame
    with pytest.raises(PublishNotConfirmed):
        transport.send(envelope(1), queue=name)
    with pytest.raises(PublishNotConfirmed):
        transport.send_many([envelope(2), envelope(3)], queue=name)
    transport.send(envelope(4))  # the transport carries on
    [got] = receive(transport)
    transport.ack(got)
