"""What is particular to SQS, checked on moto's server through real HTTP and boto3.

Queues (dead-letter queue, redrive policy, sizes, names), the wire format
as a foreign client sees it, long polling, delays in hops, FIFO queues,
settling (batches, stale handles, reject), stats, and secrets.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections.abc import Mapping
from typing import Any

import pytest

from courier.envelope import Envelope
from courier.errors import MessageTooLarge, PublishNotConfirmed, TransportError
from courier.serializer import JsonSerializer
from courier.testing.contract import ContractMessage, contract_serializer
from courier_sqs import SqsTransport

pytestmark = pytest.mark.sqs


def envelope(n: int = 1, text: str = "hello", **changes: Any) -> Envelope:
    return Envelope(ContractMessage(n=n, text=text), **changes)


def receive(transport: SqsTransport, count: int = 1, timeout: float = 5.0, **kw: Any) -> list[Any]:
    deadline = time.monotonic() + timeout
    got: list[Any] = []
    while len(got) < count and time.monotonic() < deadline:
        got += transport.receive(max=count - len(got), timeout=deadline - time.monotonic(), **kw)
    return got


def attributes(janitor: Any, sqs_name: str, *names: str) -> dict[str, str]:
    url = janitor.queue_url(sqs_name)
    found: dict[str, str] = janitor.sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=list(names) or ["All"]
    )["Attributes"]
    return found


# -- queues ------------------------------------------------------------------------


def test_setup_creates_the_queue_its_dead_letter_queue_and_the_redrive(janitor: Any) -> None:
    transport = janitor.transport(lease="7", max_receive_count="12")
    transport.setup()
    queue = attributes(janitor, transport.queue)
    dead = attributes(janitor, f"{transport.queue}-dead")
    assert queue["VisibilityTimeout"] == "7"
    assert json.loads(queue["RedrivePolicy"]) == {
        "deadLetterTargetArn": dead["QueueArn"],
        "maxReceiveCount": 12,
    }
    assert dead["MessageRetentionPeriod"] == str(14 * 24 * 3600)
    transport.setup()  # idempotent


def test_setup_adds_the_redrive_to_a_queue_made_elsewhere_and_keeps_the_rest(
    janitor: Any,
) -> None:
    name = janitor.name()
    janitor.sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "45"})
    transport = janitor.transport(name)
    transport.setup()
    queue = attributes(janitor, name)
    assert queue["VisibilityTimeout"] == "45"
    assert json.loads(queue["RedrivePolicy"])["maxReceiveCount"] == 20


def test_without_auto_setup_a_missing_queue_is_an_error_until_setup(janitor: Any) -> None:
    transport = janitor.transport(auto_setup="false")
    with pytest.raises(PublishNotConfirmed, match="does not exist") as caught:
        transport.send(envelope(1))
    assert len(caught.value.failed_ids) == 1
    with pytest.raises(TransportError, match="does not exist"):
        transport.receive(max=1, timeout=0)
    assert transport.stats()[0].ready is None
    transport.setup()
    transport.send(envelope(2))
    [got] = receive(transport)
    assert got.envelope.message.n == 2
    transport.ack(got)


def test_a_queue_deleted_under_the_transport_is_made_again(janitor: Any) -> None:
    transport = janitor.transport()
    transport.send(envelope(1))
    janitor.sqs.delete_queue(QueueUrl=janitor.queue_url(transport.queue))
    with pytest.raises(PublishNotConfirmed):
        transport.send(envelope(2))  # the cached URL is gone: forgotten
    transport.send(envelope(3))  # looked up again, and created
    [got] = receive(transport)
    assert got.envelope.message.n == 3
    transport.ack(got)


def test_the_redrive_policy_is_the_backstop_past_max_receive_count(janitor: Any) -> None:
    transport = janitor.transport(max_receive_count="2")
    transport.setup()
    sent = transport.send(envelope(1))
    counts = []
    while got := transport.receive(max=1, timeout=1.0):
        counts.append(got[0].delivery_count)
        transport.release(got[0])
    assert counts == [1, 2]
    [dead] = janitor.receive_raw(f"{transport.queue}-dead")
    assert dead["MessageAttributes"]["courier-id"]["StringValue"] == sent.id


def test_the_queues_maximum_message_size_is_honoured_before_sending(janitor: Any) -> None:
    name = janitor.name()
    janitor.sqs.create_queue(QueueName=name, Attributes={"MaximumMessageSize": "1024"})
    transport = janitor.transport(name)
    transport.send(envelope(1))  # learns the queue's limit
    assert transport.capabilities.max_message_size == 1024
    with pytest.raises(MessageTooLarge) as caught:
        transport.send(envelope(2, text="x" * 1000))
    assert caught.value.limit == 1024
    # Attributes count towards the size, as SQS counts them.
    body_only = len(b'{"n":3,"text":""}') + 900
    assert body_only < 1024
    with pytest.raises(MessageTooLarge):
        transport.send(envelope(3, text="y" * 900))
    with pytest.raises(PublishNotConfirmed) as batch:
        transport.send_many([envelope(4), envelope(5, text="z" * 1000), envelope(6)])
    assert len(batch.value.failed_ids) == 1
    got = receive(transport, 3)
    assert sorted(r.envelope.message.n for r in got) == [1, 4, 6]
    transport.ack_many(got)


def test_a_queue_given_by_its_url(janitor: Any, sqs_endpoint: str) -> None:
    name = janitor.name()
    url = str(janitor.sqs.create_queue(QueueName=name)["QueueUrl"])
    transport = SqsTransport(
        f"sqs://a:b@?region=us-east-1&queue={url}", serializer=contract_serializer()
    )
    janitor.transports.append(transport)
    assert transport.queue == name
    assert transport.address.endpoint_url == sqs_endpoint
    sent = transport.send(envelope(1))
    [got] = receive(transport)
    assert got.envelope.id == sent.id
    assert got.queue == name
    transport.ack(got)


# -- the wire format, as others see it -------------------------------------------


def test_a_message_is_json_with_courier_headers_as_attributes(
    janitor: Any, transport: SqsTransport
) -> None:
    sent = transport.send(envelope(4, headers={"x-tenant": "acme"}))
    [raw] = janitor.receive_raw(transport.queue)
    assert raw["Body"] == '{"n":4,"text":"hello"}'
    assert raw["MessageId"] == sent.transport_message_id
    shown = {name: value["StringValue"] for name, value in raw["MessageAttributes"].items()}
    assert shown == {
        "content-type": "application/json",
        "courier-type": "courier.contract.message",
        "courier-id": sent.id,
        "courier-created": repr(sent.timestamp),
        "x-tenant": "acme",
    }


def test_more_headers_than_attributes_travel_in_the_body(
    janitor: Any, transport: SqsTransport
) -> None:
    headers = {f"x-header-{n}": f"value {n}" for n in range(12)}
    sent = transport.send(envelope(5, headers=headers))
    raw = janitor.sqs.receive_message(
        QueueUrl=janitor.queue_url(transport.queue),
        WaitTimeSeconds=1,
        MessageAttributeNames=["All"],
        VisibilityTimeout=0,
    )["Messages"][0]
    assert raw["MessageAttributes"]["courier-encoding"]["StringValue"] == "packed"
    assert len(raw["MessageAttributes"]) <= 10
    [got] = receive(transport)
    assert got.envelope == sent.with_(transport_message_id=got.envelope.transport_message_id)
    assert dict(got.envelope.headers) == headers
    transport.ack(got)


class Zipped:
    """A serializer whose bodies are binary: zlib-compressed JSON."""

    content_type = "application/x-zlib-json"

    def __init__(self) -> None:
        self.inner: JsonSerializer = contract_serializer()
        self.max_body = self.inner.max_body

    def encode(self, envelope: Envelope) -> tuple[bytes, dict[str, str]]:
        body, headers = self.inner.encode(envelope)
        return zlib.compress(body), headers

    def decode(self, body: bytes, headers: Mapping[str, str]) -> Envelope:
        return self.inner.decode(zlib.decompress(body), headers)


def test_binary_bodies_round_trip(janitor: Any) -> None:
    transport = janitor.transport(serializer=Zipped())
    sent = transport.send(envelope(6, text="\x00\x01 binary after compression " * 3))
    [got] = receive(transport)
    assert got.envelope.message == sent.message
    assert got.envelope.id == sent.id
    transport.ack(got)


def test_a_foreign_producers_message_is_understood(janitor: Any, transport: SqsTransport) -> None:
    janitor.sqs.send_message(
        QueueUrl=janitor.queue_url(transport.queue),
        MessageBody='{"n": 7}',
        MessageAttributes={
            "courier-type": {"DataType": "String", "StringValue": "courier.contract.message"},
            "courier-id": {"DataType": "String", "StringValue": "foreign-1"},
            "tenant-id": {"DataType": "Number", "StringValue": "42"},
        },
    )
    [got] = receive(transport)
    assert got.envelope.id == "foreign-1"
    assert got.envelope.message.n == 7
    assert dict(got.envelope.headers) == {"tenant-id": "42"}
    assert got.delivery_count == 1
    transport.ack(got)


# -- receiving ---------------------------------------------------------------------


def test_an_empty_receive_waits_its_timeout_without_busy_polling(transport: SqsTransport) -> None:
    started = time.monotonic()
    assert transport.receive(max=10, timeout=2.0) == []  # one long poll (wait_time=1: two)
    assert 0.9 <= time.monotonic() - started < 4
    started = time.monotonic()
    assert transport.receive(max=10, timeout=0.3) == []  # under a second: one poll, a sleep
    assert 0.25 <= time.monotonic() - started < 1.5
    threading.Timer(0.3, lambda: transport.send(envelope(1))).start()
    got = transport.receive(max=10, timeout=1.0)
    assert [r.envelope.message.n for r in got] == [1]
    transport.ack_many(got)


def test_several_queues_first_come_first_and_never_more_than_max(janitor: Any) -> None:
    transport = janitor.transport()
    first, second = janitor.name("a"), janitor.name("b")
    transport.setup([first, second])
    transport.send_many([envelope(n) for n in range(3)], second)
    transport.send(envelope(9), first)
    got = transport.receive([first, second], max=10, timeout=1)
    assert [(r.queue, r.envelope.message.n) for r in got] == [(first, 9)]
    transport.ack_many(got)
    got = receive(transport, 3, queues=[first, second])
    assert sorted(r.envelope.message.n for r in got) == [0, 1, 2]
    transport.ack_many(got)
    # Both empty: they are waited on at once, and max is shared.
    threading.Timer(
        0.3, lambda: transport.send_many([envelope(n) for n in range(5)], first)
    ).start()
    threading.Timer(
        0.3, lambda: transport.send_many([envelope(n) for n in range(5)], second)
    ).start()
    got = transport.receive([first, second], max=3, timeout=2)
    assert 1 <= len(got) <= 3
    rest = receive(transport, 10 - len(got), queues=[first, second])
    transport.ack_many(got + rest)
    assert len(got) + len(rest) == 10


def test_a_delay_longer_than_sqs_allows_is_sent_on_in_hops(
    janitor: Any, transport: SqsTransport
) -> None:
    # A message sent with the maximum 900 s whose due time is two seconds
    # away when it arrives: the receiving transport sends it on for the rest.
    sent = envelope(8)
    body, headers = transport.serializer.encode(sent)
    due = time.time() + 2.0
    janitor.send_raw(transport.queue, body.decode(), {**headers, "courier-due": repr(due)})
    assert transport.receive(max=1, timeout=1) == []  # taken, sent on, deleted
    [got] = receive(transport, timeout=5)
    assert time.time() >= due - 0.1
    assert got.envelope.id == sent.id
    assert "courier-due" not in got.envelope.headers
    transport.ack(got)
    assert janitor.count(transport.queue) == 0


def test_a_delayed_send_is_stats_delayed_then_ready(transport: SqsTransport) -> None:
    transport.send(envelope(1, delay=2))
    stats = transport.stats()[0]
    assert (stats.ready, stats.delayed) == (0, 1)
    [got] = receive(transport, timeout=5)
    stats = transport.stats()[0]
    assert (stats.ready, stats.in_flight, stats.delayed, stats.dead) == (0, 1, 0, 0)
    transport.ack(got)


# -- settling ----------------------------------------------------------------------


def test_ack_many_deletes_in_batches_across_queues_and_ignores_stale_handles(
    janitor: Any,
) -> None:
    transport = janitor.transport(lease="1")
    other = janitor.name("other")
    transport.setup([other])
    transport.send_many([envelope(n) for n in range(15)])
    transport.send_many([envelope(n) for n in range(12)], other)
    got = receive(transport, 15) + receive(transport, 12, queues=[other])
    assert len(got) == 27
    transport.ack_many(got)
    transport.ack_many(got)  # already deleted: nothing to complain about
    assert janitor.count(transport.queue) == janitor.count(janitor.queue_url(other) and other) == 0


def test_reject_moves_the_message_as_it_came_with_the_reason(
    janitor: Any, transport: SqsTransport, caplog: pytest.LogCaptureFixture
) -> None:
    sent = transport.send(envelope(1, headers={"x-tenant": "acme"}))
    [got] = receive(transport)
    with caplog.at_level(logging.WARNING, logger="courier.sqs"):
        transport.reject(got, "NoSuchCustomer: 42")
    assert "NoSuchCustomer: 42" in caplog.text
    assert transport.stats()[0].dead == 1
    [dead] = janitor.receive_raw(f"{transport.queue}-dead")
    assert dead["Body"] == '{"n":1,"text":"hello"}'
    shown = {name: value["StringValue"] for name, value in dead["MessageAttributes"].items()}
    assert shown["courier-id"] == sent.id
    assert shown["x-tenant"] == "acme"
    assert shown["courier-rejected"] == "NoSuchCustomer: 42"
    assert transport.receive(max=1, timeout=1.2) == []


def test_retry_sends_the_new_attempt_then_deletes_the_old(
    janitor: Any, transport: SqsTransport
) -> None:
    transport.send(envelope(1))
    [got] = receive(transport)
    transport.retry(got, got.envelope.with_(attempt=2, received=None), 0)
    [again] = receive(transport)
    assert again.envelope.attempt == 2
    assert again.delivery_count == 1  # a new message to SQS
    transport.ack(again)
    assert janitor.count(transport.queue) == 0


# -- FIFO --------------------------------------------------------------------------


def test_fifo_queues_keep_order_per_group_and_deduplicate_by_envelope_id(janitor: Any) -> None:
    transport = janitor.transport(f"{janitor.name()}.fifo", message_group="g")
    transport.setup()
    sqs_name = transport.queue
    batch = [envelope(n) for n in range(15)]
    transport.send_many(batch)  # two requests, one after the other
    transport.send(batch[0])  # a send retried after a lost answer: stored once
    first = receive(transport, 10)  # one group: the next only once these are done
    assert [r.envelope.message.n for r in first] == list(range(10))
    transport.ack_many(first)
    got = receive(transport, 5)
    assert [r.envelope.message.n for r in got] == [10, 11, 12, 13, 14]
    assert transport.receive(max=10, timeout=1) == []
    # A retry is a new attempt (a new deduplication id) in the same group.
    transport.retry(got[0], got[0].envelope.with_(attempt=2, received=None), 0)
    transport.ack_many(got[1:])
    [again] = receive(transport)
    assert (again.envelope.message.n, again.envelope.attempt) == (10, 2)
    transport.reject(again, "no")
    [dead] = janitor.receive_raw(sqs_name.replace(".fifo", "-dead.fifo"))
    assert dead["Attributes"]["MessageGroupId"] == "g"
    grouped = transport.send(envelope(9, headers={"sqs-message-group-id": "customer-7"}))
    [raw] = janitor.receive_raw(sqs_name)
    assert raw["Attributes"]["MessageGroupId"] == "customer-7"
    assert raw["Attributes"]["MessageDeduplicationId"] == grouped.id


# -- threads and secrets -----------------------------------------------------------


def test_threads_can_share_one_transport(janitor: Any) -> None:
    transport = janitor.transport(lease="20")  # none comes back while the hundred are taken

    def produce(start: int) -> None:
        transport.send_many([envelope(n) for n in range(start, start + 25)])

    threads = [threading.Thread(target=produce, args=(start,)) for start in (0, 25, 50, 75)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    got = receive(transport, 100, timeout=20)
    transport.ack_many(got)
    assert sorted(r.envelope.message.n for r in got) == list(range(100))


def test_no_output_shows_the_secret_key(
    janitor: Any, sqs_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret, token, key = "s3cr3t-courier-key", "t0k3n-of-a-session", "AKIDCOURIERTEST"
    assert secret in sqs_url
    with caplog.at_level(logging.DEBUG):
        transport = janitor.transport(session_token=token)
        transport.setup()
        transport.send(envelope(1))
        [got] = receive(transport)
        transport.ack(got)
        nowhere = janitor.transport(
            url=sqs_url.replace(sqs_url.split("@")[1].split("?")[0], "127.0.0.1:1"),
            max_attempts="1",
        )
        with pytest.raises(TransportError) as caught:
            nowhere.send(envelope(2))
    assert "Sending http request" in caplog.text  # botocore's DEBUG lines were there
    for text in (caplog.text, str(caught.value), repr(caught.value), repr(transport)):
        assert secret not in text
        assert token not in text
        assert key not in text
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
