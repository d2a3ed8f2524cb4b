"""``courier stats``: how many messages each queue holds, by state.

For every transport (default: all configured, except in-process ones) the
queues the configuration implies: the default queue, command queues and
each topic's subscription queues, with ready, in-flight, delayed and dead
counts; ``-`` where the broker cannot tell.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from courier.cli.context import CliContext, check_transports
from courier.cli.output import cell, print_table, table
from courier.transports.base import subscription_queue

if TYPE_CHECKING:
    from courier.bus import Bus

__all__ = ["command", "pick_transports"]

COUNTS = ("ready", "in_flight", "delayed", "dead")


def pick_transports(bus: Bus, names: tuple[str, ...]) -> list[str]:
    """The transports named (each must exist), or every one that is not in-process."""
    check_transports(bus, names)
    if names:
        return list(dict.fromkeys(names))
    return [
        name for name, transport in bus.transports.items() if not transport.capabilities.in_process
    ]


def queues_of(bus: Bus, name: str) -> list[str]:
    """Default queue, command queues, then every subscription queue."""
    queues, topics = bus.layout(name)
    for topic, subscriptions in sorted(topics.items()):
        queues += [subscription_queue(topic, subscription) for subscription in subscriptions]
    return list(dict.fromkeys(queues))


@click.command("stats")
@click.argument("transports", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="A JSON list instead of a table.")
@click.pass_obj
def command(cli: CliContext, transports: tuple[str, ...], as_json: bool) -> None:
    """Ready, in-flight, delayed and dead messages per queue of TRANSPORTS (default: all)."""
    bus = cli.bus(read_only=True)
    rows: list[dict[str, Any]] = []
    for name in pick_transports(bus, transports):
        for counts in bus.transport(name).stats(queues_of(bus, name)):
            rows.append(
                {
                    "transport": name,
                    "queue": counts.queue,
                    **{field: getattr(counts, field) for field in COUNTS},
                }
            )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        cli.console.print("no transports to show", markup=False, highlight=False)
        return
    result = table(
        "transport",
        "queue",
        "ready",
        "in-flight",
        "delayed",
        "dead",
        right=["ready", "in-flight", "delayed", "dead"],
    )
    for row in rows:
        result.add_row(
            cell(row["transport"]), cell(row["queue"]), *(cell(row[field]) for field in COUNTS)
        )
    print_table(cli.console, result)
