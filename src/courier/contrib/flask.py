"""courier in a Flask app: ``Courier(app)``, or ``courier.init_app(app)`` in a factory.

::

    courier = Courier()

    @courier.handler(SendEmail)                 # on the bus of every app
    def send_email(message: SendEmail) -> None: ...

    def create_app() -> Flask:
        app = Flask(__name__)
        app.config["COURIER"] = {               # the keys of courier.toml
            "transports": {"email": "sqlite:///courier.db?queue=email"},
            "routing": {"email.send": "email"},
        }
        courier.init_app(app)
        return app

    @app.post("/signup")
    def signup():
        courier.dispatch(SendEmail(to=request.form["email"]))
        # or: current_app.extensions["courier"].dispatch(...)

    $ flask --app myapp courier consume email

Each app gets its own bus, configured from its own ``app.config``, kept in
``app.extensions["courier"]``. The ``flask courier`` group runs every
``courier`` command on the current app's bus, with the app context pushed,
so handlers can use the app's extensions as a view does.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

from flask import Flask, current_app
from flask.cli import with_appcontext

from courier.bus import Bus
from courier.contrib._cli import framework_group
from courier.contrib._settings import bus_from_mapping
from courier.envelope import Envelope
from courier.handlers import handler
from courier.message import Message

__all__ = ["EXTENSION", "Courier", "current_bus"]

F = TypeVar("F", bound=Callable[..., Any])

#: The key of ``app.extensions`` that holds the app's bus.
EXTENSION = "courier"

#: Where courier's command line finds the bus: the current app's.
APP = "courier.contrib.flask:current_bus"


def current_bus() -> Bus:
    """The current app's bus (``current_app.extensions["courier"]``)."""
    try:
        bus = current_app.extensions[EXTENSION]
    except KeyError:
        raise RuntimeError(
            f"courier is not set up on the app {current_app.name!r}: call Courier(app) "
            "or courier.init_app(app)"
        ) from None
    if not isinstance(bus, Bus):
        raise RuntimeError(f"app.extensions[{EXTENSION!r}] is not a courier Bus: {bus!r}")
    return bus


class Courier:
    """The Flask extension; one instance can serve many apps (``init_app``).

    Each app gets a new bus built from its ``app.config["COURIER"]``, with
    the handlers registered on this extension (:meth:`handler`,
    :meth:`register`). A project that defines its bus itself passes it as
    ``bus`` (or names it with the config's ``"app"``); it keeps its
    transports if it has some, else the config supplies them.
    """

    def __init__(
        self, app: Flask | None = None, *, bus: Bus | None = None, config_key: str = "COURIER"
    ) -> None:
        self._bus = bus
        self.config_key = config_key
        self._handlers: list[Callable[..., Any] | ModuleType] = []
        self._apps: weakref.WeakSet[Flask] = weakref.WeakSet()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> Bus:
        """Configure ``app``'s bus and add the ``flask courier`` commands; returns the bus."""
        where = f"app.config[{self.config_key!r}]"
        bus = bus_from_mapping(app.config.get(self.config_key), where, self._bus)
        bus.register(*self._handlers)
        app.extensions[EXTENSION] = bus
        self._apps.add(app)
        app.cli.add_command(
            framework_group(
                APP,
                help="courier's commands (consume, failed, stats, ...) on this app's bus.",
                wrap=with_appcontext,
            )
        )
        return bus

    def handler(
        self, message_type: type[Message], *, subscription: str | None = None
    ) -> Callable[[F], F]:
        """Decorator: the function handles ``message_type`` on every app's bus."""

        def register(func: F) -> F:
            self.register(handler(message_type, subscription=subscription)(func))
            return func

        return register

    def register(self, *targets: Callable[..., Any] | ModuleType) -> None:
        """Register functions marked with ``@handler`` (or every one in a module) on every app."""
        self._handlers.extend(targets)
        for app in self._apps:
            app.extensions[EXTENSION].register(*targets)

    @property
    def bus(self) -> Bus:
        """The current app's bus."""
        return current_bus()

    def dispatch(self, message: Message, **options: Any) -> Envelope:
        """Dispatch on the current app's bus; ``options`` are :meth:`Bus.dispatch`'s."""
        return current_bus().dispatch(message, **options)
