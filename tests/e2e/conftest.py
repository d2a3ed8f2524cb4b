"""Fixtures for the operator's commands: a project directory and the CLI in-process.

``workspace`` writes an app module and a ``courier.toml`` to a temporary
directory, on ``memory://`` (one named broker shared by the test and the
CLI) or on one SQLite file, and runs ``courier ...`` in-process with
click's runner. ``workspace.bus()`` opens the same configuration from the
test's side, to put messages in and look at what the CLI left behind.
"""

from __future__ import annotations

import logging
import os
import sys
import textwrap
import time
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest
from click.testing import CliRunner, Result

from courier.cli import main
from courier.config import build_bus, load_settings
from courier.envelope import Envelope, ErrorDetails
from courier.errors import MessageDecodingFailed
from courier.transports.base import Listable, Received

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from courier.bus import Bus
    from courier.message import Message

#: The app every command test runs: a command, an event with a subscription,
#: and handlers steered by files beside it (so a test can "fix" a handler).
APP = '''
from pathlib import Path
from typing import ClassVar

from courier import Bus, Envelope, Event, Message

HERE = Path(__file__).parent
LEDGER = HERE / "ledger.txt"


class SendEmail(Message):
    message_name: ClassVar[str] = "email.send"
    to: str
    subject: str = ""


class ArchiveEmail(Message):
    """Known to the app only once the file ``archive-known`` exists."""

    message_name: ClassVar[str] = "email.archive"
    mailbox: str


class UserRegistered(Event):
    message_name: ClassVar[str] = "user.registered"
    user_id: int


def record(line: str) -> None:
    with LEDGER.open("a") as ledger:
        ledger.write(line + "\\n")


def make_bus() -> Bus:
    bus = Bus()

    @bus.handler(SendEmail)
    def send_email(message: SendEmail, envelope: Envelope) -> None:
        if (HERE / "smtp-down").exists():
            raise ConnectionRefusedError("SMTP server refused the connection")
        record(f"send_email {envelope.id} attempt={envelope.attempt}")

    subscription = (HERE / "subscription").read_text().strip() if (
        HERE / "subscription"
    ).exists() else "welcome"

    @bus.handler(UserRegistered, subscription=subscription)
    def welcome(message: UserRegistered, envelope: Envelope) -> None:
        record(f"{subscription} {envelope.id}")

    if (HERE / "archive-known").exists():
        bus.register_messages(ArchiveEmail)
    return bus
'''

CONFIG = """
app = "{module}:make_bus"
{extra}
[transports]
jobs = "{jobs}"
events = "{events}"
failed = "{failed}"
invalid = "{invalid}"
{more_transports}
[routing]
"email.send" = "jobs"
"user.registered" = {{ transport = "events", topic = "users" }}

[retry]
max_retries = 0
"""

BACKENDS = ["memory", "sqlite"]


