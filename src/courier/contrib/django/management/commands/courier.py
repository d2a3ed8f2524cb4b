"""``python manage.py courier ...``: every ``courier`` command, on the project's bus.

::

    python manage.py courier consume email --limit 1000
    python manage.py courier failed list
    python manage.py courier setup

The arguments go to courier's own command line unchanged (``--help``
shows its help), after Django has read ``--settings`` and ``--pythonpath``.
The bus is :func:`courier.contrib.django.get_bus`, so the worker runs the
handlers found in every app with Django set up, as a request would.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import click
from django.core.management.base import (  # type: ignore[import-untyped]
    BaseCommand,
    CommandError,
    CommandParser,
)
from django.db import connections  # type: ignore[import-untyped]

from courier.contrib._cli import framework_group
from courier.contrib.django.project import reset_bus

__all__ = ["Command"]

#: Where courier's command line finds the bus: the project's.
APP = "courier.contrib.django.project:get_bus"

HELP = "courier's commands (consume, failed, stats, setup, debug, dispatch) on this project."

#: Options ``manage.py`` itself reads before running any command.
_DJANGO_OPTIONS = ("--settings", "--pythonpath")


def _without_django_options(args: list[str]) -> list[str]:
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in _DJANGO_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{option}=" for option in _DJANGO_OPTIONS)):
            kept.append(arg)
    return kept


def _group() -> click.Group:
    return framework_group(APP, help=HELP)


class Command(BaseCommand):  # type: ignore[misc]
    help = HELP

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("args", nargs=argparse.REMAINDER, help="courier's own arguments")

    def run_from_argv(self, argv: list[str]) -> None:
        """``manage.py courier ...``: courier parses, prints and exits as ``courier`` does."""
        program = os.path.basename(argv[0])
        if program == "__main__.py":  # as Django names itself
            program = "python -m django"
        prog_name = f"{program} {argv[1]}"
        try:
            _group().main(args=_without_django_options(argv[2:]), prog_name=prog_name)
        finally:
            # The process ends here: let the broker see a clean goodbye.
            reset_bus()
            connections.close_all()

    def handle(self, *args: str, **options: Any) -> None:
        """``call_command("courier", "consume", "email", "--limit", "1")``."""
        try:
            _group().main(args=list(args), prog_name="manage.py courier")
        except SystemExit as error:
            code = error.code
            if code not in (0, None):
                status = code if isinstance(code, int) else 1
                raise CommandError(
                    f"courier {' '.join(args)} exited with status {status}", returncode=status
                ) from None

    def print_help(self, prog_name: str, subcommand: str) -> None:
        _group().main(args=["--help"], prog_name=f"{prog_name} {subcommand}", standalone_mode=False)
