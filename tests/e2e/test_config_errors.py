"""A bad configuration fails at startup with one line naming the key.

Each case runs ``courier consume`` in-process on a configuration written to
a temporary directory and asserts the exact line the user sees on stderr
and the exit code (2: nothing was done).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from courier.cli import main

APP = """
from typing import ClassVar
from courier import Bus, Message

class SendEmail(Message):
    message_name: ClassVar[str] = "email.send"
    to: str

class Orphan(Message):
    message_name: ClassVar[str] = "orphan.command"

bus = Bus.from_config()

@bus.handler(SendEmail)
def send_email(message: SendEmail) -> None:
    pass
"""

GOOD = """
app = "errapp:bus"
failure_transport = "failed"
invalid_transport = "failed"
[transports]
email = "memory://errors?queue=email"
failed = "memory://errors?queue=failed"
[routing]
"email.send" = "email"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COURIER_CONFIG", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "errapp.py").write_text(APP)
    # Each test imports the app afresh from its own directory.
    monkeypatch.delitem(__import__("sys").modules, "errapp", raising=False)
    return tmp_path


def run(project: Path, config: str, *args: str) -> tuple[int, str]:
    (project / "courier.toml").write_text(textwrap.dedent(config))
    result = CliRunner().invoke(main, ["consume", *args], catch_exceptions=False)
    return result.exit_code, result.stderr.strip()


def test_the_good_configuration_consumes(project: Path) -> None:
    code, err = run(project, GOOD, "email", "--stop-when-empty", "--sleep", "0", "--no-progress")
    assert (code, err) == (0, "")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ('app = "errapp:bus"', 'app = "errapp:bus"\ntarnsports = 1'),
            "error: courier.toml: tarnsports: unknown setting",
        ),
        (
            ('app = "errapp:bus"', 'app = "errapp:bus"\nmax_deliveries = 0'),
            "error: courier.toml: max_deliveries: Input should be greater than or equal to 1",
        ),
        (
            (
                'email = "memory://errors?queue=email"',
                'email = "memory://errors?queue=email&colour=red"',
            ),
            "error: transports.email: unknown option 'colour' (known: history, max_message_size, "
            "queue, serialize) in DSN memory://errors?queue=email&colour=red",
        ),
        (
            ('email = "memory://errors?queue=email"', 'email = "carrier-pigeon://loft"'),
            "error: transports.email: transport 'email': no transport for scheme "
            "'carrier-pigeon' (known: amqp, amqps, beanstalk, beanstalkd, memory, redis, "
            "redis+cluster, redis+unix, rediss, rediss+cluster, sqlite, sqs, stomp, stomp+ssl, "
            "sync)",
        ),
        (
            ('"email.send" = "email"', '"email.send" = "emial"'),
            "error: routing.email.send: unknown transport 'emial' (known: email, failed)",
        ),
        (
            ('failed = "memory://errors?queue=failed"', 'failed = "sync://"'),
            "error: failure_transport: transport 'failed' cannot list its messages, so `courier "
            "failed` could not show them; use sqlite://, memory:// or redis://",
        ),
        (
            ('failure_transport = "failed"', 'failure_transport = "nowhere"'),
            "error: failure_transport: unknown transport 'nowhere'",
        ),
        (
            ('app = "errapp:bus"', 'app = "missing_module:bus"'),
            "error: app: cannot import 'missing_module' (No module named 'missing_module')",
        ),
        (
            ('app = "errapp:bus"', 'app = "errapp:nothing"'),
            "error: app: 'errapp' has no attribute 'nothing'",
        ),
        (
            ('app = "errapp:bus"', 'app = "errapp"'),
            "error: courier.toml: app: Value error, must look like 'package.module:bus'",
        ),
        (
            ('"email.send" = "email"', '"email.send" = "email"\n"orphan.command" = "email"'),
            "error: orphan.command is routed to 'email' but has no handler in this process",
        ),
        (
            ('"email.send" = "email"', '"email.send" = "email"\n"never.imported" = "email"'),
            "error: routing names message type 'never.imported' for 'email', but no class with "
            "that message_name is imported by the app",
        ),
        (
            ("[routing]", "[retry]\ndelay = -1\n[routing]"),
            "error: courier.toml: retry.delay: Input should be greater than or equal to 0",
        ),
        (
            ("[routing]", "[retry.transports.nowhere]\ndelay = 1\n[routing]"),
            "error: retry.transports.nowhere: unknown transport 'nowhere'",
        ),
        (
            ("[transports]", "[transports\n"),
            "error: courier.toml: not valid TOML",
        ),
    ],
    ids=[
        "unknown-setting",
        "out-of-range",
        "unknown-dsn-option",
        "unknown-scheme",
        "route-to-unknown-transport",
        "failure-transport-cannot-list",
        "unknown-failure-transport",
        "app-not-importable",
        "app-attribute-missing",
        "app-string-shape",
        "command-without-handler",
        "routed-type-never-imported",
        "negative-retry-delay",
        "retry-for-unknown-transport",
        "invalid-toml",
    ],
)
def test_bad_configuration_is_one_line_naming_the_key(
    project: Path, change: tuple[str, str], expected: str
) -> None:
    old, new = change
    config = GOOD if old in GOOD else GOOD + "\n" + old
    code, err = run(project, config.replace(old, new, 1), "email", "--stop-when-empty")
    assert code == 2
    assert "\n" not in err
    assert err.startswith(expected)
    assert "hunter2" not in err


def test_unknown_transport_on_the_command_line(project: Path) -> None:
    code, err = run(project, GOOD, "emial", "--stop-when-empty")
    assert (code, err) == (4, "error: unknown transport 'emial' (configured: email, failed)")


def test_consuming_needs_an_app(project: Path) -> None:
    code, err = run(project, GOOD.replace('app = "errapp:bus"', ""), "email")
    assert code == 2
    assert err == (
        "error: app: not set; name the bus that has your handlers, e.g. app = "
        '"myapp.messaging:bus" in courier.toml, COURIER_APP or --app'
    )


def test_the_environment_overrides_the_file(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COURIER_TRANSPORTS__EMAIL", "memory://errors?queue=email&bogus=1")
    code, err = run(project, GOOD, "email", "--stop-when-empty")
    assert code == 2
    assert err.startswith("error: transports.email: unknown option 'bogus'")


def test_malformed_json_in_the_environment_is_one_line(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COURIER_TRANSPORTS", "{not json")
    code, err = run(project, GOOD, "email", "--stop-when-empty")
    assert code == 2
    assert err == (
        'error: COURIER_* environment: error parsing value for field "transports" '
        'from source "EnvSettingsSource"'
    )
