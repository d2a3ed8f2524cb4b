"""``courier debug``: what the app and the configuration add up to.

The routing table, the handlers and their subscriptions, the transports
with their DSNs masked (passwords and secret options never print) and
capabilities, the middleware stacks in order, and the dead-letter stores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click
from rich.text import Text

from courier.cli.output import cell, print_table, say, table
from courier.dead_letters import InvalidMessage
from courier.message import Event, Message
from courier.routing import CATCH_ALL, Route
from courier.transports.base import Capabilities, subscription_queue

if TYPE_CHECKING:
    from courier.bus import Bus
    from courier.cli.context import CliContext

__all__ = ["command", "describe_capabilities"]


def describe_capabilities(capabilities: Capabilities) -> str:
    found = []
    if capabilities.delay:
        limit = capabilities.max_delay
        found.append("delay" + (f" (max {limit:g}s)" if limit is not None else ""))
    for flag in ("priority", "lease", "native_dead_letter", "delivery_count", "listable"):
        if getattr(capabilities, flag):
            found.append(flag.replace("_", " "))
    if capabilities.max_message_size is not None:
        found.append(f"max {capabilities.max_message_size:,} bytes")
    found.append("durable" if capabilities.durable else "not durable")
    if capabilities.in_process:
        found.append("in process")
    return ", ".join(found)


def destination(bus: Bus, message_type: type[Message] | None, name: str, route: Route) -> str:
    is_event = (message_type is not None and issubclass(message_type, Event)) or bool(
        route.topic or route.subscriptions
    )
    if is_event:
        topic = route.topic or (message_type.message_name if message_type else name)
        return f"topic {topic}"
    if route.transport in bus.transports:
        return f"queue {route.queue or bus.transport(route.transport).queue}"
    return f"queue {route.queue or '?'}"


def subscriptions_of(bus: Bus, message_type: type[Message] | None, route: Route | None) -> str:
    names = set(route.subscriptions if route else ())
    if message_type is not None:
        names |= set(bus.handlers.subscriptions(message_type))
    return ", ".join(sorted(names))


def show_routing(cli: CliContext, bus: Bus) -> None:
    routes = bus.router.routes()
    rows = table(
        "message type", "kind", "transport", "destination", "subscriptions", title="Routing"
    )
    types = {cls.message_name: cls for cls in bus.registry if cls is not InvalidMessage}
    for name in sorted(set(routes) | set(types)):
        cls = types.get(name)
        route = routes.get(name)
        via = ""
        if route is None and cls is not None:
            route = bus.router.route_for(cls)
            via = " (via *)" if route is not None else ""
        if cls is not None:
            kind = "event" if issubclass(cls, Event) else "command"
        else:
            kind = (
                "event" if route is not None and (route.topic or route.subscriptions) else "command"
            )
        if name == CATCH_ALL:
            kind = "everything else"
        elif cls is None:
            kind += " (class not imported)"
        subscriptions = subscriptions_of(bus, cls, route) or None
        if route is None:
            where, what = "(in process)", "handled when dispatched"
        else:
            where, what = route.transport + via, destination(bus, cls, name, route)
        rows.add_row(cell(name), cell(kind), cell(where), cell(what), cell(subscriptions))
    print_table(cli.console, rows)


def show_handlers(cli: CliContext, bus: Bus) -> None:
    specs = sorted(bus.handlers.all(), key=lambda s: (s.message_type.message_name, s.name))
    if not specs:
        hint = (
            ""
            if cli.settings()[0].app is not None
            else (' (no app is configured: set app = "module:bus" to see them)')
        )
        say(cli.console, f"Handlers: none{hint}")
        say(cli.console, "")
        return
    rows = table("message type", "handler", "subscription", "queue", title="Handlers")
    for spec in specs:
        message_type = spec.message_type
        route = bus.router.route_for(message_type)
        if route is None or bus.transport(route.transport).capabilities.in_process:
            queue = "(in process)"
        elif spec.subscription is not None:
            queue = subscription_queue(bus.router.topic_of(message_type, route), spec.subscription)
        else:
            queue = route.queue or bus.transport(route.transport).queue
        rows.add_row(
            cell(message_type.message_name), cell(spec.name), cell(spec.subscription), cell(queue)
        )
    print_table(cli.console, rows)


def show_transports(cli: CliContext, bus: Bus) -> None:
    rows = table("transport", "dsn", "queue", "capabilities", "role", title="Transports")
    stores = (
        ("failure store", bus.failure_transport),
        ("invalid-message store", bus.invalid_transport),
    )
    for name, transport in sorted(bus.transports.items()):
        dsn = bus.dsn(name)
        shown = str(dsn) if dsn is not None else f"({type(transport).__name__} object)"
        roles = ", ".join(role for role, store in stores if store == name)
        rows.add_row(
            cell(name),
            cell(shown, limit=None),
            cell(transport.queue),
            cell(describe_capabilities(transport.capabilities)),
            cell(roles or None),
        )
    print_table(cli.console, rows)


def show_middleware(cli: CliContext, bus: Bus) -> None:
    stacks = (
        ("Consume middleware", bus.consume_middleware()),
        ("Dispatch middleware", bus.dispatch_middleware()),
    )
    for title, stack in stacks:
        say(cli.console, Text(f"{title} (outermost first):", style="bold"))
        if not stack:
            say(cli.console, "  none")
        for number, layer in enumerate(stack, 1):
            kind = type(layer)
            say(cli.console, f"  {number}. {kind.__qualname__} ({kind.__module__})")


@click.command("debug")
@click.pass_obj
def command(cli: CliContext) -> None:
    """Show routing, handlers and subscriptions, transports, middleware."""
    bus = cli.bus(read_only=True)
    _, file = cli.settings()
    if file is not None:
        say(cli.console, f"configuration: {file}")
    else:
        say(cli.console, "configuration: none found here or in a parent folder (the defaults)")
    show_routing(cli, bus)
    show_handlers(cli, bus)
    show_transports(cli, bus)
    show_middleware(cli, bus)
    say(cli.console, "")
    say(cli.console, f"failure transport: {bus.failure_transport or 'none'}")
    say(cli.console, f"invalid-message transport: {bus.invalid_transport or 'none'}")
    store = bus.poison.store
    say(cli.console, f"status store: {store.describe() if store is not None else 'none'}")
