"""The ``courier`` command.

::

    courier consume email                     # run a worker
    courier failed list                       # what failed for good
    courier stats                             # queue depths
    courier setup                             # declare queues and subscriptions
    courier debug                             # routing, handlers, transports
    courier dispatch email.send '{"to": ...}' # one message from the shell

Exit codes are listed in :mod:`courier.cli.exit_codes`.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from courier.cli import exit_codes
from courier.cli.context import CliContext, CliError
from courier.config import configuration_file
from courier.errors import ConfigurationError, TransportError

__all__ = ["main"]


class CourierGroup(click.Group):
    """Turns courier's errors into one line on stderr and a documented exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigurationError as error:
            raise CliError(str(error), exit_codes.USAGE) from None
        except TransportError as error:
            raise CliError(f"{type(error).__name__}: {error}", exit_codes.TRANSPORT) from None


@click.group(cls=CourierGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False),
    envvar="COURIER_CONFIG",
    help="courier.toml or pyproject.toml to read (default: the working directory's).",
)
@click.option("--app", "app", help="The app's bus, as 'module:attribute' (overrides app=).")
@click.option("-v", "--verbose", count=True, help="-v for INFO logs, -vv for DEBUG.")
@click.version_option(package_name="courier-bus")
@click.pass_context
def main(ctx: click.Context, config: str | None, app: str | None, verbose: int) -> None:
    """Hand work to background workers through any message broker."""
    cli = CliContext(config=config, app=app, verbosity=verbose)
    cli.setup_logging()
    if config is not None:
        # The app's own Bus.from_config() reads the same file, for this command only.
        ctx.with_resource(configuration_file(config))
    ctx.obj = cli
    ctx.call_on_close(lambda: cli._bus.close() if cli._bus is not None else None)


def _register() -> None:
    from courier.cli.consume import consume

    main.add_command(consume)
    for name in ("failed", "stats", "setup", "debug", "dispatch"):
        try:
            module = __import__(f"courier.cli.{name}", fromlist=["command"])
        except ModuleNotFoundError as error:
            if error.name != f"courier.cli.{name}":
                raise
            continue
        main.add_command(module.command)


_register()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
