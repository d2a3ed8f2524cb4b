"""``courier deploy systemd|supervisor``: a process-manager recipe for this project's workers.

Prints a systemd unit or a supervisord program (see
:mod:`courier.deploy_recipes`) that runs ``courier consume`` on the
transports named (default: every configured transport a worker consumes,
that is, not the failure and invalid-message stores, not in-process
ones), with the absolute path of this installation's ``courier``, the
working directory, and the configuration file in ``COURIER_CONFIG``.
Nothing of the configuration is copied into the recipe, so no DSN and no
password ever is.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from courier.cli import exit_codes
from courier.cli.context import CliContext, check_transports, fail
from courier.deploy_recipes import Recipe, supervisor_program, systemd_unit

__all__ = ["command", "courier_executable"]


def courier_executable() -> list[str]:
    """This installation's ``courier`` script, absolute; ``python -m courier`` without one."""
    script = Path(sys.executable).absolute().parent / "courier"
    if script.is_file():
        return [str(script)]
    return [str(Path(sys.executable).absolute()), "-m", "courier"]


def consumed_transports(cli: CliContext, names: tuple[str, ...]) -> list[str]:
    bus = cli.bus(read_only=True)
    check_transports(bus, names)
    if names:
        return list(dict.fromkeys(names))
    stores = {bus.failure_transport, bus.invalid_transport}
    found = [
        name
        for name, transport in bus.transports.items()
        if name not in stores and not transport.capabilities.in_process
    ]
    if not found:
        raise fail(
            "no transport to consume: name one (courier deploy systemd NAME)",
            exit_codes.NOT_FOUND,
        )
    return found


@click.command("deploy")
@click.argument("manager", type=click.Choice(["systemd", "supervisor"]))
@click.argument("transports", nargs=-1)
@click.option("--processes", type=click.IntRange(min=1), help="One pool of N worker processes.")
@click.option(
    "--numprocs",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="supervisor: N copies of the program, each its own worker (ids host.1..N).",
)
@click.option("--user", help="The system user the workers run as.")
@click.option(
    "--working-directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where the workers run (default: the current directory).",
)
@click.option("--name", default="courier-worker", show_default=True, help="Unit or program name.")
@click.option(
    "--stop-timeout",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Seconds a stopping worker may take to finish the message in hand before it is killed.",
)
@click.option(
    "--restart-delay",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    help="systemd: seconds before a stopped worker is started again.",
)
@click.option(
    "--consume-options",
    default="",
    help="More courier consume options, as one string: '--time-limit 3600 --metrics-port 9100'.",
)
@click.pass_obj
def command(
    cli: CliContext,
    manager: str,
    transports: tuple[str, ...],
    processes: int | None,
    numprocs: int,
    user: str | None,
    working_directory: Path | None,
    name: str,
    stop_timeout: float,
    restart_delay: float,
    consume_options: str,
) -> None:
    """Print a systemd unit or supervisor program running courier consume on TRANSPORTS.

    TRANSPORTS default to every configured one a worker consumes. The
    configuration file is passed as COURIER_CONFIG, by path: no DSN or
    password is copied into the recipe.
    """
    if numprocs > 1 and manager == "systemd":
        raise fail("--numprocs is for supervisor; with systemd use --processes", exit_codes.USAGE)
    if numprocs > 1 and processes is not None:
        raise fail("choose --numprocs or --processes, not both", exit_codes.USAGE)
    consumed = consumed_transports(cli, transports)
    _, config_file = cli.settings()
    words = [*courier_executable()]
    if cli.app is not None:
        words += ["--app", cli.app]
    words += ["consume", *consumed]
    if processes is not None:
        words += ["--processes", str(processes)]
    try:
        words += shlex.split(consume_options)
    except ValueError as error:
        raise fail(f"--consume-options: {error}", exit_codes.USAGE) from None
    recipe = Recipe(
        name=name,
        command=words,
        transports=consumed,
        working_directory=(working_directory or Path.cwd()).absolute(),
        config_file=config_file.resolve() if config_file is not None else None,
        user=user,
        stop_timeout=stop_timeout,
        restart_delay=restart_delay,
        numprocs=numprocs,
    )
    text = systemd_unit(recipe) if manager == "systemd" else supervisor_program(recipe)
    click.echo(text, nl=False)
