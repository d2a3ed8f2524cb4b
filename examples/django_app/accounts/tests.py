"""Run with Django's own test runner: ``python manage.py test``.

``CourierTestBus.swapped`` puts the project's bus on memory for a test (what
the pytest plugin's ``courier_bus`` fixture does), and ``drain()`` runs the
worker's handlers in the test. A ``TestCase`` wraps each test in a
transaction, so dispatches wait for ``captureOnCommitCallbacks``, as they
wait for the commit in production.
"""

import tempfile
from pathlib import Path

from django.test import TestCase, override_settings

from accounts.messages import SendWelcomeEmail
from accounts.models import Signup
from courier.contrib.django import get_bus
from courier.testing.harness import CourierTestBus


class SignupTests(TestCase):
    def setUp(self) -> None:
        self.courier = self.enterContext(CourierTestBus.swapped(get_bus()))
        self.outbox = Path(self.enterContext(tempfile.TemporaryDirectory()))
        self.enterContext(override_settings(OUTBOX_DIR=self.outbox))

    def signup(self, email: str, username: str) -> int:
        with self.captureOnCommitCallbacks(execute=True):
            response = self.client.post("/signup/", {"email": email, "username": username})
        return response.status_code

    def test_a_signup_is_welcomed_by_the_worker(self) -> None:
        assert self.signup("ada@example.com", "ada") == 202
        signup = Signup.objects.get(email="ada@example.com")
        self.courier.assert_dispatched(SendWelcomeEmail, signup_id=signup.pk)

        self.courier.drain()

        signup.refresh_from_db()
        assert signup.welcomed_at is not None
        assert len(list(self.outbox.glob("*.eml"))) == 1

    def test_a_rolled_back_signup_sends_nothing(self) -> None:
        assert self.signup("ada@example.com", "ada") == 202
        assert self.signup("grace@example.com", "ada") == 409  # username taken

        assert len(self.courier.dispatched(SendWelcomeEmail)) == 1
        assert not Signup.objects.filter(email="grace@example.com").exists()
