"""Everything boto3: the clients, their errors, and the queues they know.

boto3 clients are thread-safe and speak HTTP: there is no connection to
lose, only requests that fail. botocore retries a failed request itself
(``max_attempts``, with backoff) before courier hears of it; what still
fails becomes :class:`~courier.errors.ConnectionLost` (no answer) or
:class:`Refused` (SQS answered with an error code). Every error text is
masked, and raised ``from None``, so neither its text nor a traceback can
carry the secret key.

A receipt handle is SQS's own token and does not belong to an HTTP
connection: an acknowledgement after a reconnect goes through
(``Unacked.KEPT``).

:class:`Connection` also remembers each queue's URL, ARN and maximum
message size (one lookup per queue and process), and creates a missing
queue with its dead-letter queue and redrive policy where asked.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from courier.errors import ConfigurationError, ConnectionLost, TransportError
from courier.transports.dsn import MASK, Dsn
from courier_sqs.address import Address, QueueNames
from courier_sqs.logmask import hide
from courier_sqs.options import DEFAULT_MAX_MESSAGE_SIZE, SqsOptions

__all__ = ["MISSING", "STALE", "Connection", "QueueInfo", "Refused"]

logger = logging.getLogger("courier.sqs")

#: Error codes for a queue that does not exist.
MISSING = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
#: Error codes for a receipt handle that no longer holds its message.
STALE = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "InvalidParameterValue",
        "AWS.SimpleQueueService.MessageNotInflight",
        "MessageNotInflight",
    }
)
#: One boto3 session per profile, shared: a session loads the service models
#: (a quarter of a second), its clients are then cheap. Not thread-safe itself,
#: hence the lock around making sessions and clients.
_sessions: dict[str | None, boto3.session.Session] = {}
_sessions_lock = threading.Lock()

#: A dead-letter queue keeps its messages for the longest SQS allows: 14 days.
DEAD_LETTER_RETENTION = 14 * 24 * 3600


class Refused(TransportError):
    """SQS or SNS answered a request with an error ``code``."""

    def __init__(self, code: str, text: str, *, sender_fault: bool = True) -> None:
        self.code = code
        self.sender_fault = sender_fault
        super().__init__(text)


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """What courier needs to know of one SQS queue."""

    name: str
    url: str
    arn: str
    max_size: int


class Connection:
    """The SQS (and SNS) clients of one transport, created on first use."""

    def __init__(self, dsn: Dsn, options: SqsOptions, address: Address, name: str) -> None:
        self.options = options
        self.address = address
        self.names = QueueNames(address.fifo, options.dead_letter_suffix)
        self._dsn = dsn
        self._name = name
        self._user_agent = f"courier/{name}"
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._queues: dict[str, QueueInfo] = {}
        self._closed = False

    # -- clients and errors ----------------------------------------------------

    def mask(self, text: str) -> str:
        """``text`` without the secret key, the session token (both the DSN's) or the key id."""
        text = self._dsn.mask(text)
        key = self._dsn.username
        if key and len(key) >= 3:
            text = text.replace(key, MASK)
        return text

    def identify(self, worker_id: str) -> None:
        """Name the worker in the User-Agent of requests (CloudTrail shows it)."""
        if not self._clients:
            self._user_agent = f"courier/{self._name} worker/{worker_id}".replace(" ", "_")

    def client(self, service: str = "sqs") -> Any:
        found = self._clients.get(service)
        if found is not None:
            return found
        with self._lock:
            if self._closed:
                raise ConnectionLost(f"transport {self._name!r} is closed")
            found = self._clients.get(service)
            if found is None:
                found = self._clients[service] = self._make(service)
            return found

    def _make(self, service: str) -> Any:
        options = self.options
        with self.errors(), _sessions_lock:
            session = _sessions.get(options.profile)
            if session is None:
                session = _sessions[options.profile] = boto3.session.Session(
                    profile_name=options.profile
                )
        region = self.address.region or session.region_name
        if region is None and self.address.endpoint_url is not None:
            region = "us-east-1"  # an emulator signs with any region
        if region is None:
            raise ConfigurationError(
                f"transport {self._name!r}: no AWS region; set region= in the DSN or "
                "AWS_DEFAULT_REGION"
            )
        config = Config(
            connect_timeout=options.connect_timeout,
            # A long poll waits up to wait_time before SQS answers.
            read_timeout=options.wait_time + max(10.0, options.connect_timeout),
            retries={"total_max_attempts": options.max_attempts, "mode": "standard"},
            max_pool_connections=32,
            user_agent_extra=self._user_agent,
        )
        make: Any = session.client  # typed per service name; courier passes it through
        token = options.session_token.get_secret_value() if options.session_token else None
        key = self._dsn.username if self._dsn.username and len(self._dsn.username) >= 3 else None
        with self.errors(), _sessions_lock:
            client = make(
                service,
                region_name=region,
                endpoint_url=self.address.endpoint_url,
                config=config,
                aws_access_key_id=self._dsn.username or None,
                aws_secret_access_key=self._dsn.password,
                aws_session_token=token,
            )
        hide(self._dsn.password, token, key)  # botocore logs signed requests at DEBUG
        return client

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Turn botocore's exceptions into courier's, masked and without their chain."""
        try:
            yield
        except ClientError as error:
            details = error.response.get("Error", {})
            code = str(details.get("Code", "unknown"))
            fault = details.get("Type") != "Receiver" and code not in ("InternalError",)
            raise Refused(code, self.mask(str(error)), sender_fault=fault) from None
        except (BotoConnectionError, HTTPClientError) as error:
            raise ConnectionLost(f"{self._endpoint()}: {self.mask(str(error))}") from None
        except (
            NoCredentialsError,
            PartialCredentialsError,
            NoRegionError,
            ProfileNotFound,
        ) as error:
            raise ConfigurationError(
                f"transport {self._name!r}: {self.mask(str(error))} (put KEY:SECRET in the DSN, "
                "or configure boto3's credential chain)"
            ) from None
        except BotoCoreError as error:
            raise TransportError(self.mask(str(error))) from None

    def _endpoint(self) -> str:
        return self.address.endpoint_url or f"SQS in {self.address.region or 'the default region'}"

    def close(self) -> None:
        with self._lock:
            self._closed = True
            clients, self._clients = self._clients, {}
        for client in clients.values():
            with contextlib.suppress(Exception):
                client.close()

    # -- queues ------------------------------------------------------------------

    def queue(self, name: str, *, create: bool) -> QueueInfo:
        """The queue courier calls ``name``: looked up once, created if missing and ``create``."""
        info = self._queues.get(name)
        if info is not None:
            return info
        url = self._url(name)
        if url is None:
            if not create:
                raise Refused(
                    "AWS.SimpleQueueService.NonExistentQueue",
                    f"queue {self.names.sqs(name)!r} does not exist (auto_setup is off: "
                    "run `courier setup`)",
                )
            return self.declare(name)
        return self._remember(name, url)

    def known(self, name: str) -> QueueInfo | None:
        """The queue's info if it was looked up already (no request)."""
        return self._queues.get(name)

    def forget(self, name: str) -> None:
        self._queues.pop(name, None)

    def _url(self, name: str) -> str | None:
        # By name (and owner) even where the DSN gave the queue's URL: the
        # answer is the same URL, and a missing queue is told apart.
        params: dict[str, str] = {"QueueName": self.names.sqs(name)}
        if self.address.owner:
            params["QueueOwnerAWSAccountId"] = self.address.owner
        try:
            with self.errors():
                return str(self.client().get_queue_url(**params)["QueueUrl"])
        except Refused as error:
            if error.code in MISSING:
                return None
            raise

    def _remember(self, name: str, url: str) -> QueueInfo:
        with self.errors():
            attributes = (
                self.client()
                .get_queue_attributes(
                    QueueUrl=url, AttributeNames=["QueueArn", "MaximumMessageSize"]
                )
                .get("Attributes", {})
            )
        info = QueueInfo(
            name,
            url,
            attributes.get("QueueArn", ""),
            int(attributes.get("MaximumMessageSize", DEFAULT_MAX_MESSAGE_SIZE)),
        )
        self._queues[name] = info
        return info

    def declare(self, name: str, tags: Mapping[str, str] | None = None) -> QueueInfo:
        """Create ``name`` with its dead-letter queue and redrive policy; idempotent.

        A queue that exists keeps its attributes, but gets the redrive policy
        if it has none.
        """
        fifo = {"FifoQueue": "true"} if self.names.fifo else {}
        dead_url = self._create(
            self.names.dead_letter(name),
            {**fifo, "MessageRetentionPeriod": str(DEAD_LETTER_RETENTION)},
            None,
        )
        with self.errors():
            dead_arn = (
                self.client()
                .get_queue_attributes(QueueUrl=dead_url, AttributeNames=["QueueArn"])
                .get("Attributes", {})["QueueArn"]
            )
        redrive = json.dumps(
            {"deadLetterTargetArn": dead_arn, "maxReceiveCount": self.options.max_receive_count}
        )
        url = self._url(name)
        if url is None:
            attributes = {
                **fifo,
                "VisibilityTimeout": str(self.options.visibility),
                "RedrivePolicy": redrive,
            }
            url = self._create(self.names.sqs(name), attributes, tags)
        else:
            with self.errors():
                current = (
                    self.client()
                    .get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
                    .get("Attributes", {})
                )
                if not current.get("RedrivePolicy"):
                    self.client().set_queue_attributes(
                        QueueUrl=url, Attributes={"RedrivePolicy": redrive}
                    )
                if tags:
                    self.client().tag_queue(QueueUrl=url, Tags=dict(tags))
        return self._remember(name, url)

    def _create(
        self, sqs_name: str, attributes: Mapping[str, str], tags: Mapping[str, str] | None
    ) -> str:
        params: dict[str, Any] = {"QueueName": sqs_name, "Attributes": dict(attributes)}
        if tags:
            params["tags"] = dict(tags)
        try:
            with self.errors():
                return str(self.client().create_queue(**params)["QueueUrl"])
        except Refused as error:
            if error.code != "QueueAlreadyExists":
                raise
        # It exists with other attributes (someone else made it): use it as it is.
        with self.errors():
            return str(self.client().get_queue_url(QueueName=sqs_name)["QueueUrl"])

    def dead_letter_url(self, name: str) -> str | None:
        """The URL of ``name``'s dead-letter queue, or None if it does not exist."""
        params: dict[str, str] = {"QueueName": self.names.dead_letter(name)}
        if self.address.owner:
            params["QueueOwnerAWSAccountId"] = self.address.owner
        try:
            with self.errors():
                return str(self.client().get_queue_url(**params)["QueueUrl"])
        except Refused as error:
            if error.code in MISSING:
                return None
            raise

    def counts(self, url: str) -> dict[str, str]:
        with self.errors():
            return dict(
                self.client()
                .get_queue_attributes(
                    QueueUrl=url,
                    AttributeNames=[
                        "ApproximateNumberOfMessages",
                        "ApproximateNumberOfMessagesNotVisible",
                        "ApproximateNumberOfMessagesDelayed",
                    ],
                )
                .get("Attributes", {})
            )

    # -- settling ----------------------------------------------------------------

    def delete_batch(self, url: str, receipts: Sequence[str]) -> dict[int, Refused]:
        """Delete up to ten messages; by position, the entries SQS refused.

        A receipt handle that no longer holds its message is not a failure:
        the message was deleted already, or went back to the queue and will
        come again.
        """
        entries = [{"Id": str(index), "ReceiptHandle": r} for index, r in enumerate(receipts)]
        with self.errors():
            answer = self.client().delete_message_batch(QueueUrl=url, Entries=entries)
        failures: dict[int, Refused] = {}
        for failed in answer.get("Failed", ()):
            code = str(failed.get("Code", ""))
            if code in STALE:
                logger.debug("deleting with a stale receipt handle: %s", code)
                continue
            failures[int(failed["Id"])] = Refused(
                code,
                self.mask(f"{code}: {failed.get('Message', '')}"),
                sender_fault=bool(failed.get("SenderFault", True)),
            )
        return failures

    def change_visibility(self, url: str, receipt: str, seconds: int) -> bool:
        """Set a held message's visibility timeout; False if the handle no longer holds it."""
        try:
            with self.errors():
                self.client().change_message_visibility(
                    QueueUrl=url, ReceiptHandle=receipt, VisibilityTimeout=seconds
                )
        except Refused as error:
            if error.code in STALE:
                return False
            raise
        return True

    def change_visibility_batch(self, url: str, changes: Sequence[tuple[str, int]]) -> None:
        for start in range(0, len(changes), 10):
            entries = [
                {"Id": str(index), "ReceiptHandle": receipt, "VisibilityTimeout": seconds}
                for index, (receipt, seconds) in enumerate(changes[start : start + 10])
            ]
            with self.errors():
                self.client().change_message_visibility_batch(QueueUrl=url, Entries=entries)
