"""The pytest plugin, as a project's test suite uses it (run by ``pytester``).

Each case writes a small app (its messages, handlers and a courier.toml on
SQLite) and a test file, runs pytest on them, and reads the outcome and
the output. The app's own transports are SQLite: that no ``courier.db``
appears afterwards shows the tests ran on memory.
"""

from __future__ import annotations

import sys
import textwrap
import uuid

import pytest

APP = '''
from typing import ClassVar

from courier import Bus, Envelope, Message


class SendEmail(Message):
    message_name: ClassVar[str] = "email.send"
    to: str
    subject: str = "Welcome"


class Audit(Message):
    message_name: ClassVar[str] = "audit.write"
    what: str


SENT = []
SEEN = []
AUDITED = []
FLAKY = {"left": 0}

bus = Bus.from_config()


@bus.handler(SendEmail)
def send_email(message: SendEmail, envelope: Envelope) -> Audit:
    SEEN.append(message)
    if FLAKY["left"] > 0:
        FLAKY["left"] -= 1
        raise ConnectionError("SMTP is down")
    if message.to.endswith("@invalid.example"):
        raise ValueError(f"no mailbox for {message.to}")
    SENT.append(message.to)
    return Audit(what=f"sent {message.to}")  # a pipeline: the next stage


@bus.handler(Audit)
def audit(message: Audit) -> None:
    AUDITED.append(message.what)


def signup(email: str) -> None:
    """What the app's view does."""
    bus.dispatch(SendEmail(to=email))
'''

CONFIG = """
app = "{module}:bus"

[transports]
email = "sqlite:///courier.db?queue=email"
audit = "sqlite:///courier.db?queue=audit"

[routing]
"email.send" = "email"
"audit.write" = "audit"

[retry]
max_retries = 3
delay = 30
"""


class AppProject:
    """An app under test in pytester's directory, with a module name of its own."""

    def __init__(self, pytester: pytest.Pytester) -> None:
        self.pytester = pytester
        self.module = f"courier_plugin_app_{uuid.uuid4().hex[:8]}"
        pytester.makepyfile(**{self.module: APP})
        pytester.makefile(".toml", courier=CONFIG.format(module=self.module))
        pytester.syspathinsert()

    def tests(self, source: str) -> None:
        header = f"import {self.module} as app\nfrom {self.module} import Audit, SendEmail\n"
        self.pytester.makepyfile(test_app=header + textwrap.dedent(source))

    def run(self, *args: str) -> pytest.RunResult:
        result = self.pytester.runpytest("-q", "-p", "no:cacheprovider", *args)
        assert not (self.pytester.path / "courier.db").exists(), "a test reached SQLite"
        return result


@pytest.fixture
def project(pytester: pytest.Pytester) -> AppProject:
    return AppProject(pytester)


def test_dispatched_messages_are_recorded_and_drained_through_a_pipeline(
    project: AppProject,
) -> None:
    project.tests(
        """
        def test_signup(courier_bus):
            app.signup("ada@example.com")

            sent = courier_bus.assert_dispatched(SendEmail, to="ada@example.com")
            assert sent == SendEmail(to="ada@example.com")
            assert courier_bus.dispatched(SendEmail) == [SendEmail(to="ada@example.com")]
            assert app.SENT == []  # nothing runs before drain()

            result = courier_bus.drain()

            assert app.SENT == ["ada@example.com"]
            assert app.AUDITED == ["sent ada@example.com"]
            assert [envelope.type for envelope in result.handled] == ["email.send", "audit.write"]
            courier_bus.assert_dispatched(Audit, what="sent ada@example.com")
            assert [type(m).__name__ for m in courier_bus.dispatched()] == ["SendEmail", "Audit"]
            courier_bus.assert_not_dispatched(SendEmail, to="bob@example.com")
        """
    )
    project.run().assert_outcomes(passed=1)


