"""``courier debug``: routing, handlers, transports (masked), middleware, dead letters."""

from __future__ import annotations

from typing import Any

from courier.config import anchored

MIDDLEWARE = [
    "Consume middleware (outermost first):",
    "1. LoggingMiddleware (courier.middleware.logging)",
    "2. AcknowledgeMiddleware (courier.middleware.acknowledge)",
    "3. MaxDeliveriesMiddleware (courier.middleware.max_deliveries)",
    "4. RetryMiddleware (courier.middleware.retry)",
    "Dispatch middleware (outermost first):",
    "none",
    "",
    "failure transport: failed",
    "invalid-message transport: invalid",
]


def cells(output: str) -> list[list[str]]:
    """Every non-blank line, split into cells on runs of two or more spaces."""
    return [
        [cell.strip() for cell in line.strip().split("  ") if cell.strip()]
        for line in output.splitlines()
        if line.strip()
    ]


def test_debug_shows_routing_handlers_transports_and_middleware(workspace: Any) -> None:
    result = workspace.courier("debug")
    assert result.exit_code == 0, result.output
    found = cells(result.stdout)
    handler = f"{workspace.module}.make_bus.<locals>"
    expected = [
        ["Routing"],
        ["message type", "kind", "transport", "destination", "subscriptions"],
        ["email.send", "command", "jobs", "queue jobs", "-"],
        ["user.registered", "event", "events", "topic users", "welcome"],
        ["Handlers"],
        ["email.send", f"{handler}.send_email", "-", "jobs"],
        ["user.registered", f"{handler}.welcome", "welcome", "users.welcome"],
        ["Transports"],
    ]
    for row in expected:
        assert row in found, row
    transports = {row[0]: row for row in found[found.index(["Transports"]) + 3 :][:4]}
    assert sorted(transports) == ["events", "failed", "invalid", "jobs"]
    # A relative SQLite path means the configuration file's folder: shown resolved.
    shown = str(anchored(workspace.dsn("jobs"), workspace.root))
    assert transports["jobs"][:3] == ["jobs", shown, "jobs"]
    assert transports["jobs"][-1] == "-"
    assert transports["failed"][-1] == "failure store"
    assert transports["invalid"][-1] == "invalid-message store"
    assert "listable" in transports["failed"][3].split(", ")
    lines = workspace.lines(result.stdout)
    assert lines[-len(MIDDLEWARE) - 1 : -1] == MIDDLEWARE
    # Which file was read, and where deaths are counted: next to it.
    assert lines[0] == f"configuration: {workspace.root / 'courier.toml'}"
    assert lines[-1] == f"status store: sqlite:///{workspace.root / 'courier.db'}"


def test_passwords_never_print(memory_workspace: Any) -> None:
    ws = memory_workspace
    ws.configure(password="s3cret-pass")
    bus = ws.bus()
    ws.store_failure(bus, ws.app.SendEmail(to="ada@example.com"))
    masked = f"memory://operator:***@{ws.broker}?queue=jobs&serialize=true"
    debug = ws.courier("debug")
    assert masked in debug.stdout
    for args in (["debug"], ["stats"], ["setup"], ["failed", "list"], ["-vv", "stats"]):
        result = ws.courier(*args)
        assert result.exit_code == 0, result.output
        assert "s3cret" not in result.output, args


def test_debug_without_an_app(memory_workspace: Any) -> None:
    ws = memory_workspace
    ws.configure(app=False)
    result = ws.courier("debug")
    assert result.exit_code == 0, result.output
    found = cells(result.stdout)
    assert ["email.send", "command (class not imported)", "jobs", "queue jobs", "-"] in found
    assert ["user.registered", "event (class not imported)", "events", "topic users", "-"] in (
        found
    )
    assert ['Handlers: none (no app is configured: set app = "module:bus" to see them)'] in found


def test_names_are_printed_as_text_never_as_markup(memory_workspace: Any) -> None:
    ws = memory_workspace
    ws.configure(
        more_transports=f'odd = "memory://{ws.broker}?queue=%5Bred%5Dx%5B%2Fred%5D"',
        extra="",
    )
    result = ws.courier("debug")
    assert result.exit_code == 0, result.output
    assert "[red]x[/red]" in result.stdout


def test_commands_that_only_look_never_create_a_database(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    courier = str(Path(sys.executable).with_name("courier"))
    env = {key: value for key, value in os.environ.items() if not key.startswith("COURIER_")}
    home = tmp_path / "home"
    app = home / "app"
    app.mkdir(parents=True)
    (app / "courier.toml").write_text(
        '[transports]\nimages = "sqlite:///courier.db?queue=images"\n'
    )
    for args in (["stats"], ["failed", "list"], ["failed", "show", "abcdefgh"], ["debug"]):
        result = subprocess.run(
            [courier, "--config", str(app / "courier.toml"), *args],
            cwd=home,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if args == ["debug"]:
            assert result.returncode == 0, result.stderr
        else:
            assert result.returncode == 4, (args, result.stdout, result.stderr)
            assert result.stderr == f"error: no courier.db here (looked in {app})\n"
    assert list(home.rglob("*.db")) == []
