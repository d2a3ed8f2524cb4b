"""The Django project of tests/contrib/test_django.py (and of its worker subprocesses)."""

import os

SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost"]
INSTALLED_APPS = ["courier.contrib.django", "courier_test_signups"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "courier_test_site.urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("COURIER_TEST_DJANGO_DB", ":memory:"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
LOGGING_CONFIG = None

# COURIER_TRANSPORTS__EMAIL overrides the transport in the worker subprocesses;
# the in-process tests use override_settings.
COURIER = {
    # The failure stores on memory too: nothing here may write a courier.db.
    "transports": {"email": "memory://", "failed": "memory://", "invalid": "memory://"},
    "routing": {"signups.welcome": "email"},
    "retry": {"max_retries": 0},
}
