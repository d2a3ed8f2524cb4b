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

Messages a broker buried itself (beanstalkd's buried jobs: the backstop when
the failure-store write failed, or when there is no failure transport) are
listed with them, as ``buried:<transport>:<key>``; ``retry`` puts one back in
its own queue unchanged and ``remove`` deletes it (:mod:`courier.cli.buried`).

This module is the commands: options, confirmation, printing. What a store
holds and how a message leaves it is :mod:`courier.cli.failure_store`.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from typing import TYPE_CHECKING, Any, TypeVar

import click

from courier.cli import exit_codes
from courier.cli.buried import PREFIX, Buried, delete, holders, kick, load_buried, resolve_buried
from courier.cli.context import CliContext, fail
from courier.cli.failure_store import (
    Filters,
    check_target,
    load,
    open_stores,
    resolve,
    retry_one,
    short_ids,
    undecodable,
)
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

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from rich.console import Console

    from courier.bus import Bus
    from courier.cli.buried import Holder, Loaded
    from courier.cli.failure_store import Store, Stored

__all__ = ["command"]

F = TypeVar("F", bound="Callable[..., Any]")


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


def interactive() -> bool:
    return sys.stdin.isatty()


def opened(bus: Bus) -> tuple[list[Store], list[Holder]]:
    """The failure stores and the transports with buried messages; one of them at least."""
    found = holders(bus)
    return open_stores(bus, required=not found), found


def named(
    items: Sequence[Stored], found: Sequence[Holder], ids: Sequence[str]
) -> tuple[list[Stored], list[Buried]]:
    """What ``ids`` name: ``buried:`` ids among the buried messages, the rest in the stores."""
    buried, unknown = resolve_buried(found, [wanted for wanted in ids if wanted.startswith(PREFIX)])
    stored = resolve(items, [wanted for wanted in ids if not wanted.startswith(PREFIX)] + unknown)
    clash = {item.id for item in buried} & {item.id for item in stored}
    if clash:
        raise fail(
            f"id {sorted(clash)[0][:80]!r} names both a stored and a buried message; "
            "remove one with the broker's own tools",
            exit_codes.USAGE,
        )
    return stored, buried


def select(
    cli: CliContext,
    ids: Sequence[str],
    all_: bool,
    filters: Filters,
    verb: str,
    force: bool,
    *,
    with_buried: bool = True,
) -> tuple[list[Stored], list[Buried]]:
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
    stores, found = opened(cli.bus(read_only=True))
    items = load(stores)
    if ids:
        return named(items, found, ids)
    now = time.time()
    selected = [item for item in items if filters.matches(item, now)]
    buried = load_buried(found, limit=0, tolerant=False).items if with_buried else []
    buried = [item for item in buried if filters.matches(item, now)]
    count = len(selected) + len(buried)
    if count and not force:
        what = plural(count, "message")
        if not interactive():
            raise fail(
                f"refusing to {verb} {what} without confirmation: standard input is not "
                "a terminal; pass --force",
                exit_codes.USAGE,
            )
        if not click.confirm(f"{verb.capitalize()} {what}?", default=False, err=True):
            raise fail(f"nothing was done ({verb} not confirmed)", exit_codes.USAGE)
    if not count:
        say(cli.console, "no failed messages match")
    return selected, buried


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
@click.option("--json", "as_json", is_flag=True, help="A JSON list (whole ids) instead of a table.")
@click.option(
    "--wide", is_flag=True, help="Whole ids (the table shows the shortest unique prefix)."
)
@click.pass_obj
def list_(cli: CliContext, filters: Filters, limit: int, as_json: bool, wide: bool) -> None:
    """List failed, invalid and buried messages: id, type, transport, attempts, error, failed at.

    Ids are shortened to a prefix no other message shares (8 characters or
    more); every command takes such a prefix in place of a whole id. A
    buried message's id (``buried:<transport>:<key>``) is always whole.
    """
    stores, found = opened(cli.bus(read_only=True))
    items = load(stores)
    buried = load_buried(found, limit=limit, tolerant=True)
    now = time.time()
    both: list[Stored | Buried] = [*items, *buried.items]
    everything = sorted(both, key=lambda item: item.failed_at)
    matching = [item for item in everything if filters.matches(item, now)]
    shown = matching[:limit] if limit else matching
    if as_json:
        click.echo(json.dumps([item.row() for item in shown], indent=2))
    elif not matching:
        say(cli.console, "no failed messages" + (" match" if filters.active else ""))
    else:
        print_rows(cli.console, shown, {} if wide else short_ids([item.id for item in items]))
        summary = plural(len(matching), "message")
        invalid = sum(
            1 for item in matching if not isinstance(item, Buried) and item.invalid is not None
        )
        held = sum(1 for item in matching if isinstance(item, Buried))
        notes = [f"{invalid} could not be decoded"] if invalid else []
        notes += [f"{held} buried on the broker"] if held else []
        summary += f" ({', '.join(notes)})" if notes else ""
        if len(shown) < len(matching):
            summary += f"; showing the oldest {len(shown)}, --limit 0 for all"
        say(cli.console, summary)
    if not as_json:
        print_notes(cli.console, stores, items, buried, filters)
    for name, error in buried.unreachable:
        # On stderr, and exit 5: a script reading --json must not take a part for the whole.
        click.echo(
            f"warning: could not list the buried messages of {name!r}: {escape(error, limit=300)}",
            err=True,
        )
    if buried.unreachable:
        raise SystemExit(exit_codes.TRANSPORT)


