"""``courier failed list|show|retry|remove`` as an operator uses them.

Failures are put in the store the way a worker puts them there (through
the bus's dead letters), on ``memory://`` and on SQLite; the user's whole
story, from a failing handler to an empty store, runs in-process on memory
and as real processes on SQLite.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from courier.bus import Bus
from courier.dead_letters import InvalidMessage
from courier.envelope import Envelope, ErrorDetails
from courier.errors import UnrecoverableError
from courier.transports.base import Listable

if TYPE_CHECKING:
    from click.testing import Result

    from courier.bus import Bus

COURIER = str(Path(sys.executable).with_name("courier"))
ARCHIVE = {"content-type": "application/json", "courier-type": "email.archive"}


def rows(result: Result) -> dict[str, list[str]]:
    """Table rows of ``failed list``, keyed by message id, split into cells."""
    found = {}
    for line in result.stdout.splitlines():
        cells = [cell for cell in line.strip().split("  ") if cell.strip()]
        if cells and re.fullmatch(r"[A-Za-z0-9_.:\-]{6,}", cells[0].strip()):
            found[cells[0].strip()] = [cell.strip() for cell in cells]
    return found


def waiting(ws: Any, bus: Bus, transport: str, queue: str | None = None) -> list[Envelope]:
    return ws.store(bus, transport).list(queue)


# -- list ---------------------------------------------------------------------


def test_list_shows_failed_and_invalid_messages(workspace: Any) -> None:
    bus = workspace.bus()
    email = workspace.store_failure(bus, workspace.app.SendEmail(to="ada@example.com"))
    invalid = workspace.store_invalid(
        bus, b"\xff\xfe", {**ARCHIVE, "courier-id": "feedbeef01"}, "unknown message type 'x'"
    )
    result = workspace.courier("failed", "list", "--wide")
    assert result.exit_code == 0, result.output
    found = rows(result)
    assert workspace.lines(result.stdout)[1].split() == [
        "id",
        "store",
        "type",
        "transport",
        "attempts",
        "error",
        "failed",
        "at",
    ]
    assert found[email.id][:-1] == [
        email.id,
        "failed",
        "email.send",
        "jobs",
        "3",
        "ConnectionRefusedError: SMTP server refused the connection",
    ]
    assert invalid.startswith("feedbeef01.")  # the id it claimed, and a digest of it
    assert found[invalid][:-1] == [
        invalid,
        "invalid",
        "email.archive",
        "jobs",
        "1",
        "MessageDecodingFailed: unknown message type 'x'",
    ]
    for row in found.values():
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", row[-1])
    assert workspace.lines(result.stdout)[-1] == "2 messages (1 could not be decoded)"


def test_list_as_json(memory_workspace: Any) -> None:
    ws = memory_workspace
    bus = ws.bus()
    email = ws.store_failure(bus, ws.app.SendEmail(to="ada@example.com"), attempt=4)
    result = ws.courier("failed", "list", "--json")
    assert result.exit_code == 0
    [row] = json.loads(result.stdout)
    assert {key: value for key, value in row.items() if key != "failed_at"} == {
        "id": email.id,
        "store": "failed",
        "kind": "failed",
        "type": "email.send",
        "transport": "jobs",
        "queue": "jobs",
        "attempts": 4,
        "error_class": "ConnectionRefusedError",
        "error_message": "SMTP server refused the connection",
        "kept": 1,
    }


def test_list_when_empty(workspace: Any) -> None:
    result = workspace.courier("failed", "list", "--wide")
    assert (result.exit_code, result.stdout) == (0, "no failed messages\n")


def test_list_filters_by_type_error_and_age(memory_workspace: Any) -> None:
    ws = memory_workspace
    bus = ws.bus()
    old = ws.store_failure(bus, ws.app.SendEmail(to="a@example.com"), age=7_200)
    timeout = ws.store_failure(bus, ws.app.SendEmail(to="b@example.com"), TimeoutError("slow"))
    event = ws.store_failure(
        bus,
        ws.app.UserRegistered(user_id=7),
        UnrecoverableError("no such user"),
        transport="events",
        queue="users.welcome",
    )

    def listed(*options: str) -> set[str]:
        result = ws.courier("failed", "list", "--wide", *options)
        assert result.exit_code == 0, result.output
        return set(rows(result))

    assert listed() == {old.id, timeout.id, event.id}
    assert listed("--type", "user.registered") == {event.id}
    assert listed("--type", "email.send") == {old.id, timeout.id}
    assert listed("--error", "TimeoutError") == {timeout.id}
    assert listed("--error", "UnrecoverableError") == {event.id}
    assert listed("--error", "courier.errors.UnrecoverableError") == {event.id}
    assert listed("--error", "TimeoutError", "--error", "ConnectionRefusedError") == {
        old.id,
        timeout.id,
    }
    assert listed("--older-than", "1h") == {old.id}
    assert listed("--newer-than", "10m") == {timeout.id, event.id}
    assert listed("--older-than", "1d") == set()
    none = ws.courier("failed", "list", "--older-than", "1d")
    assert none.stdout == "no failed messages match\n"


def test_list_limit(memory_workspace: Any) -> None:
    ws = memory_workspace
    bus = ws.bus()
    for n in range(3):
        ws.store_failure(bus, ws.app.SendEmail(to=f"{n}@example.com"))
    result = ws.courier("failed", "list", "--wide", "--limit", "2")
    assert len(rows(result)) == 2
    assert ws.lines(result.stdout)[-1] == "3 messages; showing the oldest 2, --limit 0 for all"


def test_list_without_the_app_says_what_it_cannot_decode(memory_workspace: Any) -> None:
    ws = memory_workspace
    bus = ws.bus()
    ws.store_failure(bus, ws.app.SendEmail(to="ada@example.com"))
    ws.configure(app=False)
    result = ws.courier("failed", "list")
    assert result.exit_code == 0
    assert ws.lines(result.stdout) == [
        "no failed messages",
        "note: 1 more stored message could not be decoded by this process; "
        'set app = "module:bus" so courier knows their types',
    ]


def test_a_bad_duration_is_a_usage_error(memory_workspace: Any) -> None:
    result = memory_workspace.courier("failed", "list", "--older-than", "5x")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1] == (
        "error: Invalid value for '--older-than': '5x' is not a duration (like 30s, 10m, 2h, 1d)"
        " (see 'courier failed list --help')"
    )


# -- show ---------------------------------------------------------------------


def test_show_prints_error_details_traceback_and_payload(workspace: Any) -> None:
    bus = workspace.bus()
    email = workspace.store_failure(
        bus, workspace.app.SendEmail(to="ada@example.com", subject="Hi"), attempt=2
    )
    result = workspace.courier("failed", "show", email.id)
    assert result.exit_code == 0, result.output
    out = workspace.lines(result.stdout)
    assert out[:6] == [
        f"id             {email.id}",
        "store          failed",
        "type           email.send",
        "transport      jobs",
        "queue          jobs",
        "attempts       2",
    ]
    assert "error          ConnectionRefusedError" in out
    assert out[out.index("message:") + 1] == "SMTP server refused the connection"
    assert "traceback:" in out
    assert "Traceback (most recent call last):" in out
    start = out.index("payload (JSON, 39 bytes):")
    assert out[start:] == [
        "payload (JSON, 39 bytes):",
        "{",
        '"to": "ada@example.com",',
        '"subject": "Hi"',
        "}",
    ]


def test_show_escapes_untrusted_bytes(memory_workspace: Any) -> None:
    ws = memory_workspace
    bus = ws.bus()
    body = "hello \x1b[2J\u202eworld [bold]x[/bold]".encode()
    text = ws.store_invalid(
        bus,
        body,
        {**ARCHIVE, "courier-id": "textbody01", "x-note": "\x1b]0;owned\x07"},
        "unknown message type 'email.archive'",
    )
    binary = ws.store_invalid(
        bus, b"\x00\xff\x1b[31m" * 3, {"courier-id": "binarybody"}, "no courier-type header"
    )
    result = ws.courier("failed", "show", text, binary)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout
    assert "\u202e" not in result.stdout
    out = ws.lines(result.stdout)
    assert f"payload (text, {len(body)} bytes):" in out
    assert "hello \\x1b[2J\\u202eworld [bold]x[/bold]" in out
    assert "x-note: \\x1b]0;owned\\x07" in out
    assert "payload (binary, 21 bytes):" in out
    assert "00000000  00 ff 1b 5b 33 31 6d 00 ff 1b 5b 33 31 6d 00 ff  |...[31m...[31m..|" in out


def test_show_bounds_the_traceback_and_the_payload(memory_workspace: Any) -> None:
    ws = memory_workspace
    bus = ws.bus()

    def deep(n: int) -> None:
        if n == 0:
            raise ValueError("bottom")
        deep(n - 1)

    try:
        deep(50)
    except ValueError as error:
        raised = error
    email = ws.store_failure(bus, ws.app.SendEmail(to="a" * 200 + "@example.com"), raised)
    result = ws.courier("failed", "show", email.id, "--traceback-lines", "5", "--max-bytes", "40")
    assert result.exit_code == 0, result.output
    out = ws.lines(result.stdout)
    [title] = [line for line in out if line.startswith("traceback")]
    assert title.startswith("traceback (last 5 of ")
    assert title.endswith(" lines; --traceback-lines 0 for all):")
    assert out[out.index(title) + 5] == "ValueError: bottom"
    assert out[-1].startswith("... (")
    assert out[-1].endswith(" more characters; --max-bytes to see more)")


def test_show_accepts_a_unique_id_prefix(memory_workspace: Any) -> None:
    ws = memory_workspace
    bus = ws.bus()
    email = ws.store_failure(bus, ws.app.SendEmail(to="ada@example.com"))
    result = ws.courier("failed", "show", email.id[:8])
    assert result.exit_code == 0
    assert ws.lines(result.stdout)[0] == f"id             {email.id}"


def test_show_an_unknown_id(workspace: Any) -> None:
    result = workspace.courier("failed", "show", "nope-nope")
    assert result.exit_code == 4
    assert result.stderr == (
        "error: no failed message with id 'nope-nope' (see `courier failed list`)\n"
    )


def test_show_says_how_long_a_prefix_must_be(workspace: Any) -> None:
    result = workspace.courier("failed", "show", "abc")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: id 'abc' is too short: give the whole id or a prefix of at least 6 characters "
        "(see `courier failed list`)\n"
    )


# -- retry --------------------------------------------------------------------


def test_retry_sends_back_with_the_same_id_and_attempts_reset(workspace: Any) -> None:
    bus = workspace.bus()
    email = workspace.store_failure(bus, workspace.app.SendEmail(to="ada@example.com"))
    event = workspace.store_failure(
        bus, workspace.app.UserRegistered(user_id=7), transport="events", queue="users.welcome"
    )
    result = workspace.courier("failed", "retry", email.id, event.id)
    assert result.exit_code == 0, result.output
    assert workspace.lines(result.stdout) == [
        f"retried {email.id} (email.send) to jobs",
        f"retried {event.id} (user.registered) to events (users.welcome)",
        "retried 2 messages",
    ]
    [back] = waiting(workspace, bus, "jobs")
    assert (back.id, back.attempt, back.error, back.message) == (email.id, 1, None, email.message)
    [copy] = waiting(workspace, bus, "events", "users.welcome")
    assert (copy.id, copy.attempt, copy.error) == (event.id, 1, None)
    assert waiting(workspace, bus, "failed") == []


def test_retry_to_another_transport(memory_workspace: Any) -> None:
    ws = memory_workspace
    ws.configure(more_transports=f'spare = "{ws.dsn("spare")}"')
    bus = ws.bus()
    email = ws.store_failure(bus, ws.app.SendEmail(to="ada@example.com"))
    result = ws.courier("failed", "retry", email.id, "--to", "spare")
    assert result.exit_code == 0, result.output
    assert ws.lines(result.stdout)[0] == f"retried {email.id} (email.send) to spare"
    assert [e.id for e in waiting(ws, bus, "spare")] == [email.id]
    assert waiting(ws, bus, "jobs") == []


def test_retry_an_invalid_message_once_its_type_is_registered(workspace: Any) -> None:
    bus = workspace.bus()
    invalid = workspace.store_invalid(
        bus,
        b'{"mailbox": "ada"}',
        {**ARCHIVE, "courier-id": "archive0001"},
        "unknown message type 'email.archive'",
    )
    first = workspace.courier("failed", "retry", invalid)
    assert first.exit_code == 6
    assert workspace.lines(first.stdout) == [
        f"still invalid {invalid}: unknown message type 'email.archive'",
        "retried 0 messages; 1 still cannot be decoded and stayed in the store",
    ]
    assert [e.id for e in waiting(workspace, bus, "invalid")] == [invalid]

    workspace.flag("archive-known")
    second = workspace.courier("failed", "retry", invalid)
    assert second.exit_code == 0, second.output
    assert workspace.lines(second.stdout) == [
        f"retried {invalid} (email.archive, decoded) to jobs",
        "retried 1 message",
    ]
    assert waiting(workspace, bus, "invalid") == []
    fresh = workspace.bus()  # knows email.archive now
    [back] = waiting(workspace, fresh, "jobs")
    assert (back.id, back.type, back.attempt) == ("archive0001", "email.archive", 1)


def test_retry_keeps_an_invalid_message_with_its_new_reason(workspace: Any) -> None:
    ws = workspace
    bus = ws.bus()
    invalid = ws.store_invalid(
        bus,
        b'{"box": "ada"}',
        {**ARCHIVE, "courier-id": "archive0002"},
        "unknown message type 'email.archive'",
    )
    ws.flag("archive-known")
    result = ws.courier("failed", "retry", "archive0002")
    assert result.exit_code == 6
    assert ws.lines(result.stdout)[0] == (
        f"still invalid {invalid}: invalid email.archive: mailbox: missing"
    )
    [row] = json.loads(ws.courier("failed", "list", "--json").stdout)
    assert (row["id"], row["error_class"], row["error_message"]) == (
        invalid,
        "courier.errors.ValidationFailed",
        "invalid email.archive: mailbox: missing",
    )


def test_retry_all_asks_for_confirmation(memory_workspace: Any) -> None:
    ws = memory_workspace
    bus = ws.bus()
    for n in range(2):
        ws.store_failure(bus, ws.app.SendEmail(to=f"{n}@example.com"))
    refused = ws.courier("failed", "retry", "--all")
    assert refused.exit_code == 2
    assert refused.stderr == (
        "error: refusing to retry 2 messages without confirmation: standard input is not "
        "a terminal; pass --force\n"
    )
    assert len(waiting(ws, bus, "failed")) == 2
    forced = ws.courier("failed", "retry", "--all", "--force")
    assert forced.exit_code == 0
    assert ws.lines(forced.stdout)[-1] == "retried 2 messages"
    assert waiting(ws, bus, "failed") == []


def test_retry_all_narrowed_by_filters(memory_workspace: Any) -> None:
    ws = memory_workspace
    bus = ws.bus()
    ws.store_failure(bus, ws.app.SendEmail(to="a@example.com"))
    timeout = ws.store_failure(bus, ws.app.SendEmail(to="b@example.com"), TimeoutError("x"))
    result = ws.courier("failed", "retry", "--all", "--error", "TimeoutError", "--force")
    assert result.exit_code == 0
    assert [e.id for e in waiting(ws, bus, "jobs")] == [timeout.id]
    assert len(waiting(ws, bus, "failed")) == 1


def test_remove_all_confirmed_interactively(
    memory_workspace: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = memory_workspace
    bus = ws.bus()
    ws.store_failure(bus, ws.app.SendEmail(to="a@example.com"))
    monkeypatch.setattr("courier.cli.failed.interactive", lambda: True)
    declined = ws.courier("failed", "remove", "--all", input="n\n")
    assert declined.exit_code == 2
    assert declined.stderr.splitlines()[-1] == "error: nothing was done (remove not confirmed)"
    assert len(waiting(ws, bus, "failed")) == 1
    accepted = ws.courier("failed", "remove", "--all", input="y\n")
    assert accepted.exit_code == 0
    assert "Remove 1 message? [y/N]: y" in accepted.stderr
    assert waiting(ws, bus, "failed") == []


def test_retry_from_a_transport_no_longer_configured(memory_workspace: Any) -> None:
    ws = memory_workspace
    bus = ws.bus()
    details = ErrorDetails("ValueError", "x", transport="legacy", queue="legacy")
    envelope = Envelope(ws.app.SendEmail(to="ada@example.com"), error=details)
    bus.transport("failed").send(envelope)
    result = ws.courier("failed", "retry", envelope.id)
    assert result.exit_code == 4
    assert result.stderr == (
        f"error: message {envelope.id} came from transport 'legacy', which is not configured "
        "(configured: events, failed, invalid, jobs); pass --to TRANSPORT\n"
    )
    moved = ws.courier("failed", "retry", envelope.id, "--to", "jobs")
    assert moved.exit_code == 0
    assert [e.id for e in waiting(ws, bus, "jobs")] == [envelope.id]


@pytest.mark.parametrize(
    ("args", "code", "line"),
    [
        (
            ["retry", "nope-nope"],
            4,
            "no failed message with id 'nope-nope' (see `courier failed list`)",
        ),
        (
            ["remove", "nope-nope", "gone-gone"],
            4,
            "no failed message with id 'nope-nope', 'gone-gone' (see `courier failed list`)",
        ),
        (
            ["retry", "x", "--to", "elsewhere"],
            4,
            "unknown transport 'elsewhere' (configured: events, failed, invalid, jobs)",
        ),
        (
            ["retry", "x", "--to", "failed"],
            2,
            "cannot retry into 'failed': it is a dead-letter store",
        ),
        (["retry"], 2, "name the messages to retry (ids from `courier failed list`) or use --all"),
        (["remove", "x", "--all"], 2, "name message ids or use --all, not both"),
        (
            ["remove", "x", "--type", "email.send"],
            2,
            "--type, --error, --older-than and --newer-than narrow --all, not a list of ids",
        ),
    ],
)
def test_bad_input(memory_workspace: Any, args: list[str], code: int, line: str) -> None:
    result = memory_workspace.courier("failed", *args)
    assert (result.exit_code, result.stderr) == (code, f"error: {line}\n")


def test_a_failure_transport_that_cannot_list(memory_workspace: Any) -> None:
    ws = memory_workspace
    ws.configure(extra='failure_transport = "inline"', more_transports='inline = "sync://"')
    result = ws.courier("failed", "list")
    assert result.exit_code == 2
    assert result.stderr == (
        "error: failure_transport: transport 'inline' cannot list its messages, so `courier "
        "failed` could not show them; use sqlite://, memory:// or redis://\n"
    )


def test_an_app_bus_whose_failure_transport_cannot_list(memory_workspace: Any) -> None:
    ws = memory_workspace
    module = f"{ws.module}_nolist"
    (ws.root / f"{module}.py").write_text(
        textwrap.dedent(
            f"""
            from courier import Bus
            bus = Bus(
                transports={{"jobs": "memory://{ws.broker}?queue=jobs", "failed": "sync://"}},
                failure_transport="failed",
            )
            """
        )
    )
    try:
        result = ws.courier("--app", f"{module}:bus", "failed", "list")
    finally:
        sys.modules.pop(module, None)
    assert result.exit_code == 2
    assert result.stderr == (
        "error: failure transport 'failed' cannot list its messages, so `courier failed` "
        "cannot show them; use sqlite://, memory:// or redis:// for it\n"
    )


# -- remove -------------------------------------------------------------------


def test_remove(workspace: Any) -> None:
    bus = workspace.bus()
    first = workspace.store_failure(bus, workspace.app.SendEmail(to="a@example.com"))
    second = workspace.store_failure(bus, workspace.app.SendEmail(to="b@example.com"))
    result = workspace.courier("failed", "remove", first.id)
    assert result.exit_code == 0, result.output
    assert workspace.lines(result.stdout) == [
        f"removed {first.id} (email.send) from failed",
        "removed 1 message",
    ]
    assert [e.id for e in waiting(workspace, bus, "failed")] == [second.id]
    assert waiting(workspace, bus, "jobs") == []


# -- the user's story ---------------------------------------------------------


def test_a_failing_handler_fixed_and_retried(memory_workspace: Any) -> None:
    ws = memory_workspace
    bus = ws.bus()  # holds the memory broker between commands
    ws.flag("smtp-down")
    dispatched = ws.courier("dispatch", "email.send", '{"to": "ada@example.com"}')
    message_id = dispatched.stdout.strip()
    consume = ("consume", "jobs", "--stop-when-empty", "--sleep", "0", "--no-progress")
    assert ws.courier(*consume).exit_code == 0

    listed = ws.courier("failed", "list", "--wide")
    assert rows(listed)[message_id][2:6] == [
        "email.send",
        "jobs",
        "1",
        "ConnectionRefusedError: SMTP server refused the connection",
    ]

    ws.unflag("smtp-down")
    retried = ws.courier("failed", "retry", message_id)
    assert retried.stdout.splitlines()[0] == f"retried {message_id} (email.send) to jobs"
    assert ws.courier(*consume).exit_code == 0
    assert ws.ledger.read_text().splitlines() == [f"send_email {message_id} attempt=1"]
    assert ws.courier("failed", "list").stdout == "no failed messages\n"
    assert waiting(ws, bus, "jobs") == []


APP_V1 = """
from typing import ClassVar
from pathlib import Path
from courier import Bus, Envelope, Message

