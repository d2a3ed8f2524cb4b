"""Settings of the Django signup example: the usual ones, and ``COURIER``."""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = "example-only-not-secret"  # an example, never deployed
DEBUG = True
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]

INSTALLED_APPS = [
    "courier.contrib.django",  # builds the bus, finds each app's handlers.py
    "accounts",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "signup_site.urls"
WSGI_APPLICATION = "signup_site.wsgi.application"

DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"},
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

# The keys of courier.toml. COURIER_* environment variables override them
# (COURIER_TRANSPORTS__EMAIL=amqp://... moves the queue to RabbitMQ).
COURIER = {
    "transports": {"email": f"sqlite:///{BASE_DIR / 'courier.db'}?queue=email"},
    # "transports": {"email": "amqp://guest:guest@localhost:5672/%2f?queue=email"},
    "routing": {"accounts.send-welcome-email": "email"},
    "retry": {"max_retries": 2, "delay": 0.2},
    "database": str(BASE_DIR / "courier.db"),  # the failure store's file
}

#: Where the worker "sends" mail: one .eml file per message.
OUTBOX_DIR = Path(os.environ.get("COURIER_EXAMPLE_OUTBOX", BASE_DIR / "outbox"))
