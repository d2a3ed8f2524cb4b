"""courier in a Django project: ``INSTALLED_APPS += ["courier.contrib.django"]``.

::

    # settings.py: the keys of courier.toml
    COURIER = {
        "transports": {"email": "amqp://guest:guest@localhost:5672/%2f?queue=email"},
        "routing": {"email.send": "email"},
    }

    # accounts/handlers.py: found in every installed app, like admin.py
    @handler(SendEmail)
    def send_email(message: SendEmail) -> None: ...

    # accounts/views.py
    from courier.contrib.django import bus

    with transaction.atomic():
        user = User.objects.create(email=email)
        bus.dispatch(SendEmail(to=email))      # sent when the transaction commits

    $ python manage.py courier consume email

Inside ``transaction.atomic()`` a dispatch waits for the commit
(``transaction.on_commit``), so a rolled-back request sends nothing and a
worker never looks for a row that was never committed. Outside a
transaction it is sent at once, and ``dispatch(..., on_commit=False)`` or
``with immediately():`` sends at once inside one too.
"""

from typing import Any, cast

from courier.bus import Bus
from courier.contrib.django.project import dispatch, get_bus, immediately, reset_bus

__all__ = ["bus", "dispatch", "get_bus", "immediately", "reset_bus"]


class _ProjectBus:
    """The project's bus, looked up on every use, as ``django.db.connection`` is.

    So ``from courier.contrib.django import bus`` at the top of a module
    keeps working after ``override_settings(COURIER=...)`` rebuilt the bus.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(get_bus(), name)

    def __repr__(self) -> str:
        return f"<project bus: {get_bus()!r}>"


#: The project's :class:`~courier.bus.Bus` (see :func:`get_bus`).
bus = cast(Bus, _ProjectBus())
