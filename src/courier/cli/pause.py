"""``courier pause`` / ``courier resume``: stop and restart consumption without a restart.

A paused transport stays paused in the status store until resumed: every
worker that consumes it, running now or started later, finishes what it
holds and asks the broker for nothing more from it (within about a
second); its other transports carry on. Messages keep arriving and wait
in the queue, which ``courier stats`` shows growing.
"""

from __future__ import annotations

import click

from courier.cli import exit_codes
from courier.cli.context import CliContext, fail
from courier.cli.output import say
from courier.cli.worker_status import open_board

__all__ = ["commands"]


def _check(cli: CliContext, transports: tuple[str, ...]) -> None:
    bus = cli.bus()
    for name in transports:
        if name not in bus.transports:
            known = ", ".join(sorted(bus.transports)) or "none"
            raise fail(f"unknown transport {name!r} (configured: {known})", exit_codes.NOT_FOUND)


@click.command("pause")
@click.argument("transports", nargs=-1, required=True)
@click.pass_obj
def pause(cli: CliContext, transports: tuple[str, ...]) -> None:
    """Workers stop receiving from TRANSPORTS (after the message in hand) until resumed."""
    _check(cli, transports)
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
    _check(cli, transports)
    _, store = open_board(cli, read_only=False)
    for name in transports:
        store.resume(name)
    say(cli.console, f"resumed {' '.join(transports)}")


commands = [pause, resume]
