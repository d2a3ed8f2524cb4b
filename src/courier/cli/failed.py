"""``courier failed list|show|retry|remove``: the failure and invalid-message stores.

Messages that failed for good sit in the failure transport with their error
details; bytes that never became a message sit in the invalid-message
transport as :class:`~courier.dead_letters.InvalidMessage`. Both are listed
together (they may be one transport); each row names the store it is in.

``retry`` sends a failed message back to the transport and queue it failed
on (or ``--to`` another), with the same id and its attempt count reset, and
removes it from the store only once that send succeeded. An invalid message
is decoded again first: once its cause is fixed (its type registered, its
schema relaxed) it goes back as the message it was; otherwise it stays, with
the new reason, and the exit code is :data:`~courier.cli.exit_codes.NOT_RETRIED`.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from courier.cli import exit_codes
from courier.cli.context import CliContext, fail
from courier.cli.output import (
    Duration,
    ago,
    cell,
    escape,
    payload_preview,
    plural,
    print_block,
    print_table,
    say,
    table,
    tail,
    timestamp,
)
from courier.dead_letters import InvalidMessage
from courier.envelope import ErrorDetails
from courier.errors import MessageDecodingFailed, ValidationFailed
from courier.serializer import Headers
from courier.transports.base import Listable, Transport

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from rich.console import Console

    from courier.bus import Bus
    from courier.envelope import Envelope

__all__ = ["command"]

F = TypeVar("F", bound="Callable[..., Any]")

#: Shortest id prefix accepted in place of a whole id.
MIN_PREFIX = 6


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

    def matches(self, item: Stored, now: float) -> bool:
        error, age = item.error, now - item.failed_at
        return (
            (not self.types or item.type in self.types)
            and (not self.errors or bool({error.error_class, error.short_class} & {*self.errors}))
            and (self.older_than is None or age >= self.older_than)
            and (self.newer_than is None or age <= self.newer_than)
        )


def filter_options(func: F) -> F:
    """``--type``, ``--error``, ``--older-than``, ``--newer-than``, passed as ``filters``."""

    @functools.wraps(func)
    def wrapper(
        *args: Any,
        types: tuple[str, ...],
        errors: tuple[str, ...],
        older_than: float | None,
        newer_than: float | None,
        **kwargs: Any,
    ) -> Any:
        return func(*args, filters=Filters(types, errors, older_than, newer_than), **kwargs)

    age = "Only messages that failed at {} AGE ago (30s, 10m, 2h, 1d)."
    options = [
        click.option(
            "--type",
            "types",
            multiple=True,
            metavar="NAME",
            help="Only this message type, by wire name (repeatable).",
        ),
        click.option(
            "--error",
            "errors",
            multiple=True,
            metavar="CLASS",
            help="Only this error class, short or qualified name (repeatable).",
        ),
        click.option("--older-than", type=Duration(), metavar="AGE", help=age.format("least")),
        click.option("--newer-than", type=Duration(), metavar="AGE", help=age.format("most")),
    ]
    decorated: Any = wrapper
    for option in reversed(options):
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]


def open_stores(bus: Bus) -> list[Store]:
    """The failure and invalid-message transports (one store if they are one)."""
    roles = {name: "invalid-message transport" for name in [bus.invalid_transport] if name}
    roles.update({name: "failure transport" for name in [bus.failure_transport] if name})
    if not roles:
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


def resolve(items: Sequence[Stored], ids: Sequence[str]) -> list[Stored]:
    """The stored messages with these ids (or unique prefixes of them)."""
    by_id = {item.id: item for item in reversed(items)}
    found: dict[str, Stored] = {}
    missing: list[str] = []
    for wanted in ids:
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


def interactive() -> bool:
    return sys.stdin.isatty()


def select(
    cli: CliContext, ids: Sequence[str], all_: bool, filters: Filters, verb: str, force: bool
) -> list[Stored]:
    """What ``retry`` or ``remove`` applies to: the ids named, or ``--all`` once confirmed."""
    if bool(ids) == all_:
        raise fail(
            "name message ids or use --all, not both"
            if all_
            else f"name the messages to {verb} (ids from `courier failed list`) or use --all",
            exit_codes.USAGE,
        )
    if ids and filters.active:
        raise fail(
            "--type, --error, --older-than and --newer-than narrow --all, not a list of ids",
            exit_codes.USAGE,
        )
    items = load(open_stores(cli.bus()))
    if ids:
        return resolve(items, ids)
    now = time.time()
    selected = [item for item in items if filters.matches(item, now)]
    if selected and not force:
        count = plural(len(selected), "message")
        if not interactive():
            raise fail(
                f"refusing to {verb} {count} without confirmation: standard input is not "
                "a terminal; pass --force",
                exit_codes.USAGE,
            )
        if not click.confirm(f"{verb.capitalize()} {count}?", default=False, err=True):
            raise fail(f"nothing was done ({verb} not confirmed)", exit_codes.USAGE)
    if not selected:
        say(cli.console, "no failed messages match")
    return selected


@click.group("failed")
def command() -> None:
    """Messages that failed for good, and messages that could not be decoded."""


@command.command("list")
@filter_options
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Rows to show, oldest first; 0 for all.",
)
@click.option("--json", "as_json", is_flag=True, help="A JSON list instead of a table.")
@click.pass_obj
def list_(cli: CliContext, filters: Filters, limit: int, as_json: bool) -> None:
    """List failed and invalid messages: id, type, transport, attempts, error, failed at."""
    stores = open_stores(cli.bus())
    items = load(stores)
    now = time.time()
    matching = [item for item in items if filters.matches(item, now)]
    shown = matching[:limit] if limit else matching
    if as_json:
        click.echo(json.dumps([item.row() for item in shown], indent=2))
        return
    if not matching:
        say(cli.console, "no failed messages" + (" match" if filters.active else ""))
    else:
        columns = ("id", "store", "type", "transport", "attempts", "error", "failed at")
        rows = table(*columns, right=["attempts"])
        for item in shown:
            error = item.error
            rows.add_row(
                cell(item.id),
                cell(item.store.name),
                cell(item.type, limit=60),
                cell(item.origin[0]),
                cell(item.envelope.attempt),
                cell(f"{error.short_class}: {error.message}", limit=100),
                cell(timestamp(item.failed_at)),
            )
        print_table(cli.console, rows)
        summary = plural(len(matching), "message")
        invalid = sum(1 for item in matching if item.invalid is not None)
        summary += f" ({invalid} could not be decoded)" if invalid else ""
        if len(shown) < len(matching):
            summary += f"; showing the oldest {len(shown)}, --limit 0 for all"
        say(cli.console, summary)
    hidden = 0 if filters.active else undecodable(stores, items)
    if hidden:
        say(
            cli.console,
            f"note: {plural(hidden, 'more stored message')} could not be decoded by this "
            'process; set app = "module:bus" so courier knows their types',
            style="yellow",
        )


@command.command("show")
@click.argument("ids", nargs=-1, required=True)
@click.option(
    "--traceback-lines",
    type=click.IntRange(min=0),
    default=40,
    show_default=True,
    help="Last lines of the traceback to show; 0 for all that was kept.",
)
@click.option(
    "--max-bytes",
    type=click.IntRange(min=16),
    default=4_096,
    show_default=True,
    help="Most payload characters (or bytes, when binary) to show.",
)
@click.pass_obj
def show(cli: CliContext, ids: tuple[str, ...], traceback_lines: int, max_bytes: int) -> None:
    """Show messages in full: error details, traceback and payload."""
    for index, item in enumerate(resolve(load(open_stores(cli.bus())), ids)):
        if index:
            say(cli.console, "")
        show_one(cli.console, item, traceback_lines, max_bytes)


def show_one(console: Console, item: Stored, traceback_lines: int, max_bytes: int) -> None:
    envelope, error, invalid = item.envelope, item.error, item.invalid
    transport, queue = item.origin
    fields: list[tuple[str, object]] = [
        ("id", item.id),
        ("store", item.store.name + (" (could not be decoded)" if invalid else "")),
        ("type", item.type),
        ("transport", transport or "-"),
        ("queue", queue or "-"),
        ("attempts", envelope.attempt),
        ("created at", timestamp(envelope.timestamp) if invalid is None else None),
        ("failed at", f"{timestamp(item.failed_at)} ({ago(item.failed_at)})"),
        ("correlation id", envelope.correlation_id),
        ("causation id", envelope.causation_id),
        ("error", error.error_class),
    ]
    for name, value in fields:
        if value is not None:
            say(console, f"{name:<15}{escape(str(value), limit=500)}")
    headers = invalid.headers if invalid is not None else dict(envelope.headers)
    if headers:
        say(console, "headers:", style="bold")
        for key, value in sorted(headers.items()):
            say(console, f"  {escape(key, limit=100)}: {escape(value, limit=500)}")
    print_block(console, "message:", error.message, indent="  ")
    if error.traceback:
        left_out, text = tail(error.traceback, traceback_lines)
        note = f" ({left_out}; --traceback-lines 0 for all)" if left_out else ""
        print_block(console, f"traceback{note}:", text)
    if invalid is not None:
        body = invalid.body
    else:
        body = type(envelope.message).__pydantic_serializer__.to_json(envelope.message)
    kind, text = payload_preview(body, max_bytes)
    say(console, f"payload ({kind}):", style="bold")
    say(console, text)


@command.command("retry")
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every message (narrowed by the filters).")
@filter_options
@click.option("--to", metavar="TRANSPORT", help="Send to this transport's default queue instead.")
@click.option("--force", is_flag=True, help="Do not ask for confirmation with --all.")
@click.pass_obj
def retry(
    cli: CliContext,
    ids: tuple[str, ...],
    all_: bool,
    filters: Filters,
    to: str | None,
    force: bool,
) -> None:
    """Send messages back where they failed: same id, attempts reset, then drop them here.

    Invalid messages are decoded again; those that still cannot be decoded
    stay in the store with the new reason (exit 6).
    """
    bus = cli.bus()
    if to is not None:
        check_target(bus, to)
    selected = select(cli, ids, all_, filters, "retry", force)
    for item in selected:
        target = to or item.origin[0]
        if target is None:
            raise fail(
                f"message {item.id} does not say which transport it came from; pass --to TRANSPORT",
                exit_codes.USAGE,
            )
        if target not in bus.transports:
            raise fail(
                f"message {item.id} came from transport {target!r}, which is not configured "
                f"(configured: {', '.join(sorted(bus.transports))}); pass --to TRANSPORT",
                exit_codes.NOT_FOUND,
            )
    if not selected:
        return
    still_invalid = sum(1 for item in selected if not retry_one(bus, item, to, cli.console))
    summary = f"retried {plural(len(selected) - still_invalid, 'message')}"
    if still_invalid:
        summary += f"; {still_invalid} still cannot be decoded and stayed in the store"
        if cli.settings()[0].app is None:
            summary += " (no app is configured: only its message types can be decoded)"
    say(cli.console, summary)
    if still_invalid:
        raise SystemExit(exit_codes.NOT_RETRIED)


def check_target(bus: Bus, to: str) -> None:
    if to not in bus.transports:
        known = ", ".join(sorted(bus.transports))
        raise fail(f"unknown transport {to!r} (configured: {known})", exit_codes.NOT_FOUND)
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
    transport = bus.transport(target)
    queue = queue if target == origin else None
    fresh = envelope.with_(
        attempt=1, error=None, delay=0.0, transport_message_id=None, received=None
    )
    transport.send(fresh, queue)
    item.store.listing.remove(item.id)
    where = target if queue in (None, transport.queue) else f"{target} ({queue})"
    decoded = ", decoded" if invalid is not None else ""
    say(console, f"retried {item.id} ({escape(fresh.type, limit=80)}{decoded}) to {escape(where)}")
    return True


def keep_with_reason(
    item: Stored, invalid: InvalidMessage, error: MessageDecodingFailed | ValidationFailed
) -> None:
    """Replace an invalid message's record by one with the reason it fails for now."""
    message = invalid.model_copy(update={"reason": str(error)})
    details = ErrorDetails.from_exception(error, transport=invalid.transport, queue=invalid.queue)
    # Sent first, so the message is never missing from the store; ``remove``
    # takes the oldest waiting copy with this id, which is the old one.
    item.store.transport.send(item.envelope.with_(message=message, error=details, received=None))
    item.store.listing.remove(item.id)


@command.command("remove")
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every message (narrowed by the filters).")
@filter_options
@click.option("--force", is_flag=True, help="Do not ask for confirmation with --all.")
@click.pass_obj
def remove(
    cli: CliContext, ids: tuple[str, ...], all_: bool, filters: Filters, force: bool
) -> None:
    """Delete messages from the store for good."""
    removed = 0
    selected = select(cli, ids, all_, filters, "remove", force)
    for item in selected:
        if item.store.listing.remove(item.id):
            removed += 1
            type_name = escape(item.type, limit=80)
            say(cli.console, f"removed {item.id} ({type_name}) from {item.store.name}")
        else:
            say(cli.console, f"already gone: {item.id}", style="dim")
    if selected:
        say(cli.console, f"removed {plural(removed, 'message')}")
