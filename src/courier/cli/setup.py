"""``courier setup``: declare what the configuration implies, list what it no longer does.

Every queue, subscription queue and dead-letter store of the transports
named (default: all) is declared; declaring is idempotent. Then the queues
a transport knows that look like ``<topic>.<subscription>`` for a topic
routed to it, but that no subscription claims any more, are listed as
orphaned: renaming a handler renames its subscription, and the old queue
keeps whatever was published to it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from courier.cli.output import escape, say
from courier.cli.stats import pick_transports
from courier.transports.base import Transport, subscription_queue

if TYPE_CHECKING:
    from collections.abc import Sequence

    from courier.bus import Bus
    from courier.cli.context import CliContext

__all__ = ["command", "orphaned_queues"]


def known_queues(transport: Transport) -> list[str] | None:
    """Every queue the broker has, where the transport can tell (``queues()``)."""
    queues = getattr(transport, "queues", None)
    if not callable(queues):
        return None
    found: Sequence[str] = queues()
    return list(found)


def orphaned_queues(bus: Bus, name: str) -> tuple[list[tuple[str, str, bool]], bool]:
    """``(queue, topic, still published to)`` no subscription claims, and whether complete.

    A subscription the broker remembers (``setup`` recorded it) but no
    handler or route claims is an orphan, and publishing still reaches it;
    where the transport can list its queues (``queues()``), so is a
    ``<topic>.<name>`` queue nobody claims. Without ``queues()`` only the
    remembered subscriptions are checked: the second value is False.
    """
    transport = bus.transport(name)
    queues, topics = bus.layout(name)
    existing = known_queues(transport)
    claimed = set(queues) | {
        subscription_queue(topic, sub) for topic, subs in topics.items() for sub in subs
    }
    found: dict[str, tuple[str, bool]] = {}
    for topic, subscriptions in sorted(topics.items()):
        remembered = set(transport.subscriptions(topic))
        for subscription in sorted(remembered - set(subscriptions)):
            found[subscription_queue(topic, subscription)] = (topic, True)
        for queue in existing or ():
            rest = queue[len(topic) + 1 :]
            if queue.startswith(topic + ".") and rest and "." not in rest and queue not in claimed:
                found.setdefault(queue, (topic, rest in remembered))
    orphans = [(queue, topic, published) for queue, (topic, published) in found.items()]
    return orphans, existing is not None or not topics


@click.command("setup")
@click.argument("transports", nargs=-1)
@click.pass_obj
def command(cli: CliContext, transports: tuple[str, ...]) -> None:
    """Declare queues, subscription queues and dead-letter stores of TRANSPORTS (default: all)."""
    bus = cli.bus()
    names = pick_transports(bus, transports) if transports else list(bus.transports)
    for store in (bus.failure_transport, bus.invalid_transport):
        if store is not None and store not in names:
            names.append(store)
    bus.setup(names)
    stores = (
        ("failure store", bus.failure_transport),
        ("invalid-message store", bus.invalid_transport),
    )
    for name in names:
        transport = bus.transport(name)
        if transport.capabilities.in_process:
            say(cli.console, f"{name}: in-process (sync://), nothing to declare")
            continue
        queues, topics = bus.layout(name)
        declared = list(dict.fromkeys([transport.queue, *queues]))
        parts = [f"queue{'s' if len(declared) > 1 else ''} {', '.join(declared)}"]
        for topic, subscriptions in sorted(topics.items()):
            listed = ", ".join(subscription_queue(topic, s) for s in subscriptions)
            parts.append(f"topic {topic}: {listed or 'no subscriptions'}")
        roles = ", ".join(role for role, store in stores if store == name)
        say(cli.console, f"{name}: {'; '.join(parts)}" + (f" ({roles})" if roles else ""))
    report_orphans(cli, bus, names)


def report_orphans(cli: CliContext, bus: Bus, names: list[str]) -> None:
    console = cli.console
    if cli.settings()[0].app is None:
        say(
            console,
            "orphaned queues: not checked (no app is configured, and the "
            "subscriptions are its handlers)",
            style="dim",
        )
        return
    orphans: list[str] = []
    partial: list[str] = []
    for name in names:
        if bus.transport(name).capabilities.in_process:
            continue
        found, complete = orphaned_queues(bus, name)
        if not complete:
            partial.append(name)
        for queue, topic, published in found:
            note = "; still published to: the broker remembers it" if published else ""
            orphans.append(f"  {name}: {escape(queue, limit=200)} (topic {topic}{note})")
    if orphans:
        say(
            console,
            "orphaned queues (no subscription claims them; rename the handler back, "
            "name its subscription explicitly, or drain and delete them):",
            style="yellow",
        )
        for line in orphans:
            say(console, line)
    else:
        say(console, "no orphaned queues")
    for name in partial:
        say(
            console,
            f"{name}: cannot list its queues; only the subscriptions it remembers were checked",
            style="dim",
        )
