"""Events on SQS: through SNS topics with raw delivery, or one send per subscription queue.

Either way the subscriptions are found by a producer that imports none
of the consumers: SNS's subscription list, or the queues ``setup`` tagged.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from courier.envelope import Envelope
from courier.errors import PublishNotConfirmed
from courier.testing.contract import ContractEvent
from courier_sqs import SqsTransport

pytestmark = pytest.mark.sqs


def receive_one(transport: SqsTransport, queue: str, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = transport.receive([queue], max=1, timeout=1)
        if got:
            return got[0]
    raise AssertionError(f"nothing arrived on {queue}")


def test_without_sns_a_producer_that_knows_no_subscription_reaches_the_recorded_ones(
    janitor: Any,
) -> None:
    consumer = janitor.transport()
    topic = janitor.name("topic")
    consumer.setup(topics={topic: ["mail", "audit.log"]})
    tags = janitor.sqs.list_queue_tags(QueueUrl=janitor.queue_url(f"{topic}_audit_log"))["Tags"]
    assert tags == {"courier-topic": topic, "courier-subscription": "audit.log"}
    producer = janitor.transport(consumer.queue, subscription_ttl="60")
    assert producer.subscriptions(topic) == ["audit.log", "mail"]
    event = Envelope(ContractEvent(n=1), headers={"x-tenant": "acme"})
    producer.publish(event, topic, [])
    for name in ("mail", "audit.log"):
        got = receive_one(consumer, f"{topic}.{name}")
        assert got.envelope.id == event.id
        assert got.envelope.headers["x-tenant"] == "acme"
        assert got.queue == f"{topic}.{name}"
        consumer.ack(got)
    # A recorded subscription whose queue is gone is not an error; a named one is.
    janitor.sqs.delete_queue(QueueUrl=janitor.queue_url(f"{topic}_mail"))
    producer.topics.forget(topic)
    producer.publish(Envelope(ContractEvent(n=2)), topic, [])
    consumer.ack(receive_one(consumer, f"{topic}.audit.log"))
    lonely = janitor.transport(consumer.queue, auto_setup="false")
    with pytest.raises(PublishNotConfirmed, match="1 of 2 subscriptions"):
        lonely.publish(Envelope(ContractEvent(n=3)), topic, ["mail"])


def test_with_sns_one_publish_reaches_every_subscription_with_its_attributes(
    janitor: Any,
) -> None:
    options = {"sns": "true", "topic_prefix": f"sns-{janitor.tag}-"}
    consumer = janitor.transport(**options)
    topic = janitor.name("topic")
    consumer.setup(topics={topic: ["mail", "audit"]})
    arn = consumer.topics.topic_arn(topic)
    assert arn.endswith(f":sns-{janitor.tag}-{topic}")
    subscriptions = janitor.sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]
    assert len(subscriptions) == 2
    for subscription in subscriptions:
        found = janitor.sns.get_subscription_attributes(
            SubscriptionArn=subscription["SubscriptionArn"]
        )["Attributes"]
        assert found["RawMessageDelivery"] == "true"
    policy = janitor.sqs.get_queue_attributes(
        QueueUrl=janitor.queue_url(f"{topic}_mail"), AttributeNames=["Policy"]
    )["Attributes"]["Policy"]
    assert arn in policy

    producer = janitor.transport(consumer.queue, **options)  # imports no consumer
    assert producer.subscriptions(topic) == ["audit", "mail"]
    event = Envelope(ContractEvent(n=1), headers={"x-tenant": "acme"})
    producer.publish(event, topic, [])
    for name in ("mail", "audit"):
        got = receive_one(consumer, f"{topic}.{name}")
        assert got.envelope.id == event.id
        assert got.envelope.message == ContractEvent(n=1)
        assert got.envelope.headers["x-tenant"] == "acme"
        consumer.ack(got)
    # SNS has no delays: a delayed event goes to each subscription queue itself.
    delayed = Envelope(ContractEvent(n=2), delay=1)
    producer.publish(delayed, topic, [])
    assert consumer.receive([f"{topic}.mail"], max=1, timeout=0.5) == []
    for name in ("mail", "audit"):
        got = receive_one(consumer, f"{topic}.{name}")
        assert got.envelope.id == delayed.id
        consumer.ack(got)


def test_fifo_events_through_a_fifo_sns_topic_keep_their_order_and_group(janitor: Any) -> None:
    prefix = f"sns-{janitor.tag}-"
    transport = janitor.transport(f"{janitor.name()}.fifo", sns="true", topic_prefix=prefix)
    topic = janitor.name("topic")
    transport.setup(topics={topic: ["mail"]})
    assert transport.topics.topic_arn(topic).endswith(f":{prefix}{topic}.fifo")
    events = [Envelope(ContractEvent(n=n)) for n in range(3)]
    for event in events:
        transport.publish(event, topic, ["mail"])
    got: list[Any] = []
    deadline = time.monotonic() + 5
    while len(got) < 3 and time.monotonic() < deadline:
        got += transport.receive([f"{topic}.mail"], max=10, timeout=1)
    assert [r.envelope.id for r in got] == [e.id for e in events]
    assert {r.handle.group for r in got} == {"courier"}
    transport.ack_many(got)
