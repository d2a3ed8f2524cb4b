"""Fixtures for the SQS adapter's tests: moto's server, and a janitor.

The broker is moto's server on loopback, started by this test session on a
free port (``moto.server.ThreadedMotoServer``) and stopped at its end:
real HTTP, real boto3, nothing mocked. ``COURIER_TEST_SQS_URL`` names
another one instead (``http://127.0.0.1:4566`` or an ``sqs://`` DSN); it
must be reachable, and under ``CI=true`` a missing one is a failure
(:func:`courier.testing.services.require_tcp`). Subprocess workers reach
the server through its URL.

The ``janitor`` makes transports on uniquely named queues with small
timings, a raw boto3 client for foreign producers and for looking at the
broker, and deletes every queue and topic of the test when it ends.
"""

from __future__ import annotations

import functools
import logging
import os
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import boto3
import pytest

from courier.serializer import Serializer
from courier.testing.contract import contract_serializer
from courier.testing.services import require_tcp
from courier.transports.dsn import Dsn
from courier_sqs import SqsTransport

#: The access key pair the tests use; moto accepts any.
KEY, SECRET = "AKIDCOURIERTEST", "s3cr3t-courier-key"
REGION = "us-east-1"

#: Small timings so the whole adapter suite stays well under two minutes.
FAST = {"wait_time": "1", "lease": "1", "connect_timeout": "2", "subscription_ttl": "0"}


def _quicken_moto() -> None:
    """Make two helpers of moto's SQS model cheap, without changing what they return.

    moto 5 reads the clock through a datetime round trip (30 us a call) and
    converts attribute names with a regex loop, and it does both for every
    message of the queue on every send, receive and delete: a backlog of a
    hundred costs half a second per request. ``time.time()`` and a cached
    conversion return the same values, so the server behaves exactly as
    before, only faster. (A server named by COURIER_TEST_SQS_URL runs as it is.)
    """
    import moto.sqs.models as models

    slow_time, slow_millis = models.unix_time, models.unix_time_millis

    def unix_time(dt: Any = None) -> float:
        return time.time() if dt is None else float(slow_time(dt))

    def unix_time_millis(dt: Any = None) -> float:
        return time.time() * 1000.0 if dt is None else float(slow_millis(dt))

    models.unix_time = unix_time
    models.unix_time_millis = unix_time_millis
    models.camelcase_to_underscores = functools.lru_cache(maxsize=256)(  # type: ignore[assignment]
        models.camelcase_to_underscores
    )


def _external() -> tuple[str, int] | None:
    text = os.environ.get("COURIER_TEST_SQS_URL")
    if not text:
        return None
    dsn = Dsn.parse(text)
    return dsn.host or "127.0.0.1", dsn.port or (80 if dsn.scheme == "http" else 443)


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of the SQS (and SNS) server for this session."""
    external = _external()
    if external is not None:
        require_tcp("SQS (moto)", *external)
        yield f"http://{external[0]}:{external[1]}"
        return
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    _quicken_moto()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def sqs_url(sqs_endpoint: str) -> str:
    """The DSN of the server, without a queue: ``sqs://KEY:SECRET@127.0.0.1:PORT?...``."""
    address = sqs_endpoint.split("://", 1)[1]
    return f"sqs://{KEY}:{SECRET}@{address}?region={REGION}&sslmode=disable"


def raw_client(endpoint: str, service: str = "sqs") -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
    )


def dsn_for(url: str, queue: str, **options: str) -> str:
    """``url`` (a DSN without a queue) for ``queue`` with the fast timings and ``options``."""
    dsn = Dsn.parse(url)
    return dsn.with_options(queue=queue, **{**FAST, **options}).render(reveal=True)


class Janitor:
    """Makes uniquely named transports and a raw boto3 client; deletes it all afterwards."""

    def __init__(self, url: str, endpoint: str) -> None:
        self.url = url
        self.endpoint = endpoint
        self.tag = f"t{uuid.uuid4().hex[:10]}"
        self.transports: list[SqsTransport] = []
        self.sqs = raw_client(endpoint)
        self._sns: Any = None

    @property
    def sns(self) -> Any:
        if self._sns is None:
            self._sns = raw_client(self.endpoint, "sns")
        return self._sns

    def name(self, what: str = "q") -> str:
        return f"{self.tag}-{what}-{uuid.uuid4().hex[:6]}"

    def dsn(self, queue: str, *, url: str | None = None, **options: str) -> str:
        return dsn_for(url or self.url, queue, **options)

    def transport(
        self,
        queue: str | None = None,
        serializer: Serializer | None = None,
        *,
        url: str | None = None,
        name: str = "sqs",
        **options: str,
    ) -> SqsTransport:
        dsn = self.dsn(queue or self.name(), url=url, **options)
        transport = SqsTransport(dsn, name=name, serializer=serializer or contract_serializer())
        self.transports.append(transport)
        return transport

    def queue_url(self, sqs_name: str) -> str:
        return str(self.sqs.get_queue_url(QueueName=sqs_name)["QueueUrl"])

    def send_raw(
        self,
        sqs_name: str,
        body: str,
        attributes: Mapping[str, str] | None = None,
        **params: Any,
    ) -> str:
        """``body`` straight onto the queue with String attributes, as boto3 sends them."""
        message_attributes = {
            name: {"DataType": "String", "StringValue": value}
            for name, value in (attributes or {}).items()
        }
        answer = self.sqs.send_message(
            QueueUrl=self.queue_url(sqs_name),
            MessageBody=body,
            MessageAttributes=message_attributes,
            **params,
        )
        return str(answer["MessageId"])

    def receive_raw(self, sqs_name: str, wait: int = 1) -> list[dict[str, Any]]:
        """Messages taken off the queue by boto3 (and deleted), with every attribute."""
        url = self.queue_url(sqs_name)
        answer = self.sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=wait,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = answer.get("Messages", [])
        for message in messages:
            self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return messages

    def count(self, sqs_name: str) -> int:
        """Messages on the queue, visible or not."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.queue_url(sqs_name),
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(value) for value in attributes.values())

    def cleanup(self) -> None:
        for transport in self.transports:
            transport.close()
        urls = self.sqs.list_queues(QueueNamePrefix=self.tag).get("QueueUrls", [])
        for url in urls:
            self.sqs.delete_queue(QueueUrl=url)
        if self._sns is not None:
            for topic in self._sns.list_topics().get("Topics", []):
                arn = topic["TopicArn"]
                if f":{self.tag}" in arn or f":sns-{self.tag}" in arn:
                    self._sns.delete_topic(TopicArn=arn)
            self._sns.close()
        self.sqs.close()


@pytest.fixture
def janitor(sqs_url: str, sqs_endpoint: str) -> Iterator[Janitor]:
    keeper = Janitor(sqs_url, sqs_endpoint)
    try:
        yield keeper
    finally:
        keeper.cleanup()


@pytest.fixture
def transport(janitor: Janitor) -> SqsTransport:
    transport = janitor.transport()
    transport.setup()
    return transport
