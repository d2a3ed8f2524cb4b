"""SendMessage and SendMessageBatch, with FIFO's group and deduplication ids.

A batch holds at most ten entries and SQS's batch payload limit; each
entry can fail on its own. ``send_batch`` keeps up to ``batches_in_flight``
requests in flight at once (one after another for FIFO queues, whose order
is the order of sending). A failure SQS blames on itself (``SenderFault``
false) is sent once more at once; what still fails is reported by
position, and the rest of the batch stands. A batch whose request got no
answer at all failed as a whole, and so do the batches after it: the
endpoint is not answering, and each would wait for botocore's retries.

FIFO queues need a MessageGroupId (the ``sqs-message-group-id`` header, or
the DSN's ``message_group``) and a MessageDeduplicationId. The latter is
the envelope id, so a send retried after a lost answer is stored once; a
later attempt (``-a<n>``) or a message sent back from the failure store
(``-k<n>``, its ``courier-kept`` count) is a new message to SQS, not a
duplicate dropped for five minutes.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from courier.envelope import Envelope
from courier.errors import ConnectionLost, TransportError
from courier.transports.base import KEPT_HEADER
from courier_sqs.connection import Connection, QueueInfo
from courier_sqs.options import DEFAULT_MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE
from courier_sqs.wire import Outgoing

__all__ = ["GROUP_HEADER", "Batch", "Item", "Sender", "deduplication_id"]

#: The header that picks a FIFO message's MessageGroupId.
GROUP_HEADER = "sqs-message-group-id"

_DEDUPLICATION = re.compile(r"^[\x21-\x7e]{1,128}$")


def deduplication_id(envelope: Envelope) -> str:
    """FIFO's MessageDeduplicationId for ``envelope``: its id, its attempt, its keeps."""
    text = envelope.id
    if envelope.attempt != 1:
        text += f"-a{envelope.attempt}"
    kept = envelope.headers.get(KEPT_HEADER)
    if kept:
        text += f"-k{kept}"
    if not _DEDUPLICATION.match(text):
        text = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return text


class Item(NamedTuple):
    """One message to send: the envelope, its wire form, and its FIFO group if any."""

    envelope: Envelope
    outgoing: Outgoing
    group: str | None = None


class Batch(NamedTuple):
    """What a batch send did, by position: SQS's message ids, and why the others failed."""

    message_ids: list[str | None]
    failures: dict[int, str]


class Sender:
    """Sends through a :class:`Connection`; FIFO parameters when its queues are FIFO."""

    def __init__(self, connection: Connection, message_group: str, in_flight: int = 1) -> None:
        self.connection = connection
        self.fifo = connection.names.fifo
        self.message_group = message_group
        #: SendMessageBatch requests kept in flight at once by ``send_batch``.
        self.in_flight = in_flight
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _entry(self, item: Item) -> dict[str, Any]:
        out = item.outgoing
        entry: dict[str, Any] = {"MessageBody": out.body}
        if out.attributes:
            entry["MessageAttributes"] = out.attributes
        if self.fifo:
            envelope = item.envelope
            entry["MessageGroupId"] = (
                item.group or envelope.headers.get(GROUP_HEADER) or self.message_group
            )
            entry["MessageDeduplicationId"] = deduplication_id(envelope)
        elif out.delay_seconds:
            entry["DelaySeconds"] = out.delay_seconds
        return entry

    def send(self, info: QueueInfo, item: Item) -> str:
        """One message; SQS's message id. Raises Refused or ConnectionLost."""
        with self.connection.errors():
            answer = self.connection.client().send_message(QueueUrl=info.url, **self._entry(item))
        return str(answer["MessageId"])

    def send_batch(self, info: QueueInfo, items: Sequence[Item]) -> Batch:
        """Many messages, ten (and a payload limit) per request; see the module docstring."""
        ids: list[str | None] = [None] * len(items)
        failures: dict[int, str] = {}
        limit = MAX_MESSAGE_SIZE if info.max_size > DEFAULT_MAX_MESSAGE_SIZE else info.max_size
        chunk: list[int] = []
        size = 0
        chunks: list[list[int]] = []
        for index, item in enumerate(items):
            if chunk and (len(chunk) == 10 or size + item.outgoing.size > limit):
                chunks.append(chunk)
                chunk, size = [], 0
            chunk.append(index)
            size += item.outgoing.size
        if chunk:
            chunks.append(chunk)
        lost: list[str] = []

        def send(positions: list[int]) -> None:
            # Each request writes only its own positions: no lock needed.
            if lost:
                failures.update((position, lost[0]) for position in positions)
                return
            try:
                self._send_chunk(info, items, positions, ids, failures)
            except ConnectionLost as error:
                lost.append(str(error))
                failures.update((position, str(error)) for position in positions)
            except TransportError as error:
                failures.update((position, str(error)) for position in positions)

        if len(chunks) == 1 or self.fifo or self.in_flight == 1:
            for positions in chunks:  # a FIFO queue keeps the order it is sent in
                send(positions)
        else:
            for _ in self._executor().map(send, chunks):
                pass
        return Batch(ids, failures)

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.in_flight, thread_name_prefix="courier-sqs-send"
                )
            return self._pool

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def _send_chunk(
        self,
        info: QueueInfo,
        items: Sequence[Item],
        positions: list[int],
        ids: list[str | None],
        failures: dict[int, str],
    ) -> None:
        client = self.connection.client()
        for again in (False, True):
            entries = []
            for n, position in enumerate(positions):
                entry = self._entry(items[position])
                entry["Id"] = str(n)
                entries.append(entry)
            with self.connection.errors():
                answer = client.send_message_batch(QueueUrl=info.url, Entries=entries)
            for done in answer.get("Successful", ()):
                ids[positions[int(done["Id"])]] = str(done["MessageId"])
            retry: list[int] = []
            for failed in answer.get("Failed", ()):
                position = positions[int(failed["Id"])]
                if not failed.get("SenderFault", True) and not again:
                    retry.append(position)
                else:
                    reason = self.connection.mask(f"{failed.get('Code')}: {failed.get('Message')}")
                    failures[position] = reason
            if not retry:
                return
            positions = retry
