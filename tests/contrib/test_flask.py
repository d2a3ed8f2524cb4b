"""courier.contrib.flask, with Flask's own test client and CLI runner, on SQLite and RabbitMQ.

The end-to-end cases run the example (``examples/flask_app``): a request
through ``app.test_client()`` dispatches, and a real ``flask courier
consume`` subprocess sends the mail. The rest build small apps in the test.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from flask import Flask, current_app

from courier import Bus, ConfigurationError, Message
from courier.contrib.flask import Courier, current_bus


class Ping(Message):
    message_name: ClassVar[str] = "flask.ping"
    n: int


@pytest.fixture(autouse=True)
def _courier_logging() -> Iterator[None]:
    """The CLI configures the ``courier`` logger; put it back after in-process runs."""
    logger = logging.getLogger("courier")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        yield
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture
def flask_example(
    example_project: Any, email_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """The example's copy, its module importable, the ``email`` transport at ``email_dsn``."""
    project = example_project("flask_app", COURIER_TRANSPORTS__EMAIL=email_dsn)
    monkeypatch.chdir(project.root)
    monkeypatch.syspath_prepend(str(project.root))
    monkeypatch.setenv("COURIER_TRANSPORTS__EMAIL", email_dsn)
    try:
        yield project
    finally:
        sys.modules.pop("signup_flask", None)


def make_app(courier: Courier, **config: Any) -> Flask:
    app = Flask(__name__)
    app.config["COURIER"] = {
        "transports": {"jobs": "memory://"},
        "routing": {"flask.ping": "jobs"},
        "failure_transport": None,
        **config,
    }
    courier.init_app(app)
    return app


def test_a_request_dispatches_and_flask_courier_consume_handles_it(flask_example: Any) -> None:
    import signup_flask

    app = signup_flask.create_app()
    try:
        response = app.test_client().post("/signup", data={"email": "ada@example.com"})
        assert response.status_code == 202
        assert len(response.json["message_id"]) == 32
        bad = app.test_client().post("/signup", data={"email": "nobody"})
        assert bad.status_code == 400
    finally:
        app.extensions["courier"].close()

    flask_example.run(
        "flask", "--app", "signup_flask", "courier", "consume", "email",
        "--limit", "1", "--time-limit", "60", "--no-progress",
    )  # fmt: skip

    [mail] = flask_example.mails()
    assert "To: ada@example.com" in mail
    assert "Subject: Welcome aboard" in mail


def test_flask_s_cli_runner_runs_the_courier_group_in_the_app_context() -> None:
    handled: list[tuple[int, str]] = []
    courier = Courier()

    @courier.handler(Ping)
    def ping(message: Ping) -> None:
        handled.append((message.n, current_app.name))  # the app context is pushed

    app = make_app(courier)
    with app.app_context():
        courier.dispatch(Ping(n=1))
        courier.dispatch(Ping(n=2))
    runner = app.test_cli_runner()

    result = runner.invoke(
        args=["courier", "consume", "jobs", "--stop-when-empty", "--no-progress"]
    )

    assert result.exit_code == 0, result.output
    assert handled == [(1, app.name), (2, app.name)]
    result = runner.invoke(args=["courier", "consume", "nope"])
    assert result.exit_code == 4
    assert "error: unknown transport 'nope' (configured: jobs)" in result.output
    assert "consume" in runner.invoke(args=["courier", "--help"]).output


def test_the_app_s_bus_stays_open_after_a_command(tmp_path: Any) -> None:
    courier = Courier()
    app = make_app(courier, transports={"jobs": f"sqlite:///{tmp_path / 'courier.db'}?queue=jobs"})
    runner = app.test_cli_runner()

    assert runner.invoke(args=["courier", "setup"]).exit_code == 0  # stats creates no database
    assert runner.invoke(args=["courier", "stats"]).exit_code == 0
    with app.app_context():
        courier.dispatch(Ping(n=1))  # not "the sqlite connection is closed"
    result = runner.invoke(args=["courier", "stats"])
    assert [line.split()[2] for line in result.output.splitlines() if "jobs" in line] == ["1"]


def test_one_extension_serves_many_apps_each_with_its_own_bus() -> None:
    courier = Courier()
    first = make_app(courier)
    second = make_app(courier, transports={"jobs": "memory://"})

    @courier.handler(Ping)  # registered after init_app: reaches both apps
    def ping(message: Ping) -> None:
        pass

    first_bus = first.extensions["courier"]
    second_bus = second.extensions["courier"]
    assert isinstance(first_bus, Bus)
    assert first_bus is not second_bus
    for app, bus in ((first, first_bus), (second, second_bus)):
        assert bus.handlers.command(Ping) is not None
        with app.app_context():
            assert current_bus() is bus
            assert courier.bus is bus
            envelope = courier.dispatch(Ping(n=1))
        assert [e.id for e in bus.transport("jobs").sent] == [envelope.id]


def test_a_bus_of_the_project_s_own_keeps_its_transports() -> None:
    own = Bus(transports={"jobs": "memory://"})
    own.route(Ping, "jobs")
    app = Flask(__name__)
    app.config["COURIER"] = {"transports": {"other": "memory://"}}

    Courier(app, bus=own)
    assert app.extensions["courier"] is own
    assert sorted(own.transports) == ["jobs"]

    bare = Bus()
    app = Flask(__name__)
    app.config["COURIER"] = {"transports": {"other": "memory://"}, "failure_transport": None}
    Courier(app, bus=bare)
    assert sorted(bare.transports) == ["other"]  # configured from app.config


def test_a_bad_config_fails_with_one_line_naming_the_key() -> None:
    app = Flask(__name__)
    app.config["COURIER"] = {"transports": {"jobs": "memory://"}, "tranports": {}}
    with pytest.raises(ConfigurationError, match=r"^app.config\['COURIER'\]: tranports: unknown"):
        Courier(app)

    app.config["COURIER"] = {"routing": {"flask.ping": "nowhere"}, "transports": {"a": "memory://"}}
    with pytest.raises(
        ConfigurationError,
        match=r"^app.config\['COURIER'\]: routing.flask.ping: unknown transport 'nowhere'",
    ):
        Courier(app)


def test_without_init_app_the_bus_says_how_to_set_it_up() -> None:
    app = Flask("bare")
    with (
        app.app_context(),
        pytest.raises(RuntimeError, match=r"courier is not set up on the app 'bare': call Courier"),
    ):
        current_bus()


class TestWithThePytestPlugin:
    """``courier_bus`` on a Flask app: override ``courier_app`` with the app's bus."""

    handled: ClassVar[list[int]] = []

    @pytest.fixture
    def app(self) -> Flask:
        courier = Courier()

        @courier.handler(Ping)
        def ping(message: Ping) -> None:
            self.handled.append(message.n)

        app = make_app(courier)

        @app.post("/ping/<int:n>")
        def send(n: int) -> tuple[str, int]:
            courier.dispatch(Ping(n=n))
            return "", 202

        return app

    @pytest.fixture
    def courier_app(self, app: Flask) -> Bus:
        bus: Bus = app.extensions["courier"]
        return bus

    def test_requests_are_recorded_and_drained(self, app: Flask, courier_bus: Any) -> None:
        assert app.test_client().post("/ping/7").status_code == 202
        courier_bus.assert_dispatched(Ping, n=7)
        courier_bus.drain()
        assert self.handled == [7]
