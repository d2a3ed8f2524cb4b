"""``courier dispatch TYPE JSON``: one message from the shell, or many from stdin.

TYPE is a wire name the app's bus knows; JSON is validated by its class,
and errors name the fields, never their values. ``-`` reads JSON lines from
standard input and dispatches them in batches; a bad line stops it, after
the lines before it were dispatched. The envelope ids go to stdout, one a
line; the count to stderr.
"""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING

import click
from pydantic import ValidationError

from courier.cli import exit_codes
from courier.cli.context import CliContext, fail
from courier.cli.output import Duration
from courier.dead_letters import InvalidMessage
from courier.errors import HandlerFailed, MessageTooLarge, NoHandlerForMessage, ValidationFailed

if TYPE_CHECKING:
    from courier.bus import Bus
    from courier.message import Message

__all__ = ["command", "parse"]

#: At most this many known types are named when TYPE is unknown.
SHOWN_TYPES = 20


class BadInput(Exception):
    """A payload that cannot become the message: the reason, without its values."""


def message_type(bus: Bus, name: str) -> type[Message]:
    cls = bus.registry.resolve(name)
    if cls is None or cls is InvalidMessage:
        known = [known for known in bus.registry.names() if known != InvalidMessage.message_name]
        shown = ", ".join(known[:SHOWN_TYPES]) or "none"
        if len(known) > SHOWN_TYPES:
            shown += f" and {len(known) - SHOWN_TYPES} more"
        raise fail(
            f"unknown message type {name[:80]!r} (known: {shown})",
            exit_codes.NOT_FOUND,
        )
    return cls


def parse(cls: type[Message], text: str | bytes) -> Message:
    """``text`` as a ``cls``; :class:`BadInput` names what is wrong, never a value."""
    try:
        return cls.model_validate_json(text)
    except ValidationError as error:
        first = error.errors(include_input=False, include_url=False)[0]
        if first["type"] == "json_invalid":
            reason = first.get("ctx", {}).get("error", "not JSON")
            raise BadInput(f"malformed JSON: {reason}") from None
        if first["type"] == "model_type" and not first["loc"]:
            raise BadInput(f"{cls.message_name} takes a JSON object") from None
        raise BadInput(str(ValidationFailed.from_pydantic(cls.message_name, error))) from None


@click.command("dispatch")
@click.argument("type_name", metavar="TYPE")
@click.argument("payload", metavar="JSON")
@click.option("--delay", type=Duration(), default=0.0, help="Deliver after this long (10s, 5m).")
@click.option("--priority", type=click.IntRange(0, 9), default=0, help="0-9, 9 most urgent.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="With -: messages handed to the transport at once.",
)
@click.pass_obj
def command(
    cli: CliContext, type_name: str, payload: str, delay: float, priority: int, batch_size: int
) -> None:
    """Validate JSON as a TYPE message and dispatch it; JSON - reads JSON lines from stdin."""
    bus = cli.bus(need_app=True)
    cls = message_type(bus, type_name)
    try:
        if payload != "-":
            try:
                message = parse(cls, payload)
            except BadInput as error:
                raise fail(str(error), exit_codes.USAGE) from None
            click.echo(bus.dispatch(message, delay=delay, priority=priority).id)
            return
        dispatch_lines(bus, cls, delay, priority, batch_size)
    except (NoHandlerForMessage, MessageTooLarge) as error:
        raise fail(str(error), exit_codes.USAGE) from None
    except HandlerFailed as error:
        raise fail(f"a handler failed in this process: {error}", exit_codes.ERROR) from None


def dispatch_lines(
    bus: Bus, cls: type[Message], delay: float, priority: int, batch_size: int
) -> None:
    stream = sys.stdin
    batch: list[Message] = []
    dispatched = 0

    def flush() -> None:
        nonlocal dispatched
        if batch:
            for envelope in bus.dispatch_many(batch, delay=delay, priority=priority):
                click.echo(envelope.id)
            dispatched += len(batch)
            batch.clear()

    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            batch.append(parse(cls, line.rstrip("\r\n")))
        except BadInput as error:
            flush()
            reason = re.sub(r" at line 1 column (\d+)$", r" at column \1", str(error))
            before = f"{dispatched} message{'s' if dispatched != 1 else ''}"
            raise fail(
                f"line {number}: {reason} ({before} before it were dispatched)", exit_codes.USAGE
            ) from None
        if len(batch) >= batch_size:
            flush()
    flush()
    click.echo(f"dispatched {dispatched} message{'s' if dispatched != 1 else ''}", err=True)
