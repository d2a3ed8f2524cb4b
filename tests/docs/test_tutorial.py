"""docs/tutorial.md, run as a reader runs it: every snippet, in order, in one session.

The session starts in ``<tmp>/courier``, a symlink to this repository (the
reader's clone), so ``./scripts/demo`` runs the real demo and ``cd ..``
leads into the temporary folder, where the reader's own app is made.

How a fenced snippet is treated, by its info string:

- ```` ```sh ```` or ```` ```bash ````: run by bash (``set -euo pipefail``)
  in the folder the previous snippet ended in, with the repository's
  ``.venv/bin`` first on ``PATH`` and no ``COURIER_*`` variable of the
  developer's; it must exit 0.
- ```` ```python title="NAME" ````, ```` ```toml title="NAME" ````: a file
  the reader saves, written to NAME in the current folder (Python is
  compiled and TOML parsed first, so a broken file fails at its snippet).
  The shell snippets then run it. Every Python snippet must have a title.
- anything else (```` ```text ````, ```` ```console ````, a bare fence):
  shown, never run. Use it for output and for commands that must not run.

The test changes only what cannot work unchanged on a test machine:

- ``./scripts/build`` is replaced by ``uv build`` of every workspace package
  into a wheel folder of the test's own, which stands in for
  ``/path/to/courier/dist`` (the reader's clone's ``dist/``), so the test
  never writes into the repository's ``dist/``;
- the RabbitMQ DSN ``amqp://guest:guest@127.0.0.1:5672/%2f?queue=email``
  gets the address of ``$COURIER_TEST_AMQP_URL`` (default the local broker)
  and a queue name of its own, deleted afterwards.

The part before the first snippet that names RabbitMQ runs on SQLite alone;
the rest needs RabbitMQ and fails under ``CI=true`` when it is missing.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from courier.testing.services import env, require_tcp
from courier.transports.dsn import Dsn

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"
BIN = ROOT / ".venv" / "bin"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2f"
TUTORIAL_DSN = "amqp://guest:guest@127.0.0.1:5672/%2f?queue=email"
WHEELS_PLACEHOLDER = "/path/to/courier/dist"
BUILD_COMMAND = "./scripts/build"
#: One snippet at most: pip installs from the index on a machine shared with other runs.
SNIPPET_TIMEOUT = 180

FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
TITLE = re.compile(r'\btitle="(?P<title>[^"]+)"')


@dataclass(frozen=True)
class Snippet:
    number: int
    language: str
    title: str | None
    body: str

    @property
    def runs(self) -> bool:
        return self.language in {"sh", "bash"}

    @property
    def is_file(self) -> bool:
        return self.title is not None and self.language in {"python", "toml"}

    def __str__(self) -> str:
        name = f' title="{self.title}"' if self.title else ""
        return f"snippet {self.number} ```{self.language}{name}\n{self.body}```"


def snippets(markdown: str) -> list[Snippet]:
    """Every fenced block, in order; indented fences are refused (they would be missed)."""
    found = []
    for number, match in enumerate(FENCE.finditer(markdown), start=1):
        info = match["info"].strip()
        title = TITLE.search(info)
        language = info.split()[0] if info else ""
        found.append(Snippet(number, language, title["title"] if title else None, match["body"]))
    fences = [line for line in markdown.splitlines() if line.lstrip().startswith("```")]
    assert len(fences) == 2 * len(found), "a fence is indented or unclosed"
    return found


def amqp_address() -> str:
    return env("COURIER_TEST_AMQP_URL", AMQP_URL)


@dataclass
class Session:
    """One reader's terminal: where they are, and what they typed so far."""

    home: Path
    wheels: Path
    queue: str
    pending: list[Snippet]
    cwd: str = ""
    ran: list[Snippet] = field(default_factory=list)

    def __post_init__(self) -> None:
        clone = self.home / "courier"
        clone.symlink_to(ROOT, target_is_directory=True)
        self.cwd = str(clone)
        self.environment = {
            key: value
            for key, value in os.environ.items()
            if not (key.startswith("COURIER_") and not key.startswith("COURIER_TEST_"))
            and key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
        }
        self.environment["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"

    def substitute(self, text: str) -> str:
        amqp = Dsn.parse(amqp_address()).with_options(queue=self.queue).render(reveal=True)
        text = text.replace(TUTORIAL_DSN, amqp)
        return text.replace(WHEELS_PLACEHOLDER, str(self.wheels))

    def run_until(self, stop: int | None = None) -> None:
        """Run the pending snippets up to snippet number ``stop`` (excluded), or all."""
        while self.pending and (stop is None or self.pending[0].number < stop):
            snippet = self.pending.pop(0)
            if snippet.is_file:
                self.write(snippet)
            elif snippet.runs:
                self.shell(snippet)
            else:
                assert snippet.language != "python", f"a Python snippet needs a title: {snippet}"
            self.ran.append(snippet)

    def write(self, snippet: Snippet) -> None:
        assert snippet.title is not None
        body = self.substitute(snippet.body)
        if snippet.language == "python":
            compile(body, snippet.title, "exec")
        else:
            tomllib.loads(body)
        target = Path(self.cwd) / snippet.title
        target.write_text(body, encoding="utf-8")

    def shell(self, snippet: Snippet) -> None:
        body = self.substitute(snippet.body)
        if body.strip() == BUILD_COMMAND:
            uv = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
            body = f"{shlex.quote(uv)} build --all-packages --wheel --quiet --out-dir {self.wheels}"
        state = self.home / ".tutorial-cwd"
        script = "\n".join(
            [
                f"cd -- {shlex.quote(self.cwd)}",
                f"trap 'pwd > {shlex.quote(str(state))}' EXIT",
                "set -euo pipefail",
                body,
            ]
        )
        result = subprocess.run(
            ["bash", "-c", script],
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=SNIPPET_TIMEOUT,
            check=False,
        )
        assert result.returncode == 0, (
            f"{snippet}\nexited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        self.cwd = state.read_text(encoding="utf-8").strip()

    @property
    def shop(self) -> Path:
        return self.home / "shop"


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    home = tmp_path_factory.mktemp("reader")
    queue = f"courier-docs-{uuid.uuid4().hex[:10]}"
    found = snippets(TUTORIAL.read_text(encoding="utf-8"))
    reader = Session(home=home, wheels=home / "wheels", queue=queue, pending=found)
    try:
        yield reader
    finally:
        (home / "courier").unlink()  # the clone itself stays where it is
        if any(TUTORIAL_DSN in snippet.body for snippet in reader.ran):
            delete_queue(queue)


def delete_queue(queue: str) -> None:
    import pika  # type: ignore[import-untyped]

    connection = pika.BlockingConnection(pika.URLParameters(amqp_address()))
    try:
        channel = connection.channel()
        channel.queue_delete(queue)
        channel.queue_delete(f"{queue}.dead")
    finally:
        connection.close()


def first_rabbitmq_snippet(session: Session) -> int:
    return next(s.number for s in session.pending + session.ran if TUTORIAL_DSN in s.body)


def mails(session: Session) -> list[str]:
    return sorted(path.read_text() for path in (session.shop / "outbox").glob("*.txt"))


def reader_runs(session: Session, program: str, *arguments: str) -> str:
    """``program`` from the reader's own environment (installed from the wheels), in the app."""
    result = subprocess.run(
        [str(session.shop / ".venv" / "bin" / program), *arguments],
        cwd=session.shop,
        env=session.environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def test_the_tutorial_has_snippets_the_test_understands() -> None:
    found = snippets(TUTORIAL.read_text(encoding="utf-8"))
    languages = {snippet.language for snippet in found}
    assert languages <= {"sh", "bash", "python", "toml", "text", "console", ""}, languages
    assert all(s.title for s in found if s.language == "python")
    bodies = [snippet.body for snippet in found]
    assert any(body.strip() == BUILD_COMMAND for body in bodies)
    assert any(WHEELS_PLACEHOLDER in body for body in bodies)
    assert sum(TUTORIAL_DSN in body for body in bodies) == 1


@pytest.mark.slow
def test_tutorial_on_sqlite(session: Session) -> None:
    """The demo, courier installed from wheels, the reader's app on SQLite."""
    session.run_until(first_rabbitmq_snippet(session))

    welcomed = mails(session)
    assert len(welcomed) == 2
    assert "Welcome, Ada!" in "".join(welcomed)
    failed = reader_runs(session, "courier", "failed", "list", "--json")
    assert "nobody@shop.invalid" in failed
    where = reader_runs(session, "python", "-c", "import courier; print(courier.__file__)")
    assert Path(where.strip()).is_relative_to(session.shop / ".venv"), (
        f"the reader's app imported courier from {where.strip()}, not from its own environment"
    )


@pytest.mark.slow
@pytest.mark.amqp
def test_tutorial_on_rabbitmq(session: Session) -> None:
    """The one-line switch to RabbitMQ, and the same app again."""
    dsn = Dsn.parse(amqp_address())
    require_tcp("RabbitMQ", dsn.host or "127.0.0.1", dsn.port or 5672)
    session.run_until()

    assert not session.pending
    welcomed = mails(session)
    assert len(welcomed) == 4
    assert "Welcome, Barbara!" in "".join(welcomed)
    assert session.queue in reader_runs(session, "courier", "stats", "--json", "email")
