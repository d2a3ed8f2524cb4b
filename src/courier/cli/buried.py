"""Buried messages as ``courier failed`` sees them, next to the failure store's.

A broker with dead letters of its own (:class:`~courier.transports.buried.HoldsBuried`,
beanstalkd's buried jobs) keeps the messages courier could not write to the
failure store, and those another program buried. They are listed with the
stored ones so an operator sees everything that is waiting, and named
``buried:<transport>:<key>``: copyable as shown, and never a failure-store id
(those are hex digits, or a claimed id and a digest joined by a dot).

``retry`` puts a buried message back in its own queue unchanged, through the
transport's :meth:`~courier.transports.buried.HoldsBuried.kick_buried` (on
beanstalkd ``kick-job`` on that job alone, so no delayed job is woken early);
``remove`` deletes it. Only the queues this configuration serves are looked
at, so a command never touches another application's tubes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from courier.cli.output import timestamp
from courier.envelope import ErrorDetails
from courier.errors import MessageDecodingFailed, TransportError
from courier.serializer import Headers, unpack
from courier.transports.base import subscription_queue
from courier.transports.buried import HoldsBuried

if TYPE_CHECKING:
    from collections.abc import Sequence

    from courier.bus import Bus
    from courier.transports.buried import BuriedMessage

__all__ = [
    "PREFIX",
    "Buried",
    "Holder",
    "Loaded",
    "delete",
    "holders",
    "kick",
    "load_buried",
    "resolve_buried",
]

#: Every buried message's id starts so; failure-store ids never do.
PREFIX = "buried:"
#: The error class a buried message is listed and filtered (``--error``) under.
ERROR_CLASS = "Buried"


@dataclass(frozen=True)
class Holder:
    """A configured transport that can list its buried messages, and the queues it serves."""

    name: str
    transport: HoldsBuried
    queues: tuple[str, ...]


@dataclass(frozen=True)
class Buried:
    """One buried message, with what ``courier failed`` shows of every message."""

    holder: Holder
    message: BuriedMessage

    @property
    def id(self) -> str:
        return f"{PREFIX}{self.holder.name}:{self.message.key}"

    @property
    def type(self) -> str:
        envelope = self.message.envelope
        if envelope is not None:
            return envelope.type
        return self.headers.get(Headers.TYPE) or "?"

    @property
    def headers(self) -> dict[str, str]:
        """The headers the bytes carry (courier's own too), else the message's own."""
        try:
            return unpack(self.message.body)[1]
        except MessageDecodingFailed:  # another format, or foreign bytes
            envelope = self.message.envelope
            return {} if envelope is None else dict(envelope.headers)

    @property
    def attempts(self) -> int | None:
        envelope = self.message.envelope
        return None if envelope is None else envelope.attempt

    @property
    def error(self) -> ErrorDetails:
        """The reason the broker can give; why it cannot be decoded, where it cannot."""
        reason = self.message.reason
        if self.message.error is not None:
            reason += f"; courier cannot decode it: {self.message.error}"
        return ErrorDetails(
            ERROR_CLASS,
            reason,
            failed_at=self.message.sent_at,
            transport=self.holder.name,
            queue=self.message.queue,
        )

    @property
    def origin(self) -> tuple[str | None, str | None]:
        return self.holder.name, self.message.queue

    @property
    def failed_at(self) -> float:
        """When it was sent: the latest time it can have failed is unknown to the broker."""
        return self.message.sent_at

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "store": "buried",
            "kind": "buried",
            "type": self.type,
            "transport": self.holder.name,
            "queue": self.message.queue,
            "attempts": self.attempts,
            "error_class": ERROR_CLASS,
            "error_message": self.error.message,
            "failed_at": timestamp(self.failed_at),
            "sent_at": timestamp(self.message.sent_at),
            "deliveries": self.message.deliveries,
        }


def holders(bus: Bus) -> list[Holder]:
    """The configured transports with buried messages of their own, stores excepted."""
    found = []
    stores = {bus.failure_transport, bus.invalid_transport}
    for name, transport in sorted(bus.transports.items()):
        if name in stores or transport.capabilities.in_process:
            continue
        if isinstance(transport, HoldsBuried):
            found.append(Holder(name, transport, tuple(served(bus, name))))
    return found


def served(bus: Bus, name: str) -> list[str]:
    """Default queue, command queues, then every subscription queue of ``name``."""
    queues, topics = bus.layout(name)
    for topic, subscriptions in sorted(topics.items()):
        queues += [subscription_queue(topic, subscription) for subscription in subscriptions]
    return list(dict.fromkeys(queues))


@dataclass
class Loaded:
    """What a listing found, and what it could not show."""

    items: list[Buried]
    #: Buried messages counted but not listed (a scan limit, or ``limit``).
    unlisted: int = 0
    #: Transports that could not be asked, with the error.
    unreachable: list[tuple[str, str]] = field(default_factory=list)


def load_buried(found: Sequence[Holder], *, limit: int, tolerant: bool) -> Loaded:
    """Every buried message of every holder's queues, ``limit`` per queue (0: no limit).

    ``tolerant``: a broker that cannot be reached is noted and skipped (for
    ``list``, which should still show the failure store); otherwise its
    error propagates.
    """
    loaded = Loaded([])
    for holder in found:
        try:
            for queue in holder.queues:
                listing = holder.transport.buried_messages(queue, limit=limit or 1_000_000)
                loaded.items += [Buried(holder, message) for message in listing.messages]
                loaded.unlisted += max(0, listing.total - len(listing.messages))
        except TransportError as error:
            if not tolerant:
                raise
            loaded.unreachable.append((holder.name, str(error)))
    return loaded


def parse(identifier: str, found: Sequence[Holder]) -> tuple[Holder, str] | None:
    """The holder and key ``buried:<transport>:<key>`` names, or None if it names none."""
    if not identifier.startswith(PREFIX):
        return None
    rest = identifier[len(PREFIX) :]
    transport, _, key = rest.rpartition(":")
    for holder in found:
        if holder.name == transport and key:
            return holder, key
    return None


def resolve_buried(found: Sequence[Holder], ids: Sequence[str]) -> tuple[list[Buried], list[str]]:
    """The buried messages these whole ids name, and the ids that name none.

    A buried message counts only in a queue its transport serves here.
    """
    items: dict[str, Buried] = {}
    missing = []
    for identifier in ids:
        item = find(identifier, found)
        if item is None:
            missing.append(identifier)
        else:
            items.setdefault(item.id, item)
    return list(items.values()), missing


def find(identifier: str, found: Sequence[Holder]) -> Buried | None:
    named = parse(identifier, found)
    if named is None:
        return None
    holder, key = named
    message = holder.transport.buried_message(key)
    if message is None or message.queue not in holder.queues:
        return None
    return Buried(holder, message)


def kick(item: Buried) -> bool:
    """Put it back in its queue, unchanged; False if it is no longer buried there."""
    return item.holder.transport.kick_buried(item.message.key, item.message.queue)


def delete(item: Buried) -> bool:
    return item.holder.transport.delete_buried(item.message.key, item.message.queue)
