"""A bus from a framework's own configuration: the keys of ``courier.toml`` as a mapping.

Django's ``settings.COURIER`` and Flask's ``app.config["COURIER"]`` hold
exactly what ``courier.toml`` holds, so a project reads one page of
documentation whichever way it configures courier. ``COURIER_*``
environment variables still override the mapping, as they override the
file. A mistake fails with one line that names where it was made::

    settings.COURIER: transports.email: unknown scheme 'amqq'
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import SettingsError

from courier.bus import Bus
from courier.config import CourierSettings, build_bus
from courier.errors import ConfigurationError

__all__ = ["bus_from_config", "bus_from_mapping", "bus_from_settings", "settings_from_mapping"]


def settings_from_mapping(data: Mapping[str, Any] | None, where: str) -> CourierSettings:
    """Validate ``data`` as courier's settings; ``where`` names it in errors."""
    if data is not None and not isinstance(data, Mapping):
        raise ConfigurationError(f"{where} must be a dict, not {type(data).__name__}")
    try:
        return CourierSettings(**dict(data or {}))
    except SettingsError as error:
        raise ConfigurationError(f"COURIER_* environment: {error}") from None
    except ValidationError as error:
        detail = error.errors(include_input=False, include_url=False)[0]
        key = ".".join(str(part) for part in detail["loc"]) or "<root>"
        if detail["type"] == "extra_forbidden":
            raise ConfigurationError(f"{where}: {key}: unknown setting") from None
        raise ConfigurationError(f"{where}: {key}: {detail['msg']}") from None


def bus_from_mapping(data: Mapping[str, Any] | None, where: str, bus: Bus | None = None) -> Bus:
    """The app's bus, configured from ``data`` (see :func:`bus_from_settings`)."""
    return bus_from_settings(settings_from_mapping(data, where), where, bus)


def bus_from_settings(settings: CourierSettings, where: str, bus: Bus | None = None) -> Bus:
    """The app's bus, configured from ``settings``.

    ``bus`` (or the one the ``app`` setting names) keeps its transports if
    it has any, as ``courier consume`` does; otherwise the settings supply
    them. Without either, a new bus is built from the settings alone.
    """
    try:
        if bus is None and settings.app is not None:
            # Imported here: the command line's loader, not the command line.
            from courier.cli.context import load_app

            bus = load_app(settings.app, Path.cwd())
        if bus is None:
            return build_bus(settings)
        if not bus.transports:
            build_bus(settings, bus)
    except ConfigurationError as error:
        raise ConfigurationError(f"{where}: {error}") from None
    return bus


def bus_from_config(app: str | None = None, bus: Bus | None = None) -> Bus:
    """The bus ``courier consume`` would use: ``courier.toml`` and its ``app``.

    ``bus`` is used as it is if it has transports, and gets the
    configuration's if not; otherwise ``app`` (``"module:bus"``, else the
    configuration's own ``app``) names it, and without any the bus is built
    from the configuration alone.
    """
    from courier.cli.context import load_app
    from courier.config import load_settings

    if bus is not None and bus.transports:
        return bus
    settings, file = load_settings(overrides={"app": app} if app else None)
    if bus is None and settings.app is not None:
        bus = load_app(settings.app, file.parent if file is not None else Path.cwd())
    if bus is None:
        return build_bus(settings)
    if not bus.transports:
        build_bus(settings, bus)
    return bus
