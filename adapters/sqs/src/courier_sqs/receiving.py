"""Receiving: long polls, undecodable bytes, long delays' hops, and each message's ttr.

One queue is one long poll (``WaitTimeSeconds``, whole seconds, at most
the caller's timeout and ``wait_time``) of up to ten messages, made
invisible for ``lease`` seconds. SQS counts the receives of each message
(``ApproximateReceiveCount``, 1 on the first): that is the delivery count.

Several queues are asked in their order without waiting, so the first
with messages wins; if all are empty, they are long-polled at once, each
for its share of ``max``, so a receive never returns more than asked.

A message whose ``courier-due`` lies ahead (a delay over 900 s) is sent
on with the next hop of delay and deleted, not returned. A message with a
``ttr`` gets that as its visibility timeout (and ``renew`` keeps to it).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from courier.errors import MessageDecodingFailed, TransportError
from courier.transports.base import Received
from courier_sqs.connection import MISSING, QueueInfo, Refused
from courier_sqs.options import MAX_DELAY, MAX_VISIBILITY
from courier_sqs.wire import incoming

if TYPE_CHECKING:
    from courier_sqs.transport import SqsTransport

__all__ = ["Handle", "Receiver"]

logger = logging.getLogger("courier.sqs")

_SYSTEM_ATTRIBUTES = ["ApproximateReceiveCount", "MessageGroupId"]


class Handle:
    """One delivery's receipt handle, and the message as it came (for reject and hops)."""

    __slots__ = ("attributes", "body", "group", "lease", "message_id", "receipt", "url")

    def __init__(
        self,
        url: str,
        receipt: str,
        message_id: str,
        body: str,
        attributes: Mapping[str, Mapping[str, Any]] | None,
        group: str | None,
        lease: int,
    ) -> None:
        self.url = url
        self.receipt = receipt
        self.message_id = message_id
        self.body = body
        self.attributes = attributes
        self.group = group
        #: Seconds of visibility a renewal grants: the message's ttr, or the lease.
        self.lease = lease

    def sendable_attributes(self) -> dict[str, dict[str, Any]]:
        """The message attributes as SendMessage takes them again."""
        sendable: dict[str, dict[str, Any]] = {}
        for name, attribute in (self.attributes or {}).items():
            kind = attribute.get("DataType", "String")
            if "StringValue" in attribute:
                sendable[name] = {"DataType": kind, "StringValue": attribute["StringValue"]}
            elif "BinaryValue" in attribute:
                sendable[name] = {"DataType": kind, "BinaryValue": attribute["BinaryValue"]}
        return sendable

    def __repr__(self) -> str:
        return f"<Handle {self.message_id}>"


