"""A Redis-only deployment as an operator runs it: consume, and ``courier failed`` on streams.

Every transport of the configuration is on Redis, the failure and
invalid-message stores included, so ``courier failed list|show|retry|remove``
work on streams: a failed message is shown, retried after the fix and
handled; undecodable bytes a foreign producer wrote are kept with their
reason and removed.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from courier.cli import main
from courier.config import build_bus, load_settings

pytestmark = pytest.mark.redis

APP = """
from pathlib import Path
from typing import ClassVar

from courier import Bus, Envelope, Message

HERE = Path(__file__).parent


class SendEmail(Message):
    message_name: ClassVar[str] = "email.send"
    to: str


def make_bus() -> Bus:
    bus = Bus()

    @bus.handler(SendEmail)
    def send_email(message: SendEmail, envelope: Envelope) -> None:
        if (HERE / "smtp-down").exists():
            raise ConnectionRefusedError("SMTP server refused the connection")
        with (HERE / "ledger.txt").open("a") as ledger:
            ledger.write(f"sent {message.to} {envelope.id}\\n")

    return bus
"""


class Project:
    def __init__(self, root: Path, janitor: Any) -> None:
        self.root = root
        self.module = f"courier_redis_app_{uuid.uuid4().hex[:8]}"
        (root / f"{self.module}.py").write_text(APP)
        self.queues = {name: janitor.name(name) for name in ("jobs", "failed", "invalid")}
        transports = "\n".join(
            f'{name} = "{janitor.dsn(queue)}"' for name, queue in self.queues.items()
        )
        self.config = root / "courier.toml"
        self.config.write_text(
            textwrap.dedent(
                f"""
                app = "{self.module}:make_bus"

                [transports]
                {{transports}}

                [routing]
                "email.send" = "jobs"

                [retry]
                max_retries = 0
                """
            ).replace("{transports}", transports)
        )
        self.buses: list[Any] = []

    def courier(self, *args: str) -> Result:
        return CliRunner().invoke(
            main, ["--config", str(self.config), *args], catch_exceptions=False
        )

    def bus(self) -> Any:
        settings, _ = load_settings(self.config)
        bus = build_bus(settings, sys.modules[self.module].make_bus())
        self.buses.append(bus)
        return bus

    def ledger(self) -> list[str]:
        path = self.root / "ledger.txt"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def project(janitor: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("COURIER_"):
            monkeypatch.delenv(name)
    monkeypatch.syspath_prepend(str(tmp_path))
    logger = logging.getLogger("courier")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    made = Project(tmp_path, janitor)
    __import__(made.module)
    try:
        yield made
    finally:
        for bus in made.buses:
            bus.close()
        sys.modules.pop(made.module, None)
        logger.handlers[:], logger.level, logger.propagate = saved


def listed(project: Project) -> list[dict[str, Any]]:
    result = project.courier("failed", "list", "--json")
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def test_failed_list_show_retry_remove_on_redis(project: Project, janitor: Any) -> None:
    setup = project.courier("setup")
    assert setup.exit_code == 0, setup.output
    bus = project.bus()
    app = sys.modules[project.module]
    sent = bus.dispatch(app.SendEmail(to="ada@example.com"))
    (project.root / "smtp-down").touch()
    consumed = project.courier("consume", "jobs", "--limit", "1", "--no-progress")
    assert consumed.exit_code == 0, consumed.output
    assert project.ledger() == []

    [row] = listed(project)
    assert row["id"] == sent.id
    assert (row["kind"], row["type"], row["transport"]) == ("failed", "email.send", "jobs")
    assert row["error_class"].endswith("ConnectionRefusedError")
    shown = project.courier("failed", "show", sent.id[:8])
    assert shown.exit_code == 0, shown.output
    assert "SMTP server refused the connection" in shown.stdout
    assert "ada@example.com" in shown.stdout

    (project.root / "smtp-down").unlink()
    retried = project.courier("failed", "retry", sent.id)
    assert retried.exit_code == 0, retried.output
    assert listed(project) == []
    consumed = project.courier("consume", "jobs", "--limit", "1", "--no-progress")
    assert consumed.exit_code == 0, consumed.output
    assert project.ledger() == [f"sent ada@example.com {sent.id}"]

    janitor.xadd_raw(
        project.queues["jobs"],
        {"body": b"\xff not json", "courier-type": "email.send", "courier-id": "garbage-1"},
    )
    consumed = project.courier("consume", "jobs", "--limit", "1", "--no-progress")
    assert consumed.exit_code == 0, consumed.output
    [row] = listed(project)
    assert (row["id"].split(".")[0], row["kind"]) == ("garbage-1", "invalid")
    shown = project.courier("failed", "show", "garbage-1")  # a prefix names it
    assert "malformed JSON" in shown.stdout
    removed = project.courier("failed", "remove", "garbage-1")
    assert removed.exit_code == 0, removed.output
    assert listed(project) == []
    stats = project.courier("stats")
    assert stats.exit_code == 0, stats.output
    assert janitor.raw.xlen(janitor.stream(project.queues["jobs"])) == 0
