"""The Django example (``examples/django_app``), run as its user runs it, in subprocesses.

Its own test suite passes under Django's test runner, unchanged; then a
request through Django's test client (in ``manage.py shell``) dispatches on
commit, a taken username rolls back and sends nothing, and ``python
manage.py courier consume email`` welcomes the one signup that committed,
with the ORM, in the worker.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any

import pytest

pytestmark = pytest.mark.slow

REQUESTS = """
from django.core.management import call_command
from django.test import Client
call_command("migrate", verbosity=0)
client = Client()
print(client.post("/signup/", {"email": "ada@example.com", "username": "ada"}).status_code)
print(client.post("/signup/", {"email": "grace@example.com", "username": "ada"}).status_code)
"""


@pytest.fixture
def example(example_project: Any) -> Any:
    return example_project("django_app")


def test_the_example_s_own_tests_pass_under_django_s_test_runner(example: Any) -> None:
    result = example.run("python", "-W", "error", "manage.py", "test", "--noinput")
    assert "Ran 2 tests" in result.stderr
    assert "\nOK\n" in result.stderr


def test_a_signup_is_welcomed_by_manage_py_courier_consume(example: Any) -> None:
    requests = example.run("python", "manage.py", "shell", "--no-imports", "-c", REQUESTS)
    assert requests.stdout.split() == ["202", "409"]

    example.run(
        "python", "manage.py", "courier", "consume", "email",
        "--limit", "1", "--time-limit", "60", "--no-progress",
    )  # fmt: skip

    [mail] = example.mails()
    assert "To: ada@example.com" in mail
    with closing(sqlite3.connect(example.root / "db.sqlite3")) as database:
        rows = database.execute("SELECT email, welcomed_at IS NOT NULL FROM accounts_signup")
        assert rows.fetchall() == [("ada@example.com", 1)]  # the worker used the ORM