class Receiver:
    """The receiving side of one :class:`~courier_sqs.transport.SqsTransport`."""

    def __init__(self, transport: SqsTransport) -> None:
        self.transport = transport
        self.connection = transport.connection
        self.options = transport.options
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._names: dict[str, list[str]] | None = None

    def receive(self, names: Sequence[str], most: int, wait: float) -> list[Received]:
        infos = [self.transport.info(name) for name in names]
        if len(infos) == 1:
            [info] = infos
            deadline = time.monotonic() + wait
            if wait >= 1:
                got = self._received(info, self._take(info, most, int(wait)))
                if got or deadline - time.monotonic() < 0.05:
                    return got
            # SQS waits whole seconds: what is left is a short poll and a sleep,
            # never longer than asked. (The short poll also sees a message whose
            # lease ran out during the long poll, which moto's server misses.)
            got = self._received(info, self._take(info, most, 0))
            left = deadline - time.monotonic()
            if not got and left > 0:
                time.sleep(left)
            return got
        for info in infos:
            got = self._received(info, self._take(info, most, 0))
            if got:
                return got
        if wait < 1:
            if wait > 0:
                time.sleep(wait)
            return []
        count = len(infos)
        shares = [most // count + (1 if index < most % count else 0) for index in range(count)]
        pool = self._executor()
        futures: list[tuple[QueueInfo, Future[list[dict[str, Any]]]]] = [
            (info, pool.submit(self._take, info, share, int(wait)))
            for info, share in zip(infos, shares, strict=True)
            if share > 0
        ]
        result: list[Received] = []
        failure: TransportError | None = None
        for info, future in futures:
            try:
                messages = future.result()
            except TransportError as error:
                failure = failure or error
                continue
            result += self._received(info, messages)
        if failure is not None and not result:
            raise failure
        return result

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="courier-sqs")
            return self._pool

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _system_attributes(self, client: Any) -> dict[str, list[str]]:
        """The receive count and group, asked for under both names SQS has had for it.

        ``AttributeNames`` is deprecated but is all older boto3 releases and
        some emulators know; ``MessageSystemAttributeNames`` is SQS's name now.
        """
        if self._names is None:
            members = client.meta.service_model.operation_model("ReceiveMessage").input_shape
            self._names = {"AttributeNames": _SYSTEM_ATTRIBUTES}
            if "MessageSystemAttributeNames" in members.members:
                self._names["MessageSystemAttributeNames"] = _SYSTEM_ATTRIBUTES
        return self._names

    def _take(self, info: QueueInfo, most: int, wait_seconds: int) -> list[dict[str, Any]]:
        try:
            with self.connection.errors():
                client = self.connection.client()
                answer = client.receive_message(
                    QueueUrl=info.url,
                    MaxNumberOfMessages=min(10, most),
                    WaitTimeSeconds=min(20, wait_seconds),
                    VisibilityTimeout=self.options.visibility,
                    MessageAttributeNames=["All"],
                    **self._system_attributes(client),
                )
        except Refused as error:
            if error.code in MISSING:
                self.connection.forget(info.name)  # deleted: looked up (or made) again next time
            raise
        messages: list[dict[str, Any]] = answer.get("Messages", [])
        return messages

    def _received(self, info: QueueInfo, messages: list[dict[str, Any]]) -> list[Received]:
        transport = self.transport
        visibility = self.options.visibility
        now = time.time()
        result: list[Received] = []
        changes: list[tuple[str, int]] = []
        for message in messages:
            system = message.get("Attributes") or {}
            try:
                count = max(1, int(system.get("ApproximateReceiveCount", 1)))
            except ValueError:
                count = 1
            handle = Handle(
                info.url,
                message["ReceiptHandle"],
                str(message.get("MessageId", "")),
                str(message.get("Body", "")),
                message.get("MessageAttributes"),
                system.get("MessageGroupId"),
                visibility,
            )
            try:
                body, headers, due = incoming(handle.body, handle.attributes)
            except MessageDecodingFailed as error:
                result.append(self._undecodable(error, handle, info.name, count))
                continue
            if due is not None and due - now >= 1 and not transport.fifo:
                self._hop(info, handle, due - now)
                continue
            received = transport.decoded(
                body,
                headers,
                handle,
                info.name,
                delivery_count=count,
                transport_message_id=handle.message_id or None,
            )
            envelope = received.envelope
            if envelope is not None and envelope.ttr is not None:
                seconds = min(MAX_VISIBILITY, max(1, math.ceil(envelope.ttr)))
                if seconds != visibility:
                    handle.lease = seconds
                    changes.append((handle.receipt, seconds))
            result.append(received)
        if changes:
            try:
                self.connection.change_visibility_batch(info.url, changes)
            except TransportError as error:
                logger.warning("could not give %d messages their ttr: %s", len(changes), error)
        return result

    def _undecodable(
        self, error: MessageDecodingFailed, handle: Handle, queue: str, count: int
    ) -> Received:
        received = Received(self.transport, handle, queue, count, self.transport.generation)
        received.raw = error.raw
        received.raw_headers = dict(error.headers)
        received.error = error
        return received

    def _hop(self, info: QueueInfo, handle: Handle, remaining: float) -> None:
        """Send a long-delayed message on for its next hop, then delete this copy."""
        params: dict[str, Any] = {
            "QueueUrl": info.url,
            "MessageBody": handle.body,
            "DelaySeconds": min(MAX_DELAY, math.ceil(remaining)),
        }
        attributes = handle.sendable_attributes()
        if attributes:
            params["MessageAttributes"] = attributes
        try:
            with self.connection.errors():
                self.connection.client().send_message(**params)
            self.connection.delete_batch(info.url, [handle.receipt])
        except TransportError as error:
            logger.warning(
                "could not delay message %s further (%s): it comes back after the lease",
                handle.message_id,
                error,
            )
