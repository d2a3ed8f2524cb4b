"""The ``courier`` command on beanstalkd, as an operator runs it, with a password in the DSN.

beanstalkd has no authentication, so a password in a beanstalk:// DSN is
never sent; it must still never be printed: not by ``setup``, ``dispatch``,
``consume``, ``stats`` or ``debug``, not at ``-vv``, not in the failure
store's records.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.beanstalk

PASSWORD = "pa55-w0rd/secret"
ENCODED = "pa55-w0rd%2Fsecret"

APP = """
from pathlib import Path
from typing import ClassVar

from courier import Bus, Envelope, Event, Message

LEDGER = Path(__file__).with_name("ledger.txt")


class SendEmail(Message):
    message_name: ClassVar[str] = "email.send"
    to: str


class UserRegistered(Event):
    message_name: ClassVar[str] = "user.registered"
    user_id: int


def make_bus() -> Bus:
    bus = Bus()

    @bus.handler(SendEmail)
    def send_email(message: SendEmail, envelope: Envelope) -> None:
        if message.to == "broken@example.com":
            raise RuntimeError("the mail server said no")
        with LEDGER.open("a") as ledger:
            ledger.write(f"email {message.to}\\n")

    @bus.handler(UserRegistered, subscription="welcome")
    def welcome(message: UserRegistered) -> None:
        with LEDGER.open("a") as ledger:
            ledger.write(f"welcome {message.user_id}\\n")

    return bus
"""

CONFIG = """
app = "{module}:make_bus"
failure_transport = "failed"
invalid_transport = "failed"

[transports]
jobs = "{jobs}"
events = "{events}"
failed = "sqlite:///courier.db?queue=failed"

[routing]
"email.send" = "jobs"
"user.registered" = {{ transport = "events", topic = "{topic}" }}

[retry]
max_retries = 0
"""


class Project:
    def __init__(self, root: Path, janitor: Any) -> None:
        self.root = root
        self.module = f"courier_beanstalk_cli_{janitor.tag}"
        self.queue = janitor.name("jobs")
        self.topic = janitor.name("users")
        self.events = janitor.name("events")
        (root / f"{self.module}.py").write_text(APP)
        host = janitor.url.split("://", 1)[1]
        base = f"beanstalk://operator:{ENCODED}@{host}"
        (root / "courier.toml").write_text(
            textwrap.dedent(
                CONFIG.format(
                    module=self.module,
                    jobs=f"{base}?queue={self.queue}&lease=2",
                    events=f"{base}?tube={self.events}",
                    topic=self.topic,
                )
            )
        )

    def courier(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(self.root)}
        result = subprocess.run(
            [sys.executable, "-c", "from courier.cli import main; main()", "-vv", *args],
            cwd=self.root,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        for text in (result.stdout, result.stderr):
            assert PASSWORD not in text
            assert ENCODED not in text
        return result

    def ledger(self) -> list[str]:
        path = self.root / "ledger.txt"
        return path.read_text().splitlines() if path.exists() else []


def test_setup_dispatch_consume_stats_and_failed_never_show_the_password(
    janitor: Any, tmp_path: Path
) -> None:
    project = Project(tmp_path, janitor)
    setup = project.courier("setup")
    assert setup.returncode == 0, setup.stderr
    assert f"{project.topic}.welcome" in setup.stdout
    assert "no orphaned queues" in setup.stdout

    lines = [json.dumps({"to": to}) for to in ("ada@", "broken@example.com", "bob@")]
    sent = project.courier("dispatch", "email.send", "-", stdin="\n".join(lines) + "\n")
    assert sent.returncode == 0, sent.stderr
    event = project.courier("dispatch", "user.registered", '{"user_id": 7}', "--priority", "9")
    assert event.returncode == 0, event.stderr

    consume = project.courier(
        "consume", "jobs", "events", "--limit", "4", "--sleep", "0.2", "--no-progress"
    )
    assert consume.returncode == 0, consume.stderr
    assert sorted(project.ledger()) == [
        "email ada@",
        "email bob@",
        "welcome 7",
    ]

    after = project.courier("stats", "--json")
    counts = {(row["transport"], row["queue"]): row for row in json.loads(after.stdout)}
    assert counts["jobs", project.queue]["ready"] == 0
    assert counts["jobs", project.queue]["dead"] == 0
    assert counts["events", f"{project.topic}.welcome"]["ready"] == 0
    assert counts["failed", "failed"]["ready"] == 1
    store = (tmp_path / "courier.db").read_bytes()
    assert b"the mail server said no" in store
    assert PASSWORD.encode() not in store
    assert ENCODED.encode() not in store
