"""``courier consume``'s pool and metrics options, wired to the command line.

The pool's children run the command the operator typed, rebuilt from what
click parsed: these tests read that command line, and the refusals that
come before anything starts. The pool itself runs in test_pool.py.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

from courier.cli.consume import consume
from courier.cli.context import CliContext
from courier.cli.pool_command import child_command


def test_children_get_every_option_but_the_pool_s_own(tmp_path: Path) -> None:
    config = tmp_path / "courier.toml"
    config.write_text("")
    cli = CliContext(config=None, app="shop.messaging:bus", verbosity=2)
    args = [
        "urgent",
        "email",
        "--subscription",
        "welcome",
        "--subscription",
        "audit",
        "--limit",
        "500",
        "--failure-limit",
        "3",
        "--stop-when-empty",
        "--statsd",
        "stats:8125",
        "--processes",
        "4",
        "--id",
        "mailer",
        "--time-limit",
        "3600",
        "--memory-limit",
        "512",
        "--metrics-port",
        "9100",
        "--no-progress",
        "--config",
        str(config),
    ]
    with consume.make_context("consume", args, obj=cli) as ctx:
        command = child_command(ctx, cli, pool_metrics=True)
    assert command[:3] == [sys.executable, "-m", "courier"]
    assert command[3:] == [
        "--config",
        str(config.resolve()),
        "--app",
        "shop.messaging:bus",
        "-vv",
        "consume",
        "urgent",
        "email",
        "--subscription",
        "welcome",
        "--subscription",
        "audit",
        "--limit",
        "500",
        "--failure-limit",
        "3",
        "--stop-when-empty",
        "--statsd",
        "stats:8125",
        "--no-setup",
        "--no-progress",
        "--pool-metrics",
    ]


def test_defaults_are_not_repeated(tmp_path: Path) -> None:
    cli = CliContext(config=None, app=None, verbosity=0)
    with consume.make_context("consume", ["jobs", "--processes", "2"], obj=cli) as ctx:
        command = child_command(ctx, cli, pool_metrics=False)
    assert command[3:] == ["consume", "jobs", "--no-setup", "--no-progress"]


def test_a_pool_refuses_a_broker_that_lives_in_one_process(memory_workspace: Any) -> None:
    result = memory_workspace.courier("consume", "jobs", "--processes", "2")
    assert result.exit_code == 2
    assert "transport 'jobs' lives in one process's memory" in result.output


def test_a_bad_statsd_address_is_a_usage_error(memory_workspace: Any) -> None:
    result = memory_workspace.courier("consume", "jobs", "--statsd", "stats:port", "--limit", "1")
    assert result.exit_code == 2
    assert "--statsd: 'stats:port' is not host:port" in result.output


def test_a_taken_metrics_port_is_a_usage_error(memory_workspace: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = memory_workspace.courier(
            "consume", "jobs", "--metrics-port", str(port), "--limit", "1"
        )
    assert result.exit_code == 2
    assert f"--metrics-port: cannot listen on 127.0.0.1:{port}" in result.output
