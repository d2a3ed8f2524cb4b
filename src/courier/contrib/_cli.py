"""The ``courier`` command group, mounted inside a framework's own command line.

``python manage.py courier consume email`` and ``flask courier consume
email`` run exactly the commands of ``courier``: the group below shares
:data:`courier.cli.main`'s commands and options (so a command added to
courier appears here too) and only changes where the bus comes from: the
framework's, named by an import string that the command line resolves as
it resolves ``app = "module:bus"``.

That bus belongs to the framework, not to the command: ``courier`` closes
its bus when a command ends, which would leave a Django project or a Flask
app with closed transports after ``call_command("courier", ...)`` or
``app.test_cli_runner()``. So the group keeps it open; the process that
runs ``manage.py`` closes it at its end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from courier.cli import main

__all__ = ["framework_group"]


def framework_group(
    app: str,
    *,
    name: str = "courier",
    help: str | None = None,
    wrap: Callable[[Callable[..., None]], Callable[..., Any]] | None = None,
) -> click.Group:
    """A group with ``courier``'s commands whose bus is ``app`` unless ``--app`` says otherwise.

    ``wrap`` decorates the group's callback, for what the framework must do
    before the bus can be found (Flask's ``with_appcontext``).
    """

    def setup(**options: Any) -> None:
        options["app"] = options.get("app") or app
        callback = main.callback
        assert callback is not None  # main is a group with a callback
        ctx = click.get_current_context()
        # main's own callback builds the command line's context (and its logging) on the
        # current click context, and asks that context to close the bus at its end. Run it
        # on a scratch context that is never cleaned up, and keep only what it built.
        scratch = click.Context(main, parent=ctx, info_name=ctx.info_name)
        with scratch.scope(cleanup=False):
            callback(**options)
        ctx.obj = scratch.obj

    return type(main)(
        name=name,
        commands=main.commands,
        params=list(main.params),
        callback=wrap(setup) if wrap is not None else setup,
        help=help or main.help,
        context_settings=dict(main.context_settings),
    )
