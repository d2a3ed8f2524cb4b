"""``courier workers``: every worker of this configuration, alive, stalled or dead.

Read from the status store, where each worker beats every few seconds
(``courier consume --heartbeat``). A worker is *dead* once its last beat is
older than three of its intervals (killed, or its host gone), *stalled*
when it beats but moved no counter for ``--stalled-after`` seconds while a
queue it consumes holds ready messages.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

import click
from rich.text import Text

from courier.cli.context import CliContext
from courier.cli.output import Duration, ago, cell, escape, print_table, say, table
from courier.cli.worker_status import (
    STALLED_AFTER,
    Judged,
    consumed,
    judge,
    open_board,
    ready_counts,
    rows,
)

__all__ = ["command"]

#: Dead workers are listed (without ``--all``) this long after their last beat.
RECENTLY_DEAD = 600.0


def _state(judged: Judged, now: float) -> Text:
    status = judged.status
    text = status.state
    if status.state.startswith("handling") and status.state_since:
        text += f" {ago(status.state_since, now).removesuffix(' ago')}"
    if judged.dead:
        return Text(f"dead ({text})" if status.state != "stopped" else "stopped", style="red")
    if judged.stalled:
        return Text(f"STALLED {text}", style="bold red")
    return Text(text)


def _counts(status: Any) -> str:
    return f"{status.handled}/{status.failed}/{status.retried}"


@click.command("workers")
@click.option("--json", "as_json", is_flag=True, help="A JSON list instead of a table.")
@click.option(
    "--all", "show_all", is_flag=True, help="Also workers dead for longer than 10 minutes."
)
@click.option(
    "--stalled-after",
    type=Duration(),
    default=STALLED_AFTER,
    show_default=True,
    help="Seconds without progress, while its queues hold ready messages, that make "
    "a live worker stalled.",
)
@click.pass_obj
def command(cli: CliContext, as_json: bool, show_all: bool, stalled_after: float) -> None:
    """Live and recently dead workers: state, handled/failed/retried, memory, last beat."""
    bus, store = open_board(cli, read_only=True)
    now = time.time()
    statuses = [
        status
        for status in rows(store, now)
        if show_all or now - status.last_beat <= RECENTLY_DEAD or not status.is_dead(now)
    ]
    live = [status for status in statuses if not status.is_dead(now)]
    ready = ready_counts(bus, consumed(live))
    for error in ready.errors:
        click.echo(f"note: could not count ready messages ({escape(error)})", err=True)
    paused = store.paused() if statuses else frozenset()
    judged = [judge(s, now, ready, stalled_after=stalled_after, paused=paused) for s in statuses]
    if as_json:
        click.echo(
            json.dumps(
                [{**dataclasses.asdict(j.status), "verdict": j.verdict} for j in judged], indent=2
            )
        )
        return
    if not judged:
        say(cli.console, "no workers have reported to the status store")
        return
    result = table(
        "worker", "instance", "state", "h/f/r", "rss MiB", "beat", right=["h/f/r", "rss MiB"]
    )
    for item in judged:
        status = item.status
        result.add_row(
            cell(status.worker_id, limit=24),
            cell(status.instance_id),
            _state(item, now),
            cell(_counts(status)),
            cell(f"{status.rss_mib:.0f}"),
            cell(ago(status.last_beat, now)),
        )
    print_table(cli.console, result)
    if paused:
        say(cli.console, f"paused: {', '.join(sorted(paused))}", style="yellow")
