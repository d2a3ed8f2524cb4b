"""``courier failed`` and ``courier stats`` on buried jobs, with the real beanstalkd.

A job is buried when courier's failure store cannot take its record (here a
SQLite store whose ``max_message_size`` is smaller than the message), or
when another program buries it. Either way the operator must see it with
``courier failed list``, read it with ``show``, put it back with ``retry``
(``kick-job`` on that job: a delayed job in the same tube stays delayed) so
a worker handles it, or delete it with ``remove``. Every step runs as the
operator runs it: the ``courier`` command in a process of its own.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import greenstalk
import pytest

pytestmark = pytest.mark.beanstalk

APP = """
from pathlib import Path
from typing import ClassVar

from courier import Bus, Message

HERE = Path(__file__).parent
#: Empty: courier.toml's transports. Else the app's own, with no failure transport at all.
TRANSPORTS = {transports}


class SendEmail(Message):
    message_name: ClassVar[str] = "email.send"
    to: str


def make_bus() -> Bus:
    bus = Bus(transports=TRANSPORTS)

    @bus.handler(SendEmail)
    def send_email(message: SendEmail) -> None:
        if not (HERE / "fixed").exists():
            raise RuntimeError("the mail server said no")
        with (HERE / "ledger.txt").open("a") as ledger:
            ledger.write(f"email {message.to}\\n")

    return bus
"""


CONFIG = """
app = "{module}:make_bus"
failure_transport = "failed"

[transports]
jobs = "{jobs}"
# Bodies of at most 64 bytes: the record of a message to LONG is refused.
failed = "sqlite:///courier.db?queue=failed&max_message_size=64"

[routing]
"email.send" = "jobs"

