"""``courier deploy systemd|supervisor``: recipes a process manager accepts, with no secret in them.

The systemd unit goes through ``systemd-analyze verify`` where the binary
exists (it checks the syntax, the directives and that ExecStart's program
exists); elsewhere, and for supervisord always, the output is read back
with configparser, which is how supervisord reads its own files.
"""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from courier.deploy_recipes import Recipe, systemd_quote, systemd_unit

#: The ``memory_workspace`` fixture's type (test modules cannot import conftest).
Workspace = Any

PASSWORD = "s3cret-Passw0rd"


def read_ini(text: str) -> configparser.RawConfigParser:
    # Raw: supervisord expands %(...)s itself; systemd has no interpolation.
    parser = configparser.RawConfigParser(strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def test_systemd_unit_runs_this_courier_with_the_configuration_by_path(
    memory_workspace: Workspace, tmp_path: Path
) -> None:
    memory_workspace.configure(password=PASSWORD)
    result = memory_workspace.courier(
        "deploy", "systemd", "jobs", "--processes", "4", "--user", "courier", "--stop-timeout", "45"
    )
    assert result.exit_code == 0, result.output
    unit = result.output
    assert PASSWORD not in unit
    assert "memory://" not in unit  # no DSN at all, masked or not

    service = read_ini(unit)["Service"]
    command = shlex.split(service["ExecStart"])
    assert Path(command[0]).is_absolute()
    assert Path(command[0]).exists()
    assert command[1:] == ["consume", "jobs", "--processes", "4"]
    config = memory_workspace.config.resolve()
    assert service["Environment"] == f"COURIER_CONFIG={config} PYTHONUNBUFFERED=1"
    assert service["WorkingDirectory"] == str(Path.cwd())
    assert service["User"] == "courier"
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed"
    assert service["TimeoutStopSec"] == "45"
    assert service["Restart"] == "always"
    assert service["RestartSec"] == "2"

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        return
    path = tmp_path / "courier-worker.service"
    path.write_text(unit.replace("User=courier\n", ""))  # no such user on the test machine
    verified = subprocess.run(
        [analyze, "verify", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    assert verified.returncode == 0, verified.stderr


def test_systemd_analyze_catches_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a relative ExecStart is refused."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    recipe = Recipe("broken", ["courier", "consume", "jobs"], ["jobs"], tmp_path)
    path = tmp_path / "broken.service"
    path.write_text(systemd_unit(recipe))
    verified = subprocess.run(
        [analyze, "verify", str(path)], capture_output=True, text=True, check=False, timeout=60
    )
    assert verified.returncode != 0


def test_default_transports_leave_out_the_failure_stores(memory_workspace: Workspace) -> None:
    result = memory_workspace.courier("deploy", "systemd")
    assert result.exit_code == 0, result.output
    service = read_ini(result.output)["Service"]
    assert shlex.split(service["ExecStart"])[1:] == ["consume", "jobs", "events"]


def test_supervisor_program_with_numprocs(memory_workspace: Workspace) -> None:
    memory_workspace.configure(password=PASSWORD)
    result = memory_workspace.courier(
        "deploy", "supervisor", "jobs", "--numprocs", "3", "--consume-options", "--time-limit 3600"
    )
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    program = read_ini(result.output)["program:courier-worker"]
    command = shlex.split(program["command"])
    assert command[1:] == [
        "consume",
        "jobs",
        "--time-limit",
        "3600",
        "--id",
        "%(host_node_name)s.%(process_num)d",
    ]
    assert program["numprocs"] == "3"
    assert program["process_name"] == "%(program_name)s_%(process_num)02d"
    assert program["environment"] == (
        f'COURIER_CONFIG="{memory_workspace.config.resolve()}",PYTHONUNBUFFERED="1"'
    )
    assert program["stopsignal"] == "TERM"
    assert program["stopwaitsecs"] == "30"
    assert program["autorestart"] == "true"


def test_supervisor_one_pool(memory_workspace: Workspace) -> None:
    result = memory_workspace.courier("deploy", "supervisor", "jobs", "--processes", "4")
    program = read_ini(result.output)["program:courier-worker"]
    assert shlex.split(program["command"])[-2:] == ["--processes", "4"]
    assert "numprocs" not in program


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["systemd", "--numprocs", "2"], "--numprocs is for supervisor"),
        (["supervisor", "--numprocs", "2", "--processes", "2"], "not both"),
        (["systemd", "nowhere"], "unknown transport 'nowhere'"),
    ],
)
def test_refusals(memory_workspace: Workspace, args: list[str], message: str) -> None:
    result = memory_workspace.courier("deploy", *args)
    assert result.exit_code != 0
    assert message in result.output


def test_systemd_quoting_keeps_odd_paths_whole() -> None:
    assert systemd_quote("/srv/my app/courier.toml") == '"/srv/my app/courier.toml"'
    assert systemd_quote("100%") == "100%%"
    assert systemd_quote("$HOME") == '"$$HOME"'
    assert systemd_quote('say "hi"') == '"say \\"hi\\""'
