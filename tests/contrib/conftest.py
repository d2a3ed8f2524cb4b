"""Fixtures for the framework integrations' tests.

``email_dsn`` is the DSN of the ``email`` transport for one test, once on
SQLite and once on RabbitMQ (a unique queue, deleted afterwards; the
RabbitMQ case fails under ``CI=true`` when the broker is missing, and is
skipped otherwise). ``Project`` runs real commands (``courier``,
``flask``, ``python manage.py``) in subprocesses, in a copy of an example
or of a test site, with no ``COURIER_*`` variable but the ones a test sets.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from courier.testing.services import env, require_tcp
from courier.transports.dsn import Dsn


def pytest_configure(config: pytest.Config) -> None:
    # pytester runs the plugin's own test sessions. ``pytest_plugins = ["pytester"]``
    # is refused in a conftest below the root one (pytest would load it for the whole
    # suite anyway), so load it here, once, the same way.
    if not config.pluginmanager.has_plugin("pytester"):
        config.pluginmanager.import_plugin("pytester")
    # Starlette 1.x asks for httpx2 under its TestClient; FastAPI's TestClient is
    # still what FastAPI documents. Import TestClient inside tests, where this applies.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:Using `httpx` with `starlette.testclient` is deprecated:UserWarning",
    )


ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
#: The delay levels (seconds) of the test queues, so the janitor knows their names.
DELAY_LEVELS = (1, 5)

#: Generous: two cores, shared with other engineers' test runs.
SUBPROCESS_TIMEOUT = 120


def amqp_address() -> str:
    return env("COURIER_TEST_AMQP_URL", AMQP_URL)


class AmqpJanitor:
    """Unique AMQP names for one test, and their deletion afterwards."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.tag = f"courier-fw-{uuid.uuid4().hex[:10]}"
        self.queues: set[str] = set()

    def queue(self, name: str) -> str:
        """A unique queue name, deleted (with its dead-letter queue) after the test."""
        queue = f"{self.tag}-{name}"
        self.queues.add(queue)
        return queue

    def dsn(self, queue: str) -> str:
        options = {
            "queue": self.queue(queue),
            "dead_letter_exchange": f"{self.tag}.dlx",
            "delay_prefix": f"{self.tag}.delay",
            "delay_levels": ",".join(str(level) for level in DELAY_LEVELS),
            "connect_timeout": "5",
        }
        return Dsn.parse(self.url).with_options(**options).render(reveal=True)

    def cleanup(self) -> None:
        import pika  # type: ignore[import-untyped]

        connection = pika.BlockingConnection(pika.URLParameters(self.url))
        try:
            channel = connection.channel()
            for queue in sorted(self.queues):
                channel.queue_delete(queue)
                channel.queue_delete(f"{queue}.dead")
            channel.exchange_delete(f"{self.tag}.dlx")
            for level in DELAY_LEVELS:  # declared by a worker whose retries wait
                channel.queue_delete(f"{self.tag}.delay.{level * 1000}")
                channel.exchange_delete(f"{self.tag}.delay.{level * 1000}")
        finally:
            connection.close()


@pytest.fixture
def amqp_janitor() -> Iterator[AmqpJanitor]:
    url = amqp_address()
    dsn = Dsn.parse(url)
    require_tcp("RabbitMQ", dsn.host or "127.0.0.1", dsn.port or 5672)
    janitor = AmqpJanitor(url)
    try:
        yield janitor
    finally:
        janitor.cleanup()


@pytest.fixture(params=["sqlite", pytest.param("amqp", marks=pytest.mark.amqp)])
def email_dsn(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The ``email`` transport's DSN: SQLite in the test's directory, or a fresh AMQP queue."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'courier.db'}?queue=email&poll_interval=0.02"
    janitor: AmqpJanitor = request.getfixturevalue("amqp_janitor")
    return janitor.dsn("email")


@pytest.fixture(autouse=True)
def _no_courier_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own ``COURIER_*`` variables must not steer these tests."""
    for name in list(os.environ):
        if name.startswith("COURIER_") and not name.startswith("COURIER_TEST_"):
            monkeypatch.delenv(name)


class Project:
    """A directory with an app in it, where real commands run as a user runs them."""

    def __init__(self, root: Path, environment: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.env = {
            key: value
            for key, value in os.environ.items()
            if not (key.startswith("COURIER_") and not key.startswith("COURIER_TEST_"))
        }
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.env["PYTHONPATH"] = str(root)
        self.env["COURIER_EXAMPLE_OUTBOX"] = str(root / "outbox")
        self.env.update(environment or {})

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    def mails(self) -> list[str]:
        """The text of every mail a worker wrote to the outbox, sorted."""
        if not self.outbox.exists():
            return []
        return sorted(path.read_text() for path in self.outbox.glob("*.eml"))

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``command`` in this directory; a failure shows its output."""
        program = command[0]
        if program in {"courier", "flask"}:
            program = str(BIN / program)
        elif program == "python":
            program = sys.executable
        result = subprocess.run(
            [program, *command[1:]],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT,
            check=False,
        )
        if check:
            assert result.returncode == 0, (
                f"{' '.join(command)} exited {result.returncode}\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result


def copy_example(name: str, target: Path) -> Path:
    """A fresh copy of ``examples/<name>`` (what it writes stays out of the repository)."""
    destination = target / name
    shutil.copytree(
        EXAMPLES / name,
        destination,
        ignore=shutil.ignore_patterns("__pycache__", "*.db", "*.sqlite3", "outbox"),
    )
    return destination


@pytest.fixture
def example_project(tmp_path: Path) -> object:
    """``example_project("flask_app", COURIER_TRANSPORTS__EMAIL=dsn)``: a copy of an example."""

    def make(example: str, **environment: str) -> Project:
        return Project(copy_example(example, tmp_path), environment)

    return make


@pytest.fixture
def project_at() -> object:
    """``project_at(directory, {NAME: value})``: commands run in ``directory``, on the path."""
    return Project