[retry]
max_retries = 0
"""

LONG = "a-rather-long-address-that-no-failure-record-has-room-for@example.com"


class Project:
    """A project directory with the app and courier.toml; runs ``courier`` in it."""

    def __init__(self, root: Path, janitor: Any, *, store: bool = True) -> None:
        self.root = root
        self.janitor = janitor
        self.module = f"courier_beanstalk_failed_{janitor.tag}"
        self.tube = janitor.name("jobs")
        jobs = janitor.dsn(self.tube)
        # Without a store, the app's bus has its transports: courier.toml would add one.
        transports = {} if store else {"jobs": jobs}
        (root / f"{self.module}.py").write_text(APP.replace("{transports}", repr(transports)))
        text = CONFIG.format(module=self.module, jobs=jobs)
        (root / "courier.toml").write_text(textwrap.dedent(text))

    def courier(self, *args: str, code: int | None = 0) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(self.root), "COLUMNS": "200"}
        result = subprocess.run(
            [sys.executable, "-c", "from courier.cli import main; main()", *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if code is not None:
            assert result.returncode == code, result.stdout + result.stderr
        return result

    def listed(self) -> dict[str, dict[str, Any]]:
        rows = json.loads(self.courier("failed", "list", "--json").stdout)
        return {row["id"]: row for row in rows}

    def ledger(self) -> list[str]:
        path = self.root / "ledger.txt"
        return path.read_text().splitlines() if path.exists() else []

    def bury_foreign(self, body: bytes) -> int:
        """Put and bury a job as another program would, with greenstalk alone."""
        host, port = self.janitor.url.split("://", 1)[1].rsplit(":", 1)
        client = greenstalk.Client((host, int(port)), encoding=None)
        try:
            client.use(self.tube)
            client.put(body)
            client.watch(self.tube)
            client.ignore("default")
            job = client.reserve(timeout=5)
            client.bury(job)
            return job.id
        finally:
            client.close()


def test_a_job_buried_when_the_store_refused_it_is_listed_kicked_alone_and_handled(
    janitor: Any, tmp_path: Path
) -> None:
    project = Project(tmp_path, janitor)
    later = janitor.put_raw(project.tube, b"wakes in an hour", delay=3600)
    project.courier("dispatch", "email.send", json.dumps({"to": LONG}))
    consumed = project.courier("consume", "jobs", "--limit", "1", "--no-progress", code=None)
    assert "too large" in consumed.stderr, consumed.stderr
    assert janitor.counts(project.tube) == {"ready": 0, "reserved": 0, "delayed": 1, "buried": 1}

    [(buried_id, row)] = project.listed().items()
    job_id = int(buried_id.rsplit(":", 1)[1])
    assert buried_id == f"buried:jobs:{job_id}"
    assert janitor.job(job_id)["state"] == "buried"  # type: ignore[index]
    assert {key: row[key] for key in ("store", "kind", "type", "transport", "queue")} == {
        "store": "buried",
        "kind": "buried",
        "type": "email.send",
        "transport": "jobs",
        "queue": project.tube,
    }
    assert row["attempts"] == 1
    assert row["error_class"] == "Buried"
    assert row["error_message"] == (
        "buried by beanstalkd (the dead-letter write failed, or no failure transport)"
    )

    table = project.courier("failed", "list").stdout
    [line] = [line.strip() for line in table.splitlines() if line.strip().startswith(buried_id)]
    assert line.split()[1:5] == ["buried", "email.send", "jobs", "1"]
    assert "Buried: buried by beanstalkd" in line
    assert table.strip().splitlines()[-1] == "1 message (1 buried on the broker)"

    stats = json.loads(project.courier("stats", "jobs", "--json").stdout)
    assert [(row["queue"], row["delayed"], row["dead"]) for row in stats] == [(project.tube, 1, 1)]

    shown = project.courier("failed", "show", buried_id).stdout
    assert f"queue          {project.tube}" in shown
    assert "courier-type: email.send" in shown
    assert LONG in shown

    # The delayed job's id names no buried job: retrying it must not wake it.
    refused = project.courier("failed", "retry", f"buried:jobs:{later}", code=4)
    assert "no failed message with id" in refused.stderr
    assert janitor.job(later)["state"] == "delayed"  # type: ignore[index]

    (tmp_path / "fixed").touch()
    retried = project.courier("failed", "retry", buried_id)
    assert f"kicked {buried_id} (email.send) back to jobs ({project.tube})" in retried.stdout
    assert janitor.counts(project.tube) == {"ready": 1, "reserved": 0, "delayed": 1, "buried": 0}
    assert janitor.job(later)["state"] == "delayed"  # type: ignore[index]
    assert project.listed() == {}

    project.courier("consume", "jobs", "--limit", "1", "--no-progress")
    assert project.ledger() == [f"email {LONG}"]
    assert janitor.counts(project.tube) == {"ready": 0, "reserved": 0, "delayed": 1, "buried": 0}


def test_a_job_another_program_buried_is_shown_and_removed_without_a_failure_store(
    janitor: Any, tmp_path: Path
) -> None:
    project = Project(tmp_path, janitor, store=False)
    job_id = project.bury_foreign(b"\x00 not a courier job")
    buried_id = f"buried:jobs:{job_id}"

    row = project.listed()[buried_id]
    assert (row["type"], row["attempts"]) == ("?", None)
    assert "courier cannot decode it" in row["error_message"]
    shown = project.courier("failed", "show", buried_id).stdout
    assert "payload (text, 19 bytes):\n\\x00 not a courier job\n" in shown  # escaped
    assert "headers:" not in shown  # none invented for foreign bytes

    project.courier("failed", "remove", buried_id)
    assert janitor.job(job_id) is None
    assert project.listed() == {}
    again = project.courier("failed", "remove", buried_id, code=4)
    assert f"no failed message with id {buried_id!r}" in again.stderr


def test_retry_kicks_the_job_named_and_no_other(janitor: Any, tmp_path: Path) -> None:
    """Not ``kick``: that would wake the oldest burial, or, with none, the delayed job."""
    project = Project(tmp_path, janitor)
    later = janitor.put_raw(project.tube, b"wakes in an hour", delay=3600)
    first = project.bury_foreign(b"first")
    second = project.bury_foreign(b"second")

    def states() -> list[str]:
        return [janitor.job(job)["state"] for job in (first, second, later)]  # type: ignore[index]

    moved = project.courier("failed", "retry", f"buried:jobs:{first}", "--to", "jobs", code=2)
    assert "it can only go back to its own queue" in moved.stderr
    assert states() == ["buried", "buried", "delayed"]

    project.courier("failed", "retry", f"buried:jobs:{second}")
    assert states() == ["buried", "ready", "delayed"]

    refused = project.courier("failed", "retry", "--all", code=2)
    assert "refusing to retry 1 message without confirmation" in refused.stderr
    project.courier("failed", "retry", "--all", "--force")
    assert states() == ["ready", "ready", "delayed"]
    nothing = project.courier("failed", "retry", "--all", "--force")
    assert nothing.stdout == "no failed messages match\n"
    assert states() == ["ready", "ready", "delayed"]


def test_list_says_which_broker_it_could_not_ask(tmp_path: Path) -> None:
    """The failure store is still listed; the missing part is on stderr, with exit 5."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    dsn = f"beanstalk://127.0.0.1:{port}?queue=jobs&connect_timeout=1"
    (tmp_path / "courier.toml").write_text(f'[transports]\njobs = "{dsn}"\n')
    (tmp_path / "courier.db").touch()
    result = subprocess.run(
        [sys.executable, "-c", "from courier.cli import main; main()", "failed", "list", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, json.loads(result.stdout)) == (5, [])
    assert result.stderr.startswith(
        f"warning: could not list the buried messages of 'jobs': cannot connect to beanstalkd "
        f"at 127.0.0.1:{port}"
    )
