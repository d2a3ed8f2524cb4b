"""The ``courier`` command.

::

    courier consume email                     # run a worker
    courier failed list                       # what failed for good
    courier stats                             # queue depths
    courier setup                             # declare queues and subscriptions
    courier debug                             # routing, handlers, transports
    courier dispatch email.send '{"to": ...}' # one message from the shell
    courier workers                           # the workers, alive, stalled or dead
    courier stop-workers                      # every worker stops after its message
    courier pause email / courier resume email
    courier health                            # exit 0 if the workers keep up

Exit codes are listed in :mod:`courier.cli.exit_codes`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

import click

from courier.cli import exit_codes
from courier.cli.context import CliContext, CliError
from courier.config import configuration_file
from courier.errors import ConfigurationError, TransportError
from courier.transports.sqlite_connection import NoDatabase

__all__ = ["main"]

logger = logging.getLogger("courier.cli")


class CourierGroup(click.Group):
    """Turns every error into one ``error:`` line on stderr and a documented exit code.

    courier's own errors (bad configuration, a broker that cannot be
    reached) and click's (an unknown option, a missing argument) alike: the
    user reads one line in one style, and ``-v`` shows the detail.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigurationError as error:
            raise CliError(str(error), exit_codes.USAGE) from None
        except NoDatabase as error:
            raise CliError(str(error), exit_codes.NOT_FOUND) from None
        except TransportError as error:
            logger.debug("broker error in full", exc_info=error)
            raise CliError(str(error), exit_codes.TRANSPORT) from None

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as error:
            click.echo(error.format_message())  # a group asked for without a command: its help
            sys.exit(error.exit_code)
        except click.UsageError as error:
            path = error.ctx.command_path.split()[1:] if error.ctx is not None else []
            where = " ".join(["courier", *path])
            click.echo(f"error: {error.format_message()} (see '{where} --help')", err=True)
            sys.exit(error.exit_code)
        except click.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(exit_codes.ERROR)
        sys.exit(result if isinstance(result, int) else exit_codes.OK)


def _use_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    cli = ctx.find_object(CliContext)
    if value is None or cli is None:
        return
    cli.use_config(value)
    # The app's own Bus.from_config() reads the same file, for this command only.
    ctx.with_resource(configuration_file(value))


def _use_app(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    cli = ctx.find_object(CliContext)
    if value is not None and cli is not None:
        cli.app = value


def _more_verbose(ctx: click.Context, param: click.Parameter, value: int) -> None:
    cli = ctx.find_object(CliContext)
    if value and cli is not None:
        cli.verbosity += value
        cli.setup_logging()


def _global_options() -> list[click.Option]:
    """The group's options, accepted after the subcommand too (``courier consume q -v``)."""
    return [
        click.Option(
            ["--config"],
            type=click.Path(dir_okay=False),
            expose_value=False,
            callback=_use_config,
            help="courier.toml or pyproject.toml to read (also before the command).",
        ),
        click.Option(
            ["--app"],
            expose_value=False,
            callback=_use_app,
            help="The app's bus, as 'module:attribute' (also before the command).",
        ),
        click.Option(
            ["-v", "--verbose"],
            count=True,
            expose_value=False,
            callback=_more_verbose,
            help="-v for INFO logs, -vv for DEBUG (also before the command).",
        ),
    ]


def _accept_global_options(group: click.Group) -> None:
    for command in group.commands.values():
        command.params.extend(_global_options())
        if isinstance(command, click.Group):
            _accept_global_options(command)


@click.group(cls=CourierGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    envvar="COURIER_CONFIG",
    help="courier.toml or pyproject.toml to read (default: the first found in the working "
    "directory or its parents).",
)
@click.option("--app", "app", help="The app's bus, as 'module:attribute' (overrides app=).")
@click.option("-v", "--verbose", count=True, help="-v for INFO logs, -vv for DEBUG.")
@click.version_option(package_name="courier-bus")
@click.pass_context
def main(ctx: click.Context, config: str | None, app: str | None, verbose: int) -> None:
    """Hand work to background workers through any message broker."""
    cli = CliContext(config=None, app=app, verbosity=verbose)
    cli.setup_logging()
    ctx.obj = cli
    if config is not None:
        _use_config(ctx, ctx.command.params[0], config)
    ctx.call_on_close(cli.done)


def _register() -> None:
    from courier.cli.consume import consume

    main.add_command(consume)
    for name in (
        "failed",
        "stats",
        "setup",
        "debug",
        "dispatch",
        "workers",
        "stop_workers",
        "pause",
        "health",
        "deploy",
    ):
        try:
            module = __import__(f"courier.cli.{name}", fromlist=["command"])
        except ModuleNotFoundError as error:
            if error.name != f"courier.cli.{name}":
                raise
            continue
        for command in getattr(module, "commands", None) or [module.command]:
            main.add_command(command)


_register()
_accept_global_options(main)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
