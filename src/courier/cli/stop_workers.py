"""``courier stop-workers``: every worker of this configuration stops after the message in hand.

It writes one timestamp to the status store. Each worker reads it about
once a second (its heartbeat thread) and stops if the order is newer than
its own start, finishing and acknowledging the message in hand, then exits
0. Workers started afterwards are not affected, so a supervisor that
restarts them (systemd, Kubernetes) gets fresh ones: the way to roll out
new code without killing a handler halfway.
"""

from __future__ import annotations

import time

import click

from courier.cli.context import CliContext
from courier.cli.output import plural, say
from courier.cli.worker_status import open_board, rows

__all__ = ["command"]


@click.command("stop-workers")
@click.pass_obj
def command(cli: CliContext) -> None:
    """Stop every running worker after the message in hand (they exit 0)."""
    _, store = open_board(cli, read_only=False)
    now = time.time()
    store.request_stop(now)
    running = [status for status in rows(store, now) if not status.is_dead(now)]
    say(
        cli.console,
        f"asked {plural(len(running), 'running worker')} to stop after the message in hand",
    )
