"""courier.contrib.django, with Django's own test client against SQLite and RabbitMQ.

The project is ``django_site/``: an app with a model, a view that
dispatches in every supported way, and ``handlers.py`` found by
autodiscovery. Requests go through ``django.test.Client``; the worker is a
real ``python -m django courier consume`` subprocess on the same settings.
"""

from __future__ import annotations

import importlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import TestCase

SITE = Path(__file__).resolve().parent / "django_site"
SETTINGS = "courier_test_site.settings"


@pytest.fixture(scope="module", autouse=True)
def django_site() -> Iterator[None]:
    """Django configured once for this process, with a test database, as Django's runner does."""
    import django
    from django.conf import settings
    from django.db import connection
    from django.test.utils import setup_test_environment, teardown_test_environment

    sys.path.insert(0, str(SITE))
    if not settings.configured:
        module = importlib.import_module(SETTINGS)
        settings.configure(
            **{name: getattr(module, name) for name in dir(module) if name.isupper()}
        )
        django.setup()
    setup_test_environment()
    name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        yield
    finally:
        connection.creation.destroy_test_db(name, verbosity=0)
        teardown_test_environment()
        sys.path.remove(str(SITE))


def unique_email() -> str:
    return f"{uuid.uuid4().hex[:8]}@example.com"


def courier_settings(dsn: str, tmp_path: Path) -> Any:
    from django.test import override_settings

    return override_settings(
        COURIER={
            "transports": {"email": dsn},
            "routing": {"signups.welcome": "email"},
            "retry": {"max_retries": 0},
            "database": str(tmp_path / "courier.db"),
        }
    )


@pytest.fixture
def site(project_at: Any, tmp_path: Path) -> Any:
    """``python -m django ...`` on the test site, with a ledger its handler writes to."""
    project = project_at(
        SITE,
        {
            "DJANGO_SETTINGS_MODULE": SETTINGS,
            "COURIER_DATABASE": str(tmp_path / "courier.db"),
            "COURIER_TEST_LEDGER": str(tmp_path / "ledger.txt"),
        },
    )
    project.ledger = tmp_path / "ledger.txt"
    return project


def ledger(site: Any) -> list[str]:
    path: Path = site.ledger
    return path.read_text().splitlines() if path.exists() else []


# -- a request dispatches, a worker subprocess handles it -------------------------


def test_a_request_dispatches_on_commit_and_manage_py_courier_consume_handles_it(
    email_dsn: str, site: Any, tmp_path: Path
) -> None:
    from django.test import Client

    from courier.contrib.django import get_bus

    ada, rolled_back, grace = unique_email(), unique_email(), unique_email()
    client = Client(raise_request_exception=False)
    with courier_settings(email_dsn, tmp_path):
        assert client.post("/signup/", {"email": ada}).status_code == 201
        assert client.post("/signup/?fail=1", {"email": rolled_back}).status_code == 500
        assert client.post("/signup/?how=bus", {"email": grace}).status_code == 201
        transport = get_bus().transport("email")
        [stats] = transport.stats()
        assert stats.ready == 2  # the rolled-back request sent nothing

        site.env["COURIER_TRANSPORTS__EMAIL"] = email_dsn
        site.run(
            "python", "-m", "django", "courier", "consume", "email",
            "--limit", "2", "--time-limit", "60", "--no-progress",
        )  # fmt: skip

        assert ledger(site) == [ada, grace]
        [stats] = transport.stats()
        assert (stats.ready, stats.in_flight) == (0, 0)


def test_a_rolled_back_transaction_dispatches_nothing(email_dsn: str, tmp_path: Path) -> None:
    from django.test import Client

    from courier.contrib.django import get_bus

    client = Client(raise_request_exception=False)
    with courier_settings(email_dsn, tmp_path):
        for how in ("helper", "bus", "project", "many"):
            response = client.post(f"/signup/?fail=1&how={how}", {"email": unique_email()})
            assert response.status_code == 500
        [stats] = get_bus().transport("email").stats()
        assert not stats.ready  # 0, or None on RabbitMQ: nothing ever declared the queue


# -- on_commit, in detail (on memory, through the pytest plugin) ---------------------
# courier_bus finds the project's bus by itself: courier.contrib.django is installed.