def test_messages_go_through_the_serializer_unless_told_otherwise(project: AppProject) -> None:
    project.tests(
        """
        import pytest

        def test_serialized(courier_bus):
            message = SendEmail(to="ada@example.com")
            courier_bus.dispatch(message)
            courier_bus.drain()
            assert app.SEEN[-1] == message
            assert app.SEEN[-1] is not message  # decoded from bytes, as a worker would

        class TestNotSerialized:
            @pytest.fixture
            def courier_serialize(self):
                return False

            def test_same_object(self, courier_bus):
                message = SendEmail(to="grace@example.com")
                courier_bus.dispatch(message)
                courier_bus.drain()
                assert app.SEEN[-1] is message
        """
    )
    project.run().assert_outcomes(passed=2)


def test_retries_and_delays_are_fast_forwarded(project: AppProject) -> None:
    project.tests(
        """
        import time

        def test_flaky_smtp(courier_bus):
            app.FLAKY["left"] = 2  # fails twice; the configured retry delay is 30 s
            app.signup("ada@example.com")
            started = time.monotonic()

            result = courier_bus.drain()

            assert app.SENT == ["ada@example.com"]
            assert [type(f.error).__name__ for f in result.retried] == ["ConnectionError"] * 2
            assert [f.envelope.attempt for f in result.retried] == [1, 2]
            assert [e.attempt for e in result.handled if e.type == "email.send"] == [3]

            app.bus.dispatch(SendEmail(to="later@example.com"), delay=3600)
            courier_bus.drain()

            assert app.SENT == ["ada@example.com", "later@example.com"]
            assert time.monotonic() - started < 5
            assert courier_bus.envelopes(SendEmail)[1].delay == 3600  # the delay is kept
            assert len(courier_bus.dispatched(SendEmail)) == 2  # retries are not dispatches
        """
    )
    project.run().assert_outcomes(passed=1)


def test_a_handler_failing_for_good_fails_the_test_with_its_own_traceback(
    project: AppProject,
) -> None:
    project.tests(
        """
        import pytest
        from courier.testing.harness import HandlingFailed

        def test_caught(courier_bus):
            app.signup("bob@invalid.example")
            with pytest.raises(HandlingFailed) as failed:
                courier_bus.drain()
            assert isinstance(failed.value.__cause__, ValueError)
            assert [f.envelope.attempt for f in failed.value.failures] == [4]  # 3 retries
            assert [e.error.message for e in courier_bus.failed()] == [
                "no mailbox for bob@invalid.example"
            ]

        def test_uncaught(courier_bus):
            app.signup("carol@invalid.example")
            courier_bus.drain()

        def test_kept_quiet(courier_bus):
            app.signup("dave@invalid.example")
            result = courier_bus.drain(raise_on_failure=False)
            assert [f.outcome.value for f in result.failed] == ["dead_lettered"]
        """
    )
    result = project.run()
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            '*raise ValueError(f"no mailbox for {message.to}")',
            "E*ValueError: no mailbox for carol@invalid.example",
            "*direct cause of the following exception*",
            "E*HandlingFailed: 1 message failed for good during drain():",
            "E*SendEmail(to='carol@invalid.example', subject='Welcome') (attempt 4) on 'email': "
            "ValueError: no mailbox for carol@invalid.example -> dead_lettered",
        ]
    )


def test_a_failing_assertion_says_what_was_dispatched_instead(project: AppProject) -> None:
    project.tests(
        """
        def test_wrong_address(courier_bus):
            app.signup("bob@example.com")
            app.bus.dispatch(Audit(what="signup"))
            courier_bus.assert_dispatched(SendEmail, to="ada@example.com")

        def test_nothing_at_all(courier_bus):
            courier_bus.assert_dispatched(SendEmail)

        def test_unwanted(courier_bus):
            app.signup("bob@example.com")
            courier_bus.assert_not_dispatched(SendEmail)

        def test_typo(courier_bus):
            courier_bus.assert_dispatched(SendEmail, too="ada@example.com")
        """
    )
    result = project.run()
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines(
        [
            '*courier_bus.assert_dispatched(SendEmail, to="ada@example.com")',
            "E*AssertionError: no SendEmail with to='ada@example.com' was dispatched",
            "E*dispatched SendEmail (1):",
            "E*SendEmail(to='bob@example.com', subject='Welcome') -- to='bob@example.com'",
            "E*dispatched in all: SendEmail x1, Audit x1",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "E*AssertionError: no SendEmail was dispatched",
            "E*dispatched in all: nothing",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "E*AssertionError: SendEmail was dispatched once, expected never:",
            "E*SendEmail(to='bob@example.com', subject='Welcome')",
        ]
    )
    result.stdout.fnmatch_lines(
        ["E*TypeError: SendEmail has no field 'too' (its fields: to, subject)"]
    )
    # The assertion's own frames are hidden: the test's line is where it failed.
    assert "courier/testing/harness.py" not in result.stdout.str()