class SendEmail(Message):
    message_name: ClassVar[str] = "email.send"
    to: str

bus = Bus.from_config()

@bus.handler(SendEmail)
def send_email(message: SendEmail, envelope: Envelope) -> None:
    {body}
"""

BROKEN = 'raise ConnectionRefusedError("SMTP server refused the connection")'
FIXED = (
    'with (Path(__file__).parent / "ledger.txt").open("a") as f: '
    'f.write(f"{envelope.id} {envelope.attempt}\\n")'
)


@pytest.mark.slow
def test_a_failing_handler_fixed_and_retried_by_real_processes(tmp_path: Path) -> None:
    (tmp_path / "mailer.py").write_text(APP_V1.format(body=BROKEN))
    (tmp_path / "courier.toml").write_text(
        'app = "mailer:bus"\n'
        "[transports]\n"
        'email = "sqlite:///courier.db?queue=email&poll_interval=0.01"\n'
        '[routing]\n"email.send" = "email"\n'
        "[retry]\nmax_retries = 0\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("COURIER_")}

    def courier(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [COURIER, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
        )

    consume = ("consume", "email", "--stop-when-empty", "--sleep", "0.05", "--no-progress")
    dispatched = courier("dispatch", "email.send", '{"to": "ada@example.com"}')
    assert dispatched.returncode == 0, dispatched.stderr
    message_id = dispatched.stdout.strip()
    assert courier(*consume).returncode == 0

    listed = courier("failed", "list", "--wide")
    assert listed.returncode == 0, listed.stderr
    [row] = [line.split() for line in listed.stdout.splitlines() if message_id in line]
    assert row[:5] == [message_id, "failed", "email.send", "email", "1"]
    assert "ConnectionRefusedError:" in row

    (tmp_path / "mailer.py").write_text(APP_V1.format(body=FIXED))
    retried = courier("failed", "retry", message_id)
    assert (retried.returncode, retried.stdout.splitlines()) == (
        0,
        [f"retried {message_id} (email.send) to email", "retried 1 message"],
    )
    assert courier(*consume).returncode == 0
    assert (tmp_path / "ledger.txt").read_text().splitlines() == [f"{message_id} 1"]
    emptied = courier("failed", "list")
    assert (emptied.returncode, emptied.stdout) == (0, "no failed messages\n")


def test_show_survives_a_body_nested_thousands_of_levels_deep(workspace: Any) -> None:
    ws = workspace
    bus = ws.bus()
    body = b'{"mailbox": ' * 2_000 + b"1" + b"}" * 2_000
    nested = ws.store_invalid(bus, body, {**ARCHIVE, "courier-id": "deepbody01"}, "too deep")
    result = ws.courier("failed", "show", nested)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    out = ws.lines(result.stdout)
    assert f"payload (JSON nested too deep to lay out, {len(body):,} bytes):" in out
    assert out[-2].startswith('{"mailbox": {"mailbox": ')
    assert out[-1].endswith(" more characters; --max-bytes to see more)")


def in_a_terminal(args: list[str], cwd: Path, columns: int = 80) -> str:
    """What ``args`` print in a terminal ``columns`` wide (a real pseudo-terminal)."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {key: value for key, value in os.environ.items() if key != "COURIER_CONFIG"}
    env.update(TERM="xterm", COLUMNS=str(columns))
    process = subprocess.Popen(args, cwd=cwd, env=env, stdout=follower, stderr=follower)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert process.wait(timeout=30) == 0, b"".join(chunks).decode(errors="replace")
    text = b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_list_fits_80_columns_with_ids_short_enough_to_copy(tmp_path: Path) -> None:
    """What a user sees in a terminal: short ids on one line each, usable as they are."""
    (tmp_path / "courier.toml").write_text("# the embedded defaults: courier.db\n")
    ids = []
    with Bus.from_config(str(tmp_path / "courier.toml")) as bus:
        for n in range(3):
            record = InvalidMessage(
                body=b"{", headers={}, reason=f"bad {n}", transport="default", queue="default"
            )
            envelope = Envelope(record, error=ErrorDetails("ValueError", f"bad {n}"))
            store = bus.transport("invalid")
            assert isinstance(store, Listable)
            store.keep(envelope)
            ids.append(envelope.id)
    listed = in_a_terminal([COURIER, "failed", "list"], tmp_path)
    lines = listed.splitlines()
    assert max(len(line) for line in lines) <= 80, listed
    firsts = {line.split()[0] for line in lines if line.split()}
    short = sorted(identifier[:8] for identifier in ids)
    assert set(short) <= firsts, listed
    assert not any(identifier in listed for identifier in ids)
    shown = in_a_terminal([COURIER, "failed", "show", short[0]], tmp_path)
    assert "bad " in shown
    wide = in_a_terminal([COURIER, "failed", "list", "--wide"], tmp_path, columns=200)
    assert all(identifier in wide for identifier in ids)
