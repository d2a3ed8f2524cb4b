"""The README's "Use courier in your project", word for word, in a fresh virtual environment.

``./scripts/build`` puts a wheel of the core and of every adapter in one
folder; the user's own venv installs ``courier-bus`` with every extra from
it, with an exact version so no other package of a similar name can be
picked; then the installed ``courier`` command dispatches and consumes one
message on SQLite and one on RabbitMQ.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from courier.testing.services import env, require_tcp

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
EXTRAS = ("amqp", "redis", "sqs", "stomp", "beanstalk")

APP = """
from typing import ClassVar
from pathlib import Path
from courier import Bus, Message

class Welcome(Message):
    message_name: ClassVar[str] = "shop.welcome"
    email: str

bus = Bus.from_config()

@bus.handler(Welcome)
def welcome(message: Welcome) -> None:
    with (Path(__file__).parent / "sent.txt").open("a") as sent:
        sent.write(message.email + "\\n")
"""


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("COURIER_")}
    clean.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        args, cwd=cwd, env=clean, capture_output=True, text=True, timeout=500, check=False
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's own project folder, with courier installed into its .venv from the wheels."""
    dist = tmp_path_factory.mktemp("dist")
    run([str(ROOT / "scripts" / "build"), str(dist)], ROOT)
    project = tmp_path_factory.mktemp("shop")
    run([sys.executable, "-m", "venv", ".venv"], project)
    extras = ",".join(EXTRAS)
    run(
        [
            str(project / ".venv" / "bin" / "pip"),
            "install",
            "--quiet",
            "--find-links",
            str(dist),
            f"courier-bus[{extras}]==0.1.0",
        ],
        project,
    )
    return project


def use(project: Path, dsn: str) -> None:
    (project / "shop_app.py").write_text(APP)
    (project / "courier.toml").write_text(
        textwrap.dedent(
            f"""\
            app = "shop_app:bus"

            [transports]
            email = "{dsn}"

            [routing]
            "shop.welcome" = "email"
            """
        )
    )
    (project / "sent.txt").unlink(missing_ok=True)


def dispatch_and_consume(project: Path, email: str) -> None:
    courier = str(project / ".venv" / "bin" / "courier")
    run([courier, "setup"], project)
    run([courier, "dispatch", "shop.welcome", f'{{"email": "{email}"}}'], project)
    consumed = run([courier, "consume", "email", "--stop-when-empty"], project)
    assert "handled 1 · failed 0 · retried 0" in consumed.stdout
    assert (project / "sent.txt").read_text() == email + "\n"


def test_the_installed_package_is_ours_with_every_adapter(installed: Path) -> None:
    python = str(installed / ".venv" / "bin" / "python")
    probe = (
        "import courier, importlib.metadata as m;"
        "print(courier.__file__);"
        "print(sorted(e.name for e in m.entry_points(group='courier.transports')))"
    )
    where, schemes = run([python, "-c", probe], installed).stdout.splitlines()
    assert where.startswith(str(installed / ".venv"))
    for scheme in ("amqp", "redis", "redis+cluster", "sqs", "stomp", "beanstalk", "sqlite"):
        assert f"'{scheme}'" in schemes
    version = run([str(installed / ".venv" / "bin" / "courier"), "--version"], installed)
    assert "0.1.0" in version.stdout


def test_dispatch_and_consume_on_sqlite(installed: Path) -> None:
    use(installed, "sqlite:///courier.db?queue=email")
    dispatch_and_consume(installed, "ada@example.com")


def test_dispatch_and_consume_on_rabbitmq(installed: Path) -> None:
    url = env("COURIER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
    require_tcp("RabbitMQ", "127.0.0.1", 5672)
    queue = f"install-{uuid.uuid4().hex[:8]}"
    use(installed, f"{url}?queue={queue}&dead_letter_exchange={queue}.dlx")
    try:
        dispatch_and_consume(installed, "grace@example.com")
    finally:
        import pika  # type: ignore[import-untyped]

        connection = pika.BlockingConnection(pika.URLParameters(url))
        channel = connection.channel()
        for name in (queue, f"{queue}.dead"):
            channel.queue_delete(name)
        channel.exchange_delete(f"{queue}.dlx")
        connection.close()
