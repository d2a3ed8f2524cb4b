"""A stream as courier's failure store: list, find, remove, keep, and the queue list.

``courier failed`` lists a store, then removes or retries messages one id at
a time. A stream has no index by envelope id, so finding one means reading
the stream; to keep ``retry --all`` linear, :meth:`Listing.list` remembers
where it saw each id, and ``find``/``remove`` look there first (and check
that the entry there still holds that id). ``keep`` indexes the records it
writes in a hash, so it can replace the record of an id atomically in one
script. Entries are read in pages of 500 (XRANGE with an exclusive start),
so a large store never arrives in one reply.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from courier.envelope import Envelope
from courier.errors import MessageDecodingFailed, PublishNotConfirmed, ValidationFailed
from courier.serializer import Headers
from courier.transports.base import KEPT_HEADER
from courier_redis import scripts
from courier_redis.keys import queue_from_stream, topic_from_subscriptions
from courier_redis.wire import BODY, entry_fields, fields_of_member, member, split_fields

if TYPE_CHECKING:
    from courier_redis.transport import RedisTransport

__all__ = ["Listing"]

_PAGE = 500
_ID_FIELD = Headers.ID.encode()

#: Where ``list`` saw a message: ("stream", entry id) or ("delayed", member).
_Place = tuple[str, Any]


def _glob(text: str) -> str:
    """``text`` with SCAN's pattern characters escaped."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _pairs(fields: Any) -> dict[bytes, bytes]:
    if isinstance(fields, dict):
        return fields
    return dict(zip(fields[::2], fields[1::2], strict=False))