def print_rows(console: Console, shown: Sequence[Stored | Buried], short: dict[str, str]) -> None:
    columns = ("id", "store", "type", "transport", "attempts", "error", "failed at")
    rows = table(*columns, right=["attempts"])
    for item in shown:
        error = item.error
        rows.add_row(
            cell(short.get(item.id, item.id)),
            cell("buried" if isinstance(item, Buried) else item.store.name),
            cell(item.type, limit=60),
            cell(item.origin[0]),
            cell(item.attempts if isinstance(item, Buried) else item.envelope.attempt),
            cell(f"{error.short_class}: {error.message}", limit=100),
            cell(timestamp(item.failed_at)),
        )
    print_table(console, rows)


def print_notes(
    console: Console,
    stores: Sequence[Store],
    items: Sequence[Stored],
    buried: Loaded,
    filters: Filters,
) -> None:
    """What the listing could not show: undecodable records, burials past the limit."""
    hidden = 0 if filters.active else undecodable(stores, items)
    if hidden:
        say(
            console,
            f"note: {plural(hidden, 'more stored message')} could not be decoded by this "
            'process; set app = "module:bus" so courier knows their types',
            style="yellow",
        )
    if buried.unlisted:
        say(
            console,
            f"note: {plural(buried.unlisted, 'more buried message')} not listed "
            "(--limit 0 for all)",
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
    stores, found = opened(cli.bus(read_only=True))
    stored, buried = named(load(stores), found, ids)
    chosen: list[Stored | Buried] = [*stored, *buried]
    for index, item in enumerate(chosen):
        if index:
            say(cli.console, "")
        if isinstance(item, Buried):
            show_buried(cli.console, item, max_bytes)
        else:
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


def show_buried(console: Console, item: Buried, max_bytes: int) -> None:
    message = item.message
    fields: list[tuple[str, object]] = [
        ("id", item.id),
        ("store", "buried (on the broker, not in the failure store)"),
        ("type", item.type),
        ("transport", item.holder.name),
        ("queue", message.queue),
        ("attempts", item.attempts),
        ("deliveries", message.deliveries),
        ("sent at", f"{timestamp(message.sent_at)} ({ago(message.sent_at)})"),
        ("message id", message.envelope.id if message.envelope is not None else None),
        ("error", item.error.error_class),
    ]
    for name, value in fields:
        if value is not None:
            say(console, f"{name:<15}{escape(str(value), limit=500)}")
    headers = item.headers
    if headers:
        say(console, "headers:", style="bold")
        for key, value in sorted(headers.items()):
            say(console, f"  {escape(key, limit=100)}: {escape(value, limit=500)}")
    print_block(console, "message:", item.error.message, indent="  ")
    envelope = message.envelope
    if envelope is not None:
        body = type(envelope.message).__pydantic_serializer__.to_json(envelope.message)
    else:
        body = message.body
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
    stay in the store with the new reason (exit 6). A buried message is put
    back in its own queue as it is (on beanstalkd ``kick-job``, which wakes
    no other job); ``--to`` does not apply to it, and ``--all --to`` leaves
    buried messages where they are.
    """
    bus = cli.bus()
    if to is not None:
        check_target(bus, to)
    selected, buried = select(cli, ids, all_, filters, "retry", force, with_buried=to is None)
    if buried and to is not None:
        raise fail(
            f"{buried[0].id} is buried: it can only go back to its own queue; retry it "
            "without --to",
            exit_codes.USAGE,
        )
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
    if not selected and not buried:
        return
    kicked = sum(1 for item in buried if kick_one(item, cli.console))
    still_invalid = sum(1 for item in selected if not retry_one(bus, item, to, cli.console))
    summary = f"retried {plural(len(selected) - still_invalid + kicked, 'message')}"
    if still_invalid:
        summary += f"; {still_invalid} still cannot be decoded and stayed in the store"
        if cli.settings()[0].app is None:
            summary += " (no app is configured: only its message types can be decoded)"
    say(cli.console, summary)
    if still_invalid:
        raise SystemExit(exit_codes.NOT_RETRIED)


def kick_one(item: Buried, console: Console) -> bool:
    where = f"{item.holder.name} ({item.message.queue})"
    if kick(item):
        say(console, f"kicked {item.id} ({escape(item.type, limit=80)}) back to {escape(where)}")
        return True
    say(console, f"no longer buried: {item.id}", style="dim")
    return False


@command.command("remove")
@click.argument("ids", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Every message (narrowed by the filters).")
@filter_options
@click.option("--force", is_flag=True, help="Do not ask for confirmation with --all.")
@click.pass_obj
def remove(
    cli: CliContext, ids: tuple[str, ...], all_: bool, filters: Filters, force: bool
) -> None:
    """Delete messages from the store, or buried ones from the broker, for good."""
    removed = 0
    selected, buried = select(cli, ids, all_, filters, "remove", force)
    chosen: list[Stored | Buried] = [*selected, *buried]
    for item in chosen:
        if isinstance(item, Buried):
            gone, where = delete(item), f"{item.holder.name} ({item.message.queue})"
        else:
            gone, where = item.store.listing.remove(item.id), item.store.name
        if gone:
            removed += 1
            type_name = escape(item.type, limit=80)
            say(cli.console, f"removed {item.id} ({type_name}) from {escape(where)}")
        else:
            say(cli.console, f"already gone: {item.id}", style="dim")
    if selected or buried:
        say(cli.console, f"removed {plural(removed, 'message')}")