def test_a_dispatch_inside_atomic_waits_for_the_commit(courier_bus: Any) -> None:
    from courier_test_signups.messages import Welcome
    from django.db import transaction

    from courier.contrib.django import dispatch

    with transaction.atomic():
        envelope = dispatch(Welcome(email="ada@example.com"))
        with transaction.atomic():
            dispatch(Welcome(email="inner@example.com"))
        assert courier_bus.dispatched() == []
    assert courier_bus.dispatched() == [
        Welcome(email="ada@example.com"),
        Welcome(email="inner@example.com"),
    ]
    assert courier_bus.envelopes()[0].id == envelope.id  # the id returned at dispatch


def test_a_rolled_back_savepoint_drops_only_its_own_dispatches(courier_bus: Any) -> None:
    from courier_test_signups.messages import Welcome
    from django.db import transaction

    from courier.contrib.django import dispatch

    with transaction.atomic():
        dispatch(Welcome(email="kept@example.com"))
        try:
            with transaction.atomic():
                dispatch(Welcome(email="dropped@example.com"))
                raise ValueError("undo the savepoint")
        except ValueError:
            pass
    assert courier_bus.dispatched() == [Welcome(email="kept@example.com")]


def test_outside_a_transaction_and_when_asked_a_dispatch_is_sent_at_once(courier_bus: Any) -> None:
    from courier_test_signups.messages import Welcome
    from django.db import transaction

    from courier.contrib.django import dispatch, get_bus, immediately

    dispatch(Welcome(email="outside@example.com"))
    assert len(courier_bus.dispatched()) == 1
    try:
        with transaction.atomic():
            dispatch(Welcome(email="now@example.com"), on_commit=False)
            with immediately():
                get_bus().dispatch(Welcome(email="also-now@example.com"))
            assert len(courier_bus.dispatched()) == 3
            raise ValueError("roll back")
    except ValueError:
        pass
    assert [m.email for m in courier_bus.dispatched()] == [
        "outside@example.com",
        "now@example.com",
        "also-now@example.com",
    ]


def test_dispatch_many_inside_atomic_sends_the_whole_batch_at_commit(courier_bus: Any) -> None:
    from courier_test_signups.messages import Welcome
    from django.db import transaction

    from courier.contrib.django import get_bus

    with transaction.atomic():
        envelopes = get_bus().dispatch_many([Welcome(email=f"{n}@example.com") for n in range(3)])
        assert courier_bus.dispatched() == []
    assert [e.id for e in courier_bus.envelopes()] == [e.id for e in envelopes]


