"""The project's bus: built once from ``settings.COURIER``, with every app's handlers.

``get_bus()`` is the bus the views dispatch on, the management command
consumes from and the pytest plugin swaps for memory. It is built when the
app registry is ready (see :mod:`courier.contrib.django.apps`) and rebuilt
after ``override_settings(COURIER=...)`` in tests.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import import_module
from types import ModuleType
from typing import Any

from django.apps import apps  # type: ignore[import-untyped]
from django.conf import settings  # type: ignore[import-untyped]
from django.utils.module_loading import module_has_submodule  # type: ignore[import-untyped]

from courier.bus import Bus
from courier.contrib._settings import bus_from_settings, settings_from_mapping
from courier.contrib.django.middleware import DjangoMiddleware, dispatch_policy
from courier.envelope import Envelope
from courier.message import Message

__all__ = [
    "HANDLERS_MODULE",
    "autodiscover",
    "dispatch",
    "get_bus",
    "immediately",
    "on_setting_changed",
    "reset_bus",
]

#: The module courier imports from every installed app, as the admin imports ``admin``.
HANDLERS_MODULE = "handlers"

_lock = threading.RLock()
_bus: Bus | None = None
#: Whether courier built ``_bus`` (and may close it), or the project's ``"app"`` did.
_owned = False
_handler_modules: list[ModuleType] = []
#: Buses that have the Django middleware already (an ``"app"`` bus outlives a reset).
_prepared: weakref.WeakSet[Bus] = weakref.WeakSet()


def get_bus() -> Bus:
    """The project's bus, configured from ``settings.COURIER``."""
    bus = _bus
    if bus is not None:
        return bus
    with _lock:
        if _bus is None:
            _build()
        assert _bus is not None
        return _bus


def _build() -> None:
    global _bus, _owned
    where = "settings.COURIER"
    courier_settings = settings_from_mapping(getattr(settings, "COURIER", None), where)
    owned = courier_settings.app is None
    bus = bus_from_settings(courier_settings, where)
    bus.register(*_handler_modules)
    if bus not in _prepared:
        bus.use(DjangoMiddleware(bus))
        _prepared.add(bus)
    _bus, _owned = bus, owned


def autodiscover() -> list[ModuleType]:
    """Import ``handlers`` from every installed app and register what they mark.

    Functions marked with ``@handler`` in ``<app>/handlers.py`` join the
    bus, whether courier built it or the project's ``"app"`` did.
    """
    found = []
    for config in apps.get_app_configs():
        if module_has_submodule(config.module, HANDLERS_MODULE):
            found.append(import_module(f"{config.name}.{HANDLERS_MODULE}"))
    with _lock:
        _handler_modules[:] = found
        get_bus().register(*found)
    return found


def reset_bus() -> None:
    """Forget the bus (closing it if courier built it); the next use builds it again."""
    global _bus
    with _lock:
        bus, _bus = _bus, None
        if bus is not None and _owned:
            bus.close()


def on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    """``override_settings(COURIER=...)`` in a test takes effect on the next dispatch."""
    if setting == "COURIER":
        reset_bus()


@contextmanager
def immediately() -> Iterator[None]:
    """Dispatches in this block are sent at once, even inside ``transaction.atomic()``."""
    with dispatch_policy(on_commit=False):
        yield


def dispatch(
    message: Message, *, on_commit: bool = True, using: str | None = None, **options: Any
) -> Envelope:
    """Dispatch on the project's bus; inside a transaction, when it commits.

    ``on_commit=False`` sends at once even inside ``transaction.atomic()``;
    ``using`` names the database whose transaction to wait for (default:
    whichever has one open, ``default`` first). ``options`` are
    :meth:`Bus.dispatch`'s (``delay``, ``priority``, ...). Returns the
    envelope, with its id, before it is sent when sending waits.
    """
    with dispatch_policy(on_commit=on_commit, using=using):
        return get_bus().dispatch(message, **options)
