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

    from courier.cli.failure_store import Stored

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
    items = load(open_stores(cli.bus(read_only=True)))
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
@click.option("--json", "as_json", is_flag=True, help="A JSON list (whole ids) instead of a table.")
@click.option(
    "--wide", is_flag=True, help="Whole ids (the table shows the shortest unique prefix)."
)
@click.pass_obj
def list_(cli: CliContext, filters: Filters, limit: int, as_json: bool, wide: bool) -> None:
    """List failed and invalid messages: id, type, transport, attempts, error, failed at.

    Ids are shortened to a prefix no other message shares (8 characters or
    more); every command takes such a prefix in place of a whole id.
    """
    stores = open_stores(cli.bus(read_only=True))
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
        shortened = {} if wide else short_ids([item.id for item in items])
        for item in shown:
            error = item.error
            rows.add_row(
                cell(shortened.get(item.id, item.id)),
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
    for index, item in enumerate(resolve(load(open_stores(cli.bus(read_only=True))), ids)):
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
