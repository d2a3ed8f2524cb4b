"""``courier pause`` / ``courier resume``: stop and restart consumption without a restart.

A paused transport stays paused in the status store until resumed: every
worker that consumes it, running now or started later, finishes what it
holds and asks the broker for nothing more from it (within about a
second); its other transports carry on. Messages keep arriving and wait
in the queue, which ``courier stats`` shows growing.
"""

from __future__ import annotations

import click

from courier.cli.context import CliContext, check_transports
from courier.cli.output import say
from courier.cli.worker_status import open_board

__all__ = ["commands"]


@click.command("pause")
@click.argument("transports", nargs=-1, required=True)
@click.pass_obj
def pause(cli: CliContext, transports: tuple[str, ...]) -> None:
    """Workers stop receiving from TRANSPORTS (after the message in hand) until resumed."""
    check_transports(cli.bus(), transports)
    _, store = open_board(cli, read_only=False)
    for name in transports:
        store.pause(name)
    names = " ".join(transports)
    say(cli.console, f"paused {names}; `courier resume {names}` to consume again")


@click.command("resume")
@click.argument("transports", nargs=-1, required=True)
@click.pass_obj
def resume(cli: CliContext, transports: tuple[str, ...]) -> None:
    """Workers receive from TRANSPORTS again."""
    check_transports(cli.bus(), transports)
    _, store = open_board(cli, read_only=False)
    for name in transports:
        store.resume(name)
    say(cli.console, f"resumed {' '.join(transports)}")


commands = [pause, resume]