def test_requests_through_the_test_client_and_drain_run_the_autodiscovered_handler(
    courier_bus: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from courier_test_signups.messages import Welcome
    from django.test import Client

    monkeypatch.setenv("COURIER_TEST_LEDGER", str(tmp_path / "ledger.txt"))
    email = unique_email()
    client = Client(raise_request_exception=False)
    assert client.post("/signup/?how=bus", {"email": email}).status_code == 201
    assert client.post("/signup/?fail=1", {"email": unique_email()}).status_code == 500

    courier_bus.assert_dispatched(Welcome, email=email)
    courier_bus.drain()
    assert (tmp_path / "ledger.txt").read_text().splitlines() == [email]


def test_handlers_modules_are_autodiscovered() -> None:
    import courier_test_signups.handlers
    from courier_test_signups.messages import Welcome

    from courier.contrib.django import get_bus

    spec = get_bus().handlers.command(Welcome)
    assert spec is not None
    assert spec.func is courier_test_signups.handlers.welcome


def test_override_settings_rebuilds_the_bus(tmp_path: Path) -> None:
    from django.test import override_settings

    from courier.contrib.django import get_bus

    before = get_bus()
    with override_settings(COURIER={"transports": {"jobs": "memory://"}}):
        inside = get_bus()
        assert inside is not before
        assert sorted(inside.transports) == ["failed", "invalid", "jobs"]
        assert inside.handlers.all()  # the handlers found at startup join the new bus
    assert "email" in get_bus().transports


def test_the_worker_closes_stale_database_connections_around_each_message(
    courier_bus: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from courier_test_signups.messages import Welcome
    from django.db import connection

    monkeypatch.setenv("COURIER_TEST_LEDGER", str(tmp_path / "ledger.txt"))
    connection.ensure_connection()
    checks: list[str] = []
    monkeypatch.setattr(
        connection, "close_if_unusable_or_obsolete", lambda: checks.append("checked")
    )
    courier_bus.dispatch(Welcome(email="ada@example.com"))
    assert checks == []  # dispatching touches no connection
    courier_bus.drain()
    assert checks == ["checked", "checked"]  # before and after the handler


# -- Django's TestCase ----------------------------------------------------------------


class SignupTestCase(TestCase):
    """Django's TestCase wraps each test in a transaction: captureOnCommitCallbacks sends."""

    def test_dispatches_wait_for_the_on_commit_callbacks(self) -> None:
        from courier_test_signups.messages import Welcome

        from courier.contrib.django import dispatch, get_bus
        from courier.testing.harness import CourierTestBus

        recorded = self.enterContext(CourierTestBus.swapped(get_bus()))
        with self.captureOnCommitCallbacks(execute=True) as callbacks:
            response = self.client.post("/signup/", {"email": unique_email()})
            assert response.status_code == 201
            assert recorded.dispatched() == []
        assert len(callbacks) == 1
        assert len(recorded.dispatched(Welcome)) == 1
        dispatch(Welcome(email="x@example.com"))  # inside the test's transaction: waits
        assert len(recorded.dispatched(Welcome)) == 1


# -- the management command -------------------------------------------------------------


def test_call_command_runs_courier_commands_and_leaves_the_bus_open(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from courier_test_signups.messages import Welcome
    from django.core.management import call_command
    from django.core.management.base import CommandError

    from courier.contrib.django import get_bus

    call_command("courier", "debug")
    assert "signups.welcome" in capsys.readouterr().out

    with courier_settings(f"sqlite:///{tmp_path / 'courier.db'}?queue=email", tmp_path):
        call_command("courier", "setup")  # stats only looks: it creates no database
        call_command("courier", "stats")
        get_bus().dispatch(Welcome(email="ada@example.com"))  # the project's bus is still open
        call_command("courier", "stats")
        rows = [line.split() for line in capsys.readouterr().out.splitlines()]
        assert [row[2] for row in rows if row[:2] == ["email", "email"]] == ["0", "1"]

    with pytest.raises(CommandError) as error:
        call_command("courier", "consume", "nope")
    assert error.value.returncode == 4
    assert "unknown transport 'nope'" in capsys.readouterr().err


def manage_py(*argv: str) -> int:
    """``manage.py ARGV``, in this process: Django's own ManagementUtility."""
    from django.core.management import ManagementUtility

    with pytest.raises(SystemExit) as exited:
        ManagementUtility(list(argv)).execute()
    code = exited.value.code
    return code if isinstance(code, int) else 0


def test_manage_py_courier_is_courier_s_command_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", SETTINGS)  # --settings sets it; undone after

    assert manage_py("__main__.py", "courier", "--help") == 0
    out = capsys.readouterr().out
    assert "Usage: python -m django courier [OPTIONS] COMMAND [ARGS]..." in out
    for command in ("consume", "failed", "stats", "setup", "debug", "dispatch"):
        assert f"  {command} " in out

    # --settings is Django's, read before the command runs: courier never sees it.
    assert manage_py("manage.py", "courier", "--settings", SETTINGS, "setup") == 0
    assert manage_py("manage.py", "courier", "--settings", SETTINGS, "stats") == 0
    assert "email" in capsys.readouterr().out
    assert manage_py("manage.py", "courier", "stats", f"--settings={SETTINGS}") == 0

    assert manage_py("manage.py", "courier", "consume", "nope") == 4
    assert "error: unknown transport 'nope'" in capsys.readouterr().err

    from django.core.management import ManagementUtility

    ManagementUtility(["manage.py", "help", "courier"]).execute()
    assert "Usage: manage.py courier [OPTIONS] COMMAND" in capsys.readouterr().out


def test_a_bad_courier_setting_stops_django_at_startup_with_one_line() -> None:
    from django.apps import apps
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    bad = {"transports": {"email": "amqq://localhost"}}
    with override_settings(COURIER=bad), pytest.raises(ImproperlyConfigured) as raised:
        apps.get_app_config("courier").ready()  # what django.setup() runs
    assert str(raised.value).startswith(
        "settings.COURIER: transports.email: transport 'email': "
        "no transport for scheme 'amqq' (known: amqp, "
    )
