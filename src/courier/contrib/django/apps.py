"""The Django app: build the project's bus at startup and find every app's handlers."""

from __future__ import annotations

from django.apps import AppConfig  # type: ignore[import-untyped]
from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]
from django.core.signals import setting_changed  # type: ignore[import-untyped]

from courier.errors import ConfigurationError

__all__ = ["CourierConfig"]


class CourierConfig(AppConfig):  # type: ignore[misc]
    """``courier.contrib.django`` in ``INSTALLED_APPS``.

    The bus is built in :meth:`ready`, not on first dispatch, so a bad
    ``settings.COURIER`` stops ``manage.py`` at once with one line naming
    the key, and a bus the project defines itself (``"app"``) has its
    transports and the on-commit behaviour before any view uses it.
    Building opens no connection: transports connect on first use.
    """

    name = "courier.contrib.django"
    label = "courier"
    verbose_name = "courier"
    default = True

    def ready(self) -> None:
        from courier.contrib.django import project

        setting_changed.connect(project.on_setting_changed, dispatch_uid="courier.contrib.django")
        try:
            project.autodiscover()
        except ConfigurationError as error:
            raise ImproperlyConfigured(str(error)) from None
