"""What every command shares: the configuration, the app's bus, the console.

The bus comes from the app import string (``app = "module:bus"`` in the
configuration, ``COURIER_APP`` or ``--app``): the app defines the handlers
and message types; the configuration supplies transports and routing when
the app did not. Without an app, commands that need no handlers (``failed``,
``stats``, ``setup``) work from the configuration alone.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import click
from rich.console import Console

from courier.bus import Bus
from courier.cli import exit_codes
from courier.config import CourierSettings, build_bus, load_settings
from courier.errors import ConfigurationError
from courier.transports.sqlite import SqliteTransport
from courier.worker import WorkerLogFilter

__all__ = ["CliContext", "SecretMaskingFilter", "fail"]

LOG_FORMAT = "%(asctime)s %(levelname)-7s [%(worker_id)s %(instance_id)s] %(name)s: %(message)s"


class CliError(click.ClickException):
    """An expected failure: one line on stderr and a documented exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        # click reads the code from the instance; it only declares it on the class.
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file: object = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def fail(message: str, exit_code: int) -> CliError:
    return CliError(message, exit_code)


def check_transports(bus: Bus, names: Iterable[str]) -> None:
    """Refuse a transport the configuration does not have, naming those it does (exit 4)."""
    for name in names:
        if name not in bus.transports:
            known = ", ".join(sorted(bus.transports)) or "none"
            raise fail(f"unknown transport {name!r} (configured: {known})", exit_codes.NOT_FOUND)


class SecretMaskingFilter(logging.Filter):
    """Replaces every configured secret in a record's final text with ``***``."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = sorted(set(secrets), key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        text = record.getMessage()
        masked = text
        for secret in self.secrets:
            masked = masked.replace(secret, "***")
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            for secret in self.secrets:
                record.exc_text = record.exc_text.replace(secret, "***")
            record.exc_info = None
        if masked != text:
            record.msg, record.args = masked, None
        return True


@dataclass
class CliContext:
    config: str | None
    app: str | None
    verbosity: int
    console: Console = field(default_factory=Console)
    _settings: tuple[CourierSettings, Path | None] | None = None
    _bus: Bus | None = None
    _log_filter: WorkerLogFilter = field(default_factory=WorkerLogFilter)
    _mask: SecretMaskingFilter = field(default_factory=lambda: SecretMaskingFilter([]))
    _looked_at: list[SqliteTransport] = field(default_factory=list)
    #: Whether the command's end closes the bus (a framework keeps its own open).
    owns_bus: bool = True

    def done(self) -> None:
        """The command ended: a bus that outlives it (a web app's) may create files again."""
        for transport in self._looked_at:
            transport.require_existing(False)
        self._looked_at.clear()
        if self._bus is not None and self.owns_bus:
            self._bus.close()

    def use_config(self, path: str) -> None:
        """Read ``path`` (``--config``, before or after the command)."""
        if self._settings is not None and self.config != path:
            raise ConfigurationError("--config is given twice")
        self.config = path

    def settings(self) -> tuple[CourierSettings, Path | None]:
        if self._settings is None:
            overrides = {"app": self.app} if self.app else None
            self._settings = load_settings(self.config, overrides=overrides)
        return self._settings

    def bus(self, *, need_app: bool = False, read_only: bool = False) -> Bus:
        """The app's bus, configured; the configuration alone when there is no app.

        ``read_only``: the command only looks (stats, failed, debug), so a
        SQLite file that does not exist is an error, never created empty.
        """
        if self._bus is not None:
            return self._bus
        settings, file = self.settings()
        base = file.parent if file is not None else Path.cwd()
        if settings.app is None:
            if need_app:
                raise ConfigurationError(
                    "app: not set; name the bus that has your handlers, e.g. "
                    'app = "myapp.messaging:bus" in courier.toml, COURIER_APP or --app'
                )
            bus = build_bus(settings, base=base)
        else:
            bus = load_app(settings.app, base)
            if not bus.transports:
                build_bus(settings, bus, base=base)
        if read_only:
            for transport in bus.transports.values():
                if isinstance(transport, SqliteTransport):
                    transport.require_existing(True)
                    self._looked_at.append(transport)
        self._bus = bus
        secrets: list[str] = []
        for name in bus.transports:
            dsn = bus.dsn(name)
            if dsn is not None:
                secrets += dsn.secrets()
        self._mask.secrets = sorted(set(secrets), key=len, reverse=True)
        return bus

    def setup_logging(self) -> None:
        level = {0: logging.WARNING, 1: logging.INFO}.get(self.verbosity, logging.DEBUG)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.addFilter(self._log_filter)
        handler.addFilter(self._mask)
        root = logging.getLogger("courier")
        root.handlers[:] = [handler]
        root.setLevel(level)
        root.propagate = False

    def identify(self, worker_id: str, instance_id: str) -> None:
        self._log_filter.worker_id = worker_id
        self._log_filter.instance_id = instance_id


def load_app(target: str, directory: Path) -> Bus:
    """Import ``module:attribute`` (from trusted configuration, never the wire)."""
    module_name, _, attribute = target.partition(":")
    for path in (str(directory), os.getcwd()):
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigurationError(f"app: cannot import {module_name!r} ({error})") from None
    obj: object = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(
                f"app: {module_name!r} has no attribute {attribute!r}"
            ) from None
    if callable(obj) and not isinstance(obj, Bus):
        obj = obj()
    if not isinstance(obj, Bus):
        raise ConfigurationError(f"app: {target!r} is not a courier Bus")
    return obj