class Workspace:
    """One project directory: the app, its configuration, the CLI and a view from outside."""

    def __init__(self, root: Path, backend: str) -> None:
        self.root = root
        self.backend = backend
        suffix = uuid.uuid4().hex[:10]
        self.module = f"courier_e2e_app_{suffix}"
        self.broker = f"e2e-{suffix}"
        self.config = root / "courier.toml"
        self.ledger = root / "ledger.txt"
        self._buses: list[Bus] = []
        (root / f"{self.module}.py").write_text(APP)
        self.configure()

    def dsn(self, queue: str, *, password: str | None = None) -> str:
        if self.backend == "memory":
            auth = f"operator:{password}@" if password else ""
            return f"memory://{auth}{self.broker}?queue={queue}&serialize=true"
        return f"sqlite:///courier.db?queue={queue}&poll_interval=0.01"

    def configure(
        self,
        *,
        extra: str = "",
        more_transports: str = "",
        password: str | None = None,
        app: bool = True,
    ) -> None:
        text = CONFIG.format(
            module=self.module,
            extra=extra,
            jobs=self.dsn("jobs", password=password),
            events=self.dsn("events"),
            failed=self.dsn("failed"),
            invalid=self.dsn("invalid"),
            more_transports=more_transports,
        )
        if not app:
            text = text.replace(f'app = "{self.module}:make_bus"', "")
        self.config.write_text(textwrap.dedent(text))

    @property
    def app(self) -> Any:
        __import__(self.module)
        return sys.modules[self.module]

    def flag(self, name: str, content: str = "") -> None:
        """Create a file the app reads (``smtp-down``, ``archive-known``, ``subscription``)."""
        (self.root / name).write_text(content)

    def unflag(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def courier(self, *args: str, input: str | None = None) -> Result:
        """``courier --config courier.toml ARGS``, in-process."""
        return CliRunner().invoke(
            main, ["--config", str(self.config), *args], input=input, catch_exceptions=False
        )

    def bus(self) -> Bus:
        """The app's bus on this configuration, as the CLI builds it (closed after the test)."""
        settings, _ = load_settings(self.config)
        bus = build_bus(settings, self.app.make_bus())
        self._buses.append(bus)
        return bus

    def store(self, bus: Bus, name: str | None = None) -> Listable:
        """The failure store (or the transport ``name``) as a Listable."""
        transport = bus.transport(name or bus.failure_transport or "failed")
        assert isinstance(transport, Listable)
        return transport

    def store_failure(
        self,
        bus: Bus,
        message: Message,
        error: Exception | None = None,
        *,
        transport: str = "jobs",
        queue: str | None = None,
        attempt: int = 3,
        age: float = 0.0,
    ) -> Envelope:
        """Dead-letter ``message`` as a worker does after its last attempt."""
        envelope = Envelope(message, attempt=attempt)
        received = Received(bus.transport(transport), None, queue or transport)
        try:
            raise error or ConnectionRefusedError("SMTP server refused the connection")
        except Exception as raised:
            if not age:
                bus.dead_letters.failed(received, envelope, raised)
                return envelope
            details = ErrorDetails.from_exception(raised, transport=transport, queue=received.queue)
        details = replace(details, failed_at=time.time() - age)
        bus.transport(bus.failure_transport or "failed").send(envelope.with_(error=details))
        return envelope

    def store_invalid(
        self,
        bus: Bus,
        body: bytes,
        headers: dict[str, str],
        reason: str,
        *,
        transport: str = "jobs",
    ) -> str:
        """Keep undecodable bytes in the invalid store as a worker does; returns the id."""
        received = Received(bus.transport(transport), None, transport)
        received.raw = body
        received.raw_headers = headers
        received.error = MessageDecodingFailed(reason, body, headers)
        bus.dead_letters.invalid(received)
        return self.store(bus, bus.invalid_transport).list()[-1].id

    @staticmethod
    def lines(text: str) -> list[str]:
        """Output lines with table padding stripped."""
        return [line.strip() for line in text.splitlines()]

    def close(self) -> None:
        for bus in self._buses:
            bus.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def open_workspace(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Workspace]:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("COURIER_"):
            monkeypatch.delenv(name)
    # The CLI sets COURIER_CONFIG for the app; monkeypatch removes it again.
    monkeypatch.delenv("COURIER_CONFIG", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    logger = logging.getLogger("courier")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    workspace = Workspace(tmp_path, backend)
    if backend == "sqlite":
        # A project that has run before: its courier.db exists (the commands
        # that only look refuse to create one; test_cli_debug shows that).
        workspace.bus().setup()
    try:
        yield workspace
    finally:
        workspace.close()
        sys.modules.pop(workspace.module, None)
        logger.handlers[:], logger.level, logger.propagate = saved


@pytest.fixture
def workspace(backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    """A project on ``backend`` (memory, then sqlite), the working directory for the test."""
    yield from open_workspace(backend, tmp_path, monkeypatch)


@pytest.fixture
def memory_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    """``workspace`` on memory only, for cases where the transport does not matter."""
    yield from open_workspace("memory", tmp_path, monkeypatch)