def test_the_app_gets_its_own_transports_back_after_each_test(project: AppProject) -> None:
    project.tests(
        """
        def test_swapped(courier_bus):
            assert type(app.bus.transport("email")).__name__ == "RecordingTransport"
            app.signup("ada@example.com")

        def test_restored():
            assert type(app.bus.transport("email")).__name__ == "SqliteTransport"
            assert type(app.bus.transport("failed")).__name__ == "SqliteTransport"

        def test_fresh_history(courier_bus):
            assert courier_bus.dispatched() == []
        """
    )
    project.run("-p", "no:randomly").assert_outcomes(passed=3)


def test_the_bus_can_be_named_in_the_ini_file_or_by_overriding_courier_app(
    pytester: pytest.Pytester,
) -> None:
    module = f"courier_plugin_named_{uuid.uuid4().hex[:8]}"
    pytester.makepyfile(
        **{
            module: """
                from typing import ClassVar
                from courier import Bus, Message

                class Ping(Message):
                    message_name: ClassVar[str] = "ping"

                def make_bus():
                    bus = Bus(transports={"jobs": "sqlite:///courier.db?queue=jobs"})
                    bus.route(Ping, "jobs")
                    return bus

                bus = make_bus()
                other = make_bus()
            """
        }
    )
    pytester.syspathinsert()
    pytester.makeini(f"[pytest]\ncourier_app = {module}:bus\n")
    pytester.makepyfile(
        test_named=f"""
            import pytest
            from {module} import Ping, bus, other

            def test_from_ini(courier_bus):
                assert courier_bus.bus is bus
                bus.dispatch(Ping())
                assert courier_bus.dispatched(Ping) == [Ping()]

            class TestOverridden:
                @pytest.fixture
                def courier_app(self):
                    return other

                def test_from_fixture(self, courier_bus):
                    assert courier_bus.bus is other
                    other.dispatch(Ping())
                    courier_bus.assert_dispatched(Ping)
        """
    )
    pytester.runpytest("-q", "-p", "no:cacheprovider").assert_outcomes(passed=2)
    assert not (pytester.path / "courier.db").exists()


def test_without_an_app_the_fixture_says_how_to_name_one(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not a Django project either (test_django.py may have set one up in this process).
    monkeypatch.delitem(sys.modules, "courier.contrib.django.project", raising=False)
    pytester.makepyfile(
        test_lost="""
            def test_lost(courier_bus):
                pass

            def test_unaffected():
                pass
        """
    )
    result = pytester.runpytest("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "courier_bus: which bus is the app's? set app = 'module:bus' in courier.toml, "
            "courier_app = module:bus in pytest's ini options, or override the courier_app fixture"
        ]
    )
    assert "def courier_bus" not in result.stdout.str()  # one line, no traceback


def test_sessions_that_do_not_use_the_plugin_are_left_alone(pytester: pytest.Pytester) -> None:
    # That the plugin imports no web framework is checked in a fresh
    # interpreter by test_core_imports.py (it imports courier.testing.*).
    pytester.makepyfile(
        test_plain="""
            def test_plain(request):
                assert request.config.pluginmanager.has_plugin("courier")
        """
    )
    result = pytester.runpytest("-q", "-p", "no:cacheprovider", "-W", "error", "--strict-config")
    result.assert_outcomes(passed=1)
    assert "courier" not in result.stdout.str()
