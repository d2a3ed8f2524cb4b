"""Events: one queue per subscription, fed by SNS or by one send per queue.

Every subscription of topic ``t`` has its queue ``t.<subscription>``
(``t_<subscription>`` on SQS), tagged ``courier-topic`` and
``courier-subscription`` when it is created, so the subscriptions of a
topic can be found by a producer that never imported the consumers:

- with ``sns=true``, one SNS topic ``<topic_prefix>t`` per courier topic,
  which every subscription queue subscribes to with raw message delivery
  (so the body and message attributes arrive untouched). A publish is one
  SNS request; SNS's subscription list *is* the list of subscriptions. A
  delayed event cannot go through SNS (it has no delays): it is sent to
  each subscription queue, with the delay.
- without SNS, a publish sends one copy to each subscription queue: the
  ones the producer knows, and the ones recorded on SQS (queues named
  ``t_*`` tagged for topic ``t``), looked up at most every
  ``subscription_ttl`` seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from courier.envelope import Envelope
from courier.errors import ConfigurationError, MessageTooLarge, PublishNotConfirmed, TransportError
from courier.transports.base import subscription_queue
from courier_sqs.address import FIFO
from courier_sqs.connection import MISSING, Connection, Refused
from courier_sqs.options import DEFAULT_MAX_MESSAGE_SIZE
from courier_sqs.sending import GROUP_HEADER, deduplication_id
from courier_sqs.wire import Outgoing

__all__ = ["SUBSCRIPTION_TAG", "TOPIC_TAG", "Topics"]

logger = logging.getLogger("courier.sqs")

TOPIC_TAG = "courier-topic"
SUBSCRIPTION_TAG = "courier-subscription"

#: Sends one copy to a courier queue that exists (the transport's own send path).
SendToQueue = Callable[[Envelope, Outgoing, str], None]


class Topics:
    """Publishing to a topic's subscriptions, and finding them; see the module docstring."""

    def __init__(self, connection: Connection, send_to_queue: SendToQueue) -> None:
        self.connection = connection
        self.options = connection.options
        self._send_to_queue = send_to_queue
        self._lock = threading.Lock()
        self._recorded: dict[str, tuple[float, list[str]]] = {}
        self._arns: dict[str, str] = {}
        self._ready: set[tuple[str, str]] = set()

    # -- publishing ----------------------------------------------------------------

    def publish(
        self, envelope: Envelope, out: Outgoing, topic: str, subscriptions: Sequence[str]
    ) -> None:
        if self.options.sns and out.delay_seconds == 0:
            if out.size > DEFAULT_MAX_MESSAGE_SIZE:
                raise MessageTooLarge(out.size, DEFAULT_MAX_MESSAGE_SIZE)  # SNS's own limit
            if self.options.auto_setup:
                for name in subscriptions:
                    self.ensure(topic, name)
            self._publish_sns(envelope, out, topic)
            return
        names = sorted({*subscriptions, *self.subscriptions(topic)})
        failed: list[str] = []
        for name in names:
            queue = subscription_queue(topic, name)
            try:
                if self.options.auto_setup and name in subscriptions:
                    self.ensure(topic, name)
                self._send_to_queue(envelope, out, queue)
            except Refused as error:
                if error.code in MISSING and name not in subscriptions:
                    # Recorded, since deleted: nobody listens there any more.
                    self.forget(topic)
                    continue
                failed.append(f"{name}: {error}")
            except TransportError as error:
                failed.append(f"{name}: {error}")
        if failed:
            raise PublishNotConfirmed(
                f"event {envelope.id} reached {len(names) - len(failed)} of {len(names)} "
                f"subscriptions of {topic!r}: {failed[0]}",
                [envelope.id],
            )

    def _publish_sns(self, envelope: Envelope, out: Outgoing, topic: str) -> None:
        params: dict[str, Any] = {"TopicArn": self.topic_arn(topic), "Message": out.body}
        if out.attributes:
            params["MessageAttributes"] = out.attributes
        if self.connection.names.fifo:
            params["MessageGroupId"] = (
                envelope.headers.get(GROUP_HEADER) or self.options.message_group
            )
            params["MessageDeduplicationId"] = deduplication_id(envelope)
        try:
            with self.connection.errors():
                self.connection.client("sns").publish(**params)
        except TransportError as error:
            raise PublishNotConfirmed(
                f"event {envelope.id} to SNS topic {self.sns_name(topic)!r}: {error}",
                [envelope.id],
            ) from None

    # -- finding subscriptions -----------------------------------------------------

    def subscriptions(self, topic: str) -> list[str]:
        """The subscriptions recorded for ``topic`` (cached ``subscription_ttl`` seconds)."""
        cached = self._recorded.get(topic)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self.options.subscription_ttl:
            return cached[1]
        found = self._subscribers_sns(topic) if self.options.sns else self._subscribers(topic)
        self._recorded[topic] = (now, found)
        return found

    def forget(self, topic: str) -> None:
        self._recorded.pop(topic, None)

    def _subscribers(self, topic: str) -> list[str]:
        prefix = self.connection.names.base(topic) + "_"
        urls: list[str] = []
        client = self.connection.client()
        token: str | None = None
        with self.connection.errors():
            while True:
                params: dict[str, Any] = {"QueueNamePrefix": prefix, "MaxResults": 1000}
                if token:
                    params["NextToken"] = token
                answer = client.list_queues(**params)
                urls += answer.get("QueueUrls", [])
                token = answer.get("NextToken")
                if not token:
                    break
        return self._tagged(topic, urls)

    def _subscribers_sns(self, topic: str) -> list[str]:
        arn = self.topic_arn(topic, create=False)
        sns = self.connection.client("sns")
        queues: list[str] = []
        token: str | None = None
        try:
            with self.connection.errors():
                while True:
                    params: dict[str, Any] = {"TopicArn": arn}
                    if token:
                        params["NextToken"] = token
                    answer = sns.list_subscriptions_by_topic(**params)
                    for item in answer.get("Subscriptions", []):
                        if item.get("Protocol") == "sqs":
                            queues.append(str(item["Endpoint"]).rsplit(":", 1)[-1])
                    token = answer.get("NextToken")
                    if not token:
                        break
        except Refused as error:
            if error.code == "NotFound":
                return []
            raise
        urls = []
        client = self.connection.client()
        for name in queues:
            try:
                with self.connection.errors():
                    urls.append(client.get_queue_url(QueueName=name)["QueueUrl"])
            except Refused as error:
                if error.code not in MISSING:
                    raise
        return self._tagged(topic, urls)

    def _tagged(self, topic: str, urls: Sequence[str]) -> list[str]:
        client = self.connection.client()
        found = set()
        for url in urls:
            with self.connection.errors():
                tags = client.list_queue_tags(QueueUrl=url).get("Tags", {})
            if tags.get(TOPIC_TAG) == topic and tags.get(SUBSCRIPTION_TAG):
                found.add(tags[SUBSCRIPTION_TAG])
        return sorted(found)

    # -- declaring -------------------------------------------------------------------

    def ensure(self, topic: str, subscription: str, *, force: bool = False) -> None:
        """Declare the subscription queue (tagged) and, with SNS, subscribe it to the topic."""
        if (topic, subscription) in self._ready and not force:
            return
        queue = subscription_queue(topic, subscription)
        info = self.connection.declare(
            queue, tags={TOPIC_TAG: topic, SUBSCRIPTION_TAG: subscription}
        )
        if self.options.sns:
            arn = self.topic_arn(topic)
            self._allow(info.url, info.arn, arn)
            with self.connection.errors():
                self.connection.client("sns").subscribe(
                    TopicArn=arn,
                    Protocol="sqs",
                    Endpoint=info.arn,
                    Attributes={"RawMessageDelivery": "true"},
                    ReturnSubscriptionArn=True,
                )
        with self._lock:
            self._ready.add((topic, subscription))
        self.forget(topic)

    def sns_name(self, topic: str) -> str:
        name = self.options.topic_prefix + self.connection.names.base(topic)
        name += FIFO if self.connection.names.fifo else ""
        if len(name) > 256:
            raise ConfigurationError(f"SNS topic name {name!r} is over 256 characters")
        return name

    def topic_arn(self, topic: str, *, create: bool | None = None) -> str:
        """The SNS topic's ARN: created (idempotent) with auto_setup, else derived."""
        arn = self._arns.get(topic)
        if arn is not None:
            return arn
        name = self.sns_name(topic)
        if create is None:
            create = self.options.auto_setup
        if create:
            attributes = {"FifoTopic": "true"} if self.connection.names.fifo else {}
            with self.connection.errors():
                arn = str(
                    self.connection.client("sns").create_topic(Name=name, Attributes=attributes)[
                        "TopicArn"
                    ]
                )
        else:
            # arn:aws:sqs:REGION:ACCOUNT:queue -> arn:aws:sns:REGION:ACCOUNT:topic
            queue_arn = self.connection.queue(self.connection.address.queue, create=False).arn
            partition, _, region, account = queue_arn.split(":")[1:5]
            arn = f"arn:{partition}:sns:{region}:{account}:{name}"
        self._arns[topic] = arn
        return arn

    def _allow(self, url: str, queue_arn: str, topic_arn: str) -> None:
        """Let the topic send to the queue: one statement added to the queue's policy."""
        sid = "courier-sns-" + hashlib.sha256(topic_arn.encode()).hexdigest()[:16]
        client = self.connection.client()
        with self.connection.errors():
            current = client.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])
        text = current.get("Attributes", {}).get("Policy")
        policy: dict[str, Any] = (
            json.loads(text) if text else {"Version": "2012-10-17", "Statement": []}
        )
        statements: list[dict[str, Any]] = policy.setdefault("Statement", [])
        if any(statement.get("Sid") == sid for statement in statements):
            return
        statements.append(
            {
                "Sid": sid,
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }
        )
        with self.connection.errors():
            client.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps(policy)})
