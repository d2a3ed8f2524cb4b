"""The dead-letter stores as ``courier failed`` sees them, and how a message leaves one.

Kept apart from the click commands in :mod:`courier.cli.failed` so that what
must not break can be read on its own: which transports are stores, what a
stored message says about itself (failed ones carry
:class:`~courier.envelope.ErrorDetails`, undecodable ones are an
:class:`~courier.dead_letters.InvalidMessage` whose fields tell the same
story), how an id or a prefix of one names a message, and the order of steps
when one is sent back.

That order is the point of :func:`retry_one`: a message is removed from the
store only once the send back succeeded, so a broker error leaves it where
it was rather than nowhere. An invalid message is decoded again first; if it
still cannot be, it stays, its record replaced by one with today's reason
(:func:`keep_with_reason`, which sends the new record before removing the old
one for the same reason).

Errors are :func:`~courier.cli.context.fail` with an exit code from
:mod:`~courier.cli.exit_codes`: every caller is a command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from courier.cli import exit_codes
from courier.cli.context import check_transports, fail
from courier.cli.output import escape, say, timestamp
from courier.dead_letters import InvalidMessage
from courier.envelope import ErrorDetails
from courier.errors import MessageDecodingFailed, ValidationFailed
from courier.serializer import Headers
from courier.transports.base import Listable, Transport, kept_count, subscription_queue

if TYPE_CHECKING:
    from collections.abc import Sequence

    from rich.console import Console

    from courier.bus import Bus
    from courier.cli.buried import Buried
    from courier.envelope import Envelope

__all__ = [
    "MIN_PREFIX",
    "SHORT_ID",
    "Filters",
    "Store",
    "Stored",
    "check_target",
    "keep_with_reason",
    "load",
    "open_stores",
    "resolve",
    "retry_one",
    "short_ids",
    "undecodable",
]

#: Shortest id prefix accepted in place of a whole id.
MIN_PREFIX = 6
#: Ids are shown this long at least (longer where needed to stay unique).
SHORT_ID = 8


@dataclass(frozen=True)
class Store:
    """A dead-letter transport that can list what it keeps."""

    name: str
    transport: Transport
    listing: Listable


@dataclass(frozen=True)
class Stored:
    """One message in a store: failed (with error details) or invalid (raw bytes)."""

    store: Store
    envelope: Envelope

    @property
    def id(self) -> str:
        return self.envelope.id

    @property
    def invalid(self) -> InvalidMessage | None:
        message = self.envelope.message
        return message if isinstance(message, InvalidMessage) else None

    @property
    def type(self) -> str:
        if self.invalid is None:
            return self.envelope.type
        return self.invalid.headers.get(Headers.TYPE) or "?"

    @property
    def error(self) -> ErrorDetails:
        if self.envelope.error is not None:
            return self.envelope.error
        reason = self.invalid.reason if self.invalid is not None else "no error details"
        return ErrorDetails("MessageDecodingFailed", reason, failed_at=self.envelope.timestamp)

    @property
    def origin(self) -> tuple[str | None, str | None]:
        """The transport and queue it failed on."""
        if self.invalid is not None:
            return self.invalid.transport, self.invalid.queue
        return self.error.transport, self.error.queue

    @property
    def failed_at(self) -> float:
        return self.error.failed_at or self.envelope.timestamp

    def row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "store": self.store.name,
            "kind": "invalid" if self.invalid is not None else "failed",
            "type": self.type,
            "transport": self.origin[0],
            "queue": self.origin[1],
            "attempts": self.envelope.attempt,
            "error_class": self.error.error_class,
            "error_message": self.error.message,
            "failed_at": timestamp(self.failed_at),
            "kept": kept_count(self.envelope),
        }


@dataclass(frozen=True)
class Filters:
    types: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    older_than: float | None = None
    newer_than: float | None = None

    @property
    def active(self) -> bool:
        ages = (self.older_than, self.newer_than)
        return bool(self.types or self.errors) or ages != (None, None)

    def matches(self, item: Stored | Buried, now: float) -> bool:
        error, age = item.error, now - item.failed_at
        return (
            (not self.types or item.type in self.types)
            and (not self.errors or bool({error.error_class, error.short_class} & {*self.errors}))
            and (self.older_than is None or age >= self.older_than)
            and (self.newer_than is None or age <= self.newer_than)
        )


def open_stores(bus: Bus, *, required: bool = True) -> list[Store]:
    """The failure and invalid-message transports (one store if they are one).

    Not ``required`` where a transport keeps buried messages of its own:
    without a failure transport, those are where failures went.
    """
    roles = {name: "invalid-message transport" for name in [bus.invalid_transport] if name}
    roles.update({name: "failure transport" for name in [bus.failure_transport] if name})
    if not roles and required:
        raise fail("no failure transport is configured; set failure_transport", exit_codes.USAGE)
    stores = []
    for name in sorted(roles, key=lambda name: name != bus.failure_transport):
        transport = bus.transport(name)
        if not transport.capabilities.listable or not isinstance(transport, Listable):
            raise fail(
                f"{roles[name]} {name!r} cannot list its messages, so `courier failed` cannot "
                "show them; use sqlite://, memory:// or redis:// for it",
                exit_codes.USAGE,
            )
        stores.append(Store(name, transport, transport))
    return stores


def load(stores: Sequence[Store]) -> list[Stored]:
    items = [Stored(store, envelope) for store in stores for envelope in store.listing.list()]
    return sorted(items, key=lambda item: item.failed_at)


def undecodable(stores: Sequence[Store], items: Sequence[Stored]) -> int:
    """How many stored messages this process could not decode (types it does not know)."""
    hidden = 0
    for store in stores:
        counts = store.transport.stats([store.transport.queue])[0]
        if counts.ready is not None:
            listed = sum(1 for item in items if item.store is store)
            hidden += max(0, counts.ready + (counts.delayed or 0) - listed)
    return hidden


def short_ids(ids: Sequence[str], minimum: int = SHORT_ID) -> dict[str, str]:
    """Each id cut to the shortest prefix (at least ``minimum`` long) no other id shares."""
    ordered = sorted(set(ids))
    shortest: dict[str, str] = {}
    for index, current in enumerate(ordered):
        needed = minimum
        for neighbour in ordered[max(0, index - 1) : index + 2]:
            if neighbour != current:
                needed = max(needed, _common_prefix(current, neighbour) + 1)
        shortest[current] = current[:needed]
    return shortest


def _common_prefix(one: str, other: str) -> int:
    length = 0
    for left, right in zip(one, other, strict=False):
        if left != right:
            break
        length += 1
    return length


def resolve(items: Sequence[Stored], ids: Sequence[str]) -> list[Stored]:
    """The stored messages with these ids (or unique prefixes of them)."""
    by_id = {item.id: item for item in reversed(items)}
    found: dict[str, Stored] = {}
    missing: list[str] = []
    for wanted in ids:
        if wanted not in by_id and len(wanted) < MIN_PREFIX:
            raise fail(
                f"id {wanted[:64]!r} is too short: give the whole id or a prefix of at least "
                f"{MIN_PREFIX} characters (see `courier failed list`)",
                exit_codes.USAGE,
            )
        matches = [wanted] if wanted in by_id else []
        if not matches and len(wanted) >= MIN_PREFIX:
            matches = [known for known in by_id if known.startswith(wanted)]
        if len(matches) > 1:
            raise fail(
                f"id prefix {wanted!r} matches {len(matches)} messages; give more of it",
                exit_codes.USAGE,
            )
        if matches:
            found.setdefault(matches[0], by_id[matches[0]])
        else:
            missing.append(repr(wanted[:64]))
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise fail(
            f"no failed message with id {', '.join(missing[:3])}{more} (see `courier failed list`)",
            exit_codes.NOT_FOUND,
        )
    return list(found.values())


def check_target(bus: Bus, to: str) -> None:
    """Refuse a ``--to`` that no worker would consume from, before anything is sent."""
    check_transports(bus, [to])
    if to in (bus.failure_transport, bus.invalid_transport):
        raise fail(f"cannot retry into {to!r}: it is a dead-letter store", exit_codes.USAGE)
    if bus.transport(to).capabilities.in_process:
        raise fail(f"cannot retry to {to!r}: no worker consumes sync://", exit_codes.USAGE)


def retry_one(bus: Bus, item: Stored, to: str | None, console: Console) -> bool:
    """Send one stored message back; False if it is invalid and still undecodable."""
    envelope, invalid = item.envelope, item.invalid
    if invalid is not None:
        try:
            envelope = bus.serializer.decode(invalid.body, invalid.headers)
        except (MessageDecodingFailed, ValidationFailed) as error:
            if str(error) != invalid.reason:
                keep_with_reason(item, invalid, error)
            say(
                console, f"still invalid {item.id}: {escape(str(error), limit=300)}", style="yellow"
            )
            return False
    origin, queue = item.origin
    target = to or origin or ""
    transport = bus.transport(target)  # the command checked it is configured
    queue = queue if target == origin else None
    if queue is not None and queue != transport.queue and queue not in served_queues(bus, target):
        raise fail(
            f"{item.id} names queue {escape(queue, limit=80)!r}, which transport {target!r} "
            "does not serve in this configuration; send it with --to",
            exit_codes.USAGE,
        )
    fresh = envelope.with_(
        attempt=1, error=None, delay=0.0, transport_message_id=None, received=None
    )
    transport.send(fresh, queue)
    item.store.listing.remove(item.id)
    where = target if queue in (None, transport.queue) else f"{target} ({queue})"
    decoded = ", decoded" if invalid is not None else ""
    say(console, f"retried {item.id} ({escape(fresh.type, limit=80)}{decoded}) to {escape(where)}")
    return True


def served_queues(bus: Bus, transport: str) -> set[str]:
    """The queues a worker of ``transport`` may consume, subscription queues included."""
    queues, topics = bus.layout(transport)
    served = set(queues)
    for topic, names in topics.items():
        served.update(subscription_queue(topic, name) for name in names)
    return served


def keep_with_reason(
    item: Stored, invalid: InvalidMessage, error: MessageDecodingFailed | ValidationFailed
) -> None:
    """Replace an invalid message's record by one with the reason it fails for now."""
    message = invalid.model_copy(update={"reason": str(error)})
    details = ErrorDetails.from_exception(error, transport=invalid.transport, queue=invalid.queue)
    # In place: the store replaces the record of this id, never drops it first.
    item.store.listing.keep(item.envelope.with_(message=message, error=details, received=None))