class Listing:
    """The Listable verbs of one :class:`RedisTransport`."""

    def __init__(self, transport: RedisTransport) -> None:
        self.transport = transport
        self._seen: dict[str, dict[str, list[_Place]]] = {}

    # -- the queue list --------------------------------------------------------

    def queues(self) -> list[str]:
        """Every stream under the prefix, and every subscription queue ``setup`` recorded."""
        prefix = self.transport.prefix
        link = self.transport.link
        found: set[str] = set()
        with link.errors("queues"):
            client = link.client
            for key in client.scan_iter(match=_glob(prefix) + "{*", count=1000, _type="stream"):
                queue = queue_from_stream(prefix, key.decode("utf-8", "replace"))
                if queue is not None:
                    found.add(queue)
            pattern = _glob(prefix + "subscriptions:") + "{*"
            for key in client.scan_iter(match=pattern, count=1000, _type="set"):
                topic = topic_from_subscriptions(prefix, key.decode("utf-8", "replace"))
                if topic is not None:
                    for name in client.smembers(key):
                        text = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
                        found.add(f"{topic}.{text}")
        return sorted(found)

    # -- reading -------------------------------------------------------------

    def _envelope(self, fields: Any) -> Envelope | None:
        body, headers = split_fields(fields)
        if body is None:
            return None
        try:
            return self.transport.serializer.decode(body, headers)
        except (MessageDecodingFailed, ValidationFailed):
            return None

    def _stream(self, stream: str) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
        link = self.transport.link
        start = "-"
        while True:
            with link.errors("list"):
                page = link.call("XRANGE", stream, start, "+", "COUNT", _PAGE)
            for entry_id, fields in page:
                yield entry_id, _pairs(fields)
            if len(page) < _PAGE:
                return
            start = "(" + page[-1][0].decode()

    def _delayed(self, key: str) -> Iterator[tuple[bytes, dict[bytes, bytes]]]:
        link = self.transport.link
        start = 0
        while True:
            with link.errors("list"):
                page = link.call("ZRANGE", key, start, start + _PAGE - 1)
            for item in page:
                fields = fields_of_member(item)
                if fields is not None:
                    yield item, _pairs(fields)
            if len(page) < _PAGE:
                return
            start += _PAGE

    def _everything(self, queue: str) -> Iterator[tuple[_Place, dict[bytes, bytes]]]:
        keys = self.transport.keys(queue)
        for entry_id, fields in self._stream(keys.stream):
            yield ("stream", entry_id), fields
        for item, fields in self._delayed(keys.delayed):
            yield ("delayed", item), fields

    def list(self, queue: str | None = None, *, limit: int | None = None) -> list[Envelope]:
        """Stream entries oldest first, then delayed messages; undecodable ones are skipped."""
        name = queue or self.transport.queue
        found: list[Envelope] = []
        seen: dict[str, list[_Place]] = {}
        with self.transport.link.errors("list"):
            self.transport.link.settle(wait=False)  # acknowledged entries are gone first
        if limit is None or limit > 0:
            for place, fields in self._everything(name):
                envelope = self._envelope(fields)
                if envelope is None:
                    continue
                if place[0] == "stream":
                    envelope = envelope.with_(transport_message_id=place[1].decode())
                found.append(envelope)
                seen.setdefault(envelope.id, []).append(place)
                if len(found) == limit:
                    break
        self._seen[name] = seen
        return found

    def _places(self, name: str, message_id: str) -> Iterator[tuple[_Place, dict[bytes, bytes]]]:
        """Where ``message_id`` is, oldest first: where ``list`` saw it, else a full read."""
        link = self.transport.link
        keys = self.transport.keys(name)
        for place in list(self._seen.get(name, {}).get(message_id, ())):
            kind, where = place
            with link.errors("find"):
                if kind == "stream":
                    entries = link.call("XRANGE", keys.stream, where, where)
                    fields = _pairs(entries[0][1]) if entries else None
                else:
                    present = link.call("ZSCORE", keys.delayed, where) is not None
                    raw = fields_of_member(where) if present else None
                    fields = _pairs(raw) if raw is not None else None
            if fields is not None and fields.get(_ID_FIELD) == message_id.encode():
                yield place, fields
        wanted = message_id.encode()
        for place, fields in self._everything(name):
            if fields.get(_ID_FIELD) == wanted:
                yield place, fields

    def find(self, message_id: str, queue: str | None = None) -> Envelope | None:
        """The oldest message with this envelope id, or None."""
        for _, fields in self._places(queue or self.transport.queue, message_id):
            envelope = self._envelope(fields)
            if envelope is not None:
                return envelope
        return None

    # -- writing -------------------------------------------------------------

    def remove(self, message_id: str, queue: str | None = None) -> bool:
        """Delete the message ``find`` shows (the oldest with this id)."""
        name = queue or self.transport.queue
        keys = self.transport.keys(name)
        link = self.transport.link
        for place, _ in self._places(name, message_id):
            kind, where = place
            with link.errors("remove"):
                if kind == "stream":
                    gone = link.run(
                        scripts.REMOVE,
                        [keys.stream, keys.kept],
                        [message_id, where, Headers.ID, self.transport.group],
                    )
                else:
                    gone = link.call("ZREM", keys.delayed, where)
            if gone:
                places = self._seen.get(name, {}).get(message_id)
                if places and place in places:
                    places.remove(place)
                return True
        return False

    def keep(self, envelope: Envelope, queue: str | None = None) -> int:
        """Replace the record ``keep`` wrote for ``envelope.id`` (or add one); see Listable.keep."""
        keys = self.transport.keys(queue)
        body, headers = self.transport.encode(envelope)
        headers.pop(KEPT_HEADER, None)
        if BODY in headers:
            raise PublishNotConfirmed(
                f"message {envelope.id}: a header named {BODY!r} cannot travel on Redis",
                [envelope.id],
            )
        link = self.transport.link
        with link.errors("keep", [envelope.id]):
            count, _ = link.run(
                scripts.KEEP,
                [keys.stream, keys.kept],
                [envelope.id, KEPT_HEADER, member(entry_fields(body, headers))],
            )
        return int(count)
