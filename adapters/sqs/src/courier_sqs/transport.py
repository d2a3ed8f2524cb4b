"""``sqs://``: courier's verbs on Amazon SQS (and SNS for events).

::

    transport = SqsTransport.from_dsn(
        Dsn.parse("sqs://KEY:SECRET@127.0.0.1:4566/email?region=us-east-1&sslmode=disable"),
        name="email", serializer=serializer,
    )

Sends are SendMessage (SendMessageBatch for ``send_many``, ten per request);
receives are long polls of up to ten messages whose visibility timeout is
the DSN's ``lease``; ``ack_many`` is DeleteMessageBatch; ``renew`` and
``release`` change a message's visibility; ``retry`` sends the new attempt
with its delay and then deletes the old one. Every boto3 detail lives in
:mod:`courier_sqs.connection`, the wire format in :mod:`courier_sqs.wire`,
receiving in :mod:`courier_sqs.receiving`, events in
:mod:`courier_sqs.topics`; the prose in docs/transports/sqs.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace

from courier.envelope import Envelope
from courier.errors import (
    ConfigurationError,
    MessageTooLarge,
    PublishNotConfirmed,
    TransportError,
)
from courier.serializer import Serializer
from courier.transports.base import (
    Capabilities,
    QueueStats,
    Received,
    Transport,
    Unacked,
    body_limit,
)
from courier.transports.dsn import MASK, Dsn
from courier_sqs.address import locate
from courier_sqs.connection import MISSING, Connection, QueueInfo, Refused
from courier_sqs.options import DEFAULT_MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE, SqsOptions
from courier_sqs.receiving import Handle, Receiver
from courier_sqs.sending import Item, Sender
from courier_sqs.topics import Topics
from courier_sqs.wire import MAX_ATTRIBUTES, Outgoing, outgoing, sqs_text

__all__ = ["SqsTransport"]

logger = logging.getLogger("courier.sqs")

#: The attribute that says why ``reject`` moved a message to the dead-letter queue.
REJECTED = "courier-rejected"


def _masked_user(dsn: Dsn) -> Dsn:
    """``dsn`` with the access key id masked too, for every rendering courier makes."""
    return Dsn(
        dsn.scheme,
        username=MASK if dsn.username else None,
        password=dsn.password,
        host=dsn.host,
        port=dsn.port,
        path=dsn.path,
        options=dsn.options,
    )


class SqsTransport(Transport):
    """Amazon SQS through boto3; see the module docstring."""

    capabilities = Capabilities(
        delay=True,
        max_delay=None,
        priority=False,
        lease=True,
        ttr=True,
        native_dead_letter=True,
        delivery_count=True,
        max_message_size=DEFAULT_MAX_MESSAGE_SIZE,
        listable=False,
        durable=True,
        unacked_on_reconnect=Unacked.KEPT,
    )

    def __init__(self, dsn: Dsn | str, *, name: str = "sqs", serializer: Serializer) -> None:
        self.dsn = dsn if isinstance(dsn, Dsn) else Dsn.parse(dsn)
        self._shown = _masked_user(self.dsn)
        self.options = options = self._shown.option_model(SqsOptions)
        self.address = address = locate(self.dsn, options)
        super().__init__(name=name, queue=address.queue, serializer=serializer)
        self.capabilities = replace(
            type(self).capabilities,
            # FIFO queues take no per-message delay: retries must not wait.
            delay=not address.fifo,
            max_message_size=options.max_message_size or DEFAULT_MAX_MESSAGE_SIZE,
        )
        self.connection = Connection(self.dsn, options, address, name)
        self.sender = Sender(self.connection, options.message_group, options.batches_in_flight)
        self.receiver = Receiver(self)
        self.topics = Topics(self.connection, self._send_existing)

    @classmethod
    def from_dsn(cls, dsn: Dsn, *, name: str, serializer: Serializer) -> SqsTransport:
        return cls(dsn, name=name, serializer=serializer)

    @property
    def fifo(self) -> bool:
        return self.address.fifo

    # -- queues and sizes ------------------------------------------------------

    def info(self, name: str, *, create: bool | None = None) -> QueueInfo:
        """The queue courier calls ``name``, looked up (or created) on first use."""
        info = self.connection.known(name)
        if info is None:
            auto = self.options.auto_setup if create is None else create
            info = self.connection.queue(name, create=auto)
            if name == self.queue and self.options.max_message_size is None:
                self.capabilities = replace(self.capabilities, max_message_size=info.max_size)
        return info

    def _fit(self, out: Outgoing, info: QueueInfo | None) -> None:
        """Refuse a message larger than the DSN's limit, or the queue's (SQS's, if unknown)."""
        limit = self.options.max_message_size
        if limit is None:
            limit = info.max_size if info is not None else MAX_MESSAGE_SIZE
        if out.size > limit:
            raise MessageTooLarge(out.size, limit)

    def _refuse_delay(self, delay: float) -> None:
        if delay > 0 and self.fifo:
            raise ConfigurationError(
                f"transport {self.name!r} uses FIFO queues, which take no per-message delay "
                f"(asked for {delay:g}s); set the retry delay to 0 for it"
            )

    def _outgoing(self, envelope: Envelope, queue: str, delay: float) -> Outgoing:
        """The message as SQS takes it; too large is refused here, before any request."""
        body, headers = self.serializer.encode(envelope)
        limit = body_limit(self.serializer, envelope.type)
        if len(body) > limit:
            raise MessageTooLarge(len(body), limit)
        out = outgoing(body, headers, delay, time.time())
        self._fit(out, self.connection.known(queue))
        return out

    # -- sending -----------------------------------------------------------

    def _send_one(
        self,
        envelope: Envelope,
        out: Outgoing,
        queue: str,
        *,
        group: str | None = None,
        create: bool | None = None,
    ) -> str:
        try:
            info = self.info(queue, create=create)
            self._fit(out, info)
            return self.sender.send(info, Item(envelope, out, group))
        except Refused as error:
            if error.code in MISSING:
                self.connection.forget(queue)  # deleted since: looked up again next time
            raise PublishNotConfirmed(
                f"message {envelope.id} was not sent to {queue!r}: {error}", [envelope.id]
            ) from None

    def _send_existing(self, envelope: Envelope, out: Outgoing, queue: str) -> None:
        self._send_one(envelope, out, queue, create=False)

    def send(self, envelope: Envelope, queue: str | None = None) -> Envelope:
        name = queue or self.queue
        self._refuse_delay(envelope.delay)
        out = self._outgoing(envelope, name, envelope.delay)
        message_id = self._send_one(envelope, out, name)
        return envelope.with_(transport_message_id=message_id)

    def send_many(self, envelopes: Sequence[Envelope], queue: str | None = None) -> list[Envelope]:
        """SendMessageBatch requests of ten, several in flight; see :class:`Sender`.

        A message too large for the queue fails alone, before anything is
        sent; the others go.
        """
        if not envelopes:
            return []
        name = queue or self.queue
        for envelope in envelopes:
            self._refuse_delay(envelope.delay)
        failed: dict[int, str] = {}
        prepared: list[tuple[int, Item]] = []
        for position, envelope in enumerate(envelopes):
            try:
                out = self._outgoing(envelope, name, envelope.delay)
            except MessageTooLarge as error:
                failed[position] = str(error)
            else:
                prepared.append((position, Item(envelope, out)))
        sent = list(envelopes)
        if prepared:
            try:
                info = self.info(name)
            except TransportError as error:
                failed.update((position, str(error)) for position, _ in prepared)
                prepared = []
        ready: list[tuple[int, Item]] = []
        for position, item in prepared:
            try:
                self._fit(item.outgoing, info)
            except MessageTooLarge as error:
                failed[position] = str(error)
            else:
                ready.append((position, item))
        if ready:
            batch = self.sender.send_batch(info, [item for _, item in ready])
            for (position, item), message_id in zip(ready, batch.message_ids, strict=True):
                if message_id is not None:
                    sent[position] = item.envelope.with_(transport_message_id=message_id)
            for index, reason in batch.failures.items():
                failed[ready[index][0]] = reason
        if failed:
            raise PublishNotConfirmed(
                f"{len(failed)} of {len(envelopes)} messages were not sent: {failed[min(failed)]}",
                [envelopes[position].id for position in sorted(failed)],
            )
        return sent

    def publish(self, envelope: Envelope, topic: str, subscriptions: Sequence[str]) -> None:
        self._refuse_delay(envelope.delay)
        out = self._outgoing(envelope, topic, envelope.delay)
        self.topics.publish(envelope, out, topic, subscriptions)

    def subscriptions(self, topic: str) -> list[str]:
        self.topics.forget(topic)
        return self.topics.subscriptions(topic)

    # -- receiving and settling ----------------------------------------------

    def receive(
        self, queues: Sequence[str] | None = None, *, max: int = 1, timeout: float = 0.0
    ) -> list[Received]:
        if max < 1:
            return []
        names = list(queues) if queues else [self.queue]
        wait = min(timeout, self.options.wait_time)
        return self.receiver.receive(names, max, wait if wait > 0 else 0.0)

    def ack(self, received: Received) -> None:
        self.ack_many([received])

    def ack_many(self, received: Sequence[Received]) -> None:
        """DeleteMessageBatch, ten per request; a failure SQS blames on itself is retried once."""
        by_url: dict[str, list[Handle]] = {}
        for item in received:
            handle: Handle = item.handle
            by_url.setdefault(handle.url, []).append(handle)
        unsettled: list[str] = []
        for url, handles in by_url.items():
            for start in range(0, len(handles), 10):
                chunk = [handle.receipt for handle in handles[start : start + 10]]
                failures = self.connection.delete_batch(url, chunk)
                again = [chunk[i] for i, error in failures.items() if not error.sender_fault]
                for error in failures.values():
                    if error.sender_fault:
                        logger.warning(
                            "SQS refused to delete a message (%s): it comes again", error
                        )
                if again:
                    for error in self.connection.delete_batch(url, again).values():
                        unsettled.append(str(error))
        if unsettled:
            raise TransportError(
                f"{len(unsettled)} of {len(received)} acknowledgements failed: {unsettled[0]}"
            )

    def retry(self, received: Received, envelope: Envelope, delay: float) -> None:
        """Send the new attempt with its delay, then delete the old; if sending fails, it stays."""
        self._refuse_delay(delay)
        handle: Handle = received.handle
        out = self._outgoing(envelope, received.queue, delay)
        self._send_one(envelope, out, received.queue, group=handle.group)
        self.ack_many([received])

    def reject(self, received: Received, reason: str) -> None:
        """Move the message, as it came, to the queue's dead-letter queue; then delete it."""
        handle: Handle = received.handle
        name = received.queue
        url = self.connection.dead_letter_url(name)
        if url is None:
            if not self.options.auto_setup:
                raise TransportError(f"queue {name!r} has no dead-letter queue: run courier setup")
            self.connection.declare(name)
            url = self.connection.dead_letter_url(name)
        attributes = handle.sendable_attributes()
        shown = sqs_text(reason[:1000].encode())
        if shown and len(attributes) < MAX_ATTRIBUTES:
            attributes[REJECTED] = {"DataType": "String", "StringValue": shown}
        params: dict[str, object] = {"QueueUrl": url, "MessageBody": handle.body}
        if attributes:
            params["MessageAttributes"] = attributes
        if self.fifo:
            params["MessageGroupId"] = handle.group or self.options.message_group
            params["MessageDeduplicationId"] = handle.message_id
        with self.connection.errors():
            self.connection.client().send_message(**params)
        logger.warning("rejected %r to the dead-letter queue of %r: %s", received, name, reason)
        self.ack_many([received])

    def release(self, received: Received) -> None:
        handle: Handle = received.handle
        self.connection.change_visibility(handle.url, handle.receipt, 0)

    def renew(self, received: Received) -> None:
        """Make the message invisible for another lease (its ttr, or the DSN's lease)."""
        handle: Handle = received.handle
        if not self.connection.change_visibility(handle.url, handle.receipt, handle.lease):
            logger.debug("%r is no longer held (acknowledged, or its lease ran out)", received)

    def keepalive_interval(self) -> float:
        """Renew three times per lease, so one late renewal never loses it."""
        return self.options.visibility / 3

    def identify(self, worker_id: str) -> None:
        self.connection.identify(worker_id)

    # -- administration ----------------------------------------------------

    def setup(
        self, queues: Sequence[str] = (), topics: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        """Create each queue with its dead-letter queue and redrive policy; topics with SNS."""
        for name in dict.fromkeys((self.queue, *queues)):
            self.connection.forget(name)
            self.connection.declare(name)
        for topic, subscriptions in (topics or {}).items():
            if self.options.sns:
                self.topics.topic_arn(topic, create=True)
            for subscription in subscriptions:
                self.topics.ensure(topic, subscription, force=True)

    def stats(self, queues: Sequence[str] | None = None) -> list[QueueStats]:
        """SQS's approximate counts: visible, not visible (held), delayed; dead from the DLQ."""
        result = []
        for name in queues or [self.queue]:
            try:
                info = self.info(name, create=False)
            except Refused as error:
                if error.code not in MISSING:
                    raise
                result.append(QueueStats(name))
                continue
            counts = self.connection.counts(info.url)
            dead_url = self.connection.dead_letter_url(name)
            dead = None
            if dead_url is not None:
                dead = int(self.connection.counts(dead_url).get("ApproximateNumberOfMessages", 0))
            result.append(
                QueueStats(
                    name,
                    ready=int(counts.get("ApproximateNumberOfMessages", 0)),
                    in_flight=int(counts.get("ApproximateNumberOfMessagesNotVisible", 0)),
                    delayed=int(counts.get("ApproximateNumberOfMessagesDelayed", 0)),
                    dead=dead,
                )
            )
        return result

    def close(self) -> None:
        self.sender.close()
        self.receiver.close()
        self.connection.close()

    def __repr__(self) -> str:
        return f"<SqsTransport {self.name!r} {self._shown} queue={self.queue!r}>"
