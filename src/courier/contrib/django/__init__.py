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
    with transaction.atomic():
        user = User.objects.create(email=email)
        dispatch(SendEmail(to=email))          # sent when the transaction commits

    $ python manage.py courier consume email

Inside ``transaction.atomic()`` a dispatch waits for the commit
(``transaction.on_commit``), so a rolled-back request sends nothing and a
worker never looks for a row that was never committed. Outside a
transaction it is sent at once, and ``dispatch(..., on_commit=False)`` or
``with immediately():`` sends at once inside one too.
"""

from courier.contrib.django.bus import dispatch, get_bus, immediately, reset_bus

__all__ = ["dispatch", "get_bus", "immediately", "reset_bus"]
