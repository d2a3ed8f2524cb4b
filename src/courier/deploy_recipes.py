"""A systemd unit or a supervisord program that runs ``courier consume``.

What matters in both is what courier's shutdown needs:

- stop with SIGTERM, which makes a worker (or a pool, which forwards it)
  finish the message in hand, and wait ``stop_timeout`` seconds for that
  before the manager kills: it should exceed the slowest handler;
- with systemd, ``KillMode=mixed``: SIGTERM to the main process only, so a
  pool's children get the signal once, from the pool (twice would mean
  "stop at once"), while the final SIGKILL still reaches every process;
- restart always: a worker that stops on ``--limit``, ``--time-limit`` or
  ``--memory-limit`` exits 0 and is meant to be replaced;
- the configuration through ``COURIER_CONFIG``, never inline: DSNs carry
  passwords, and a unit file is world-readable and gets pasted into
  tickets. The recipe only ever contains the file's path.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Recipe", "supervisor_program", "systemd_quote", "systemd_unit"]

#: Arguments that need no quoting in a systemd command line or Environment=.
_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


@dataclass(frozen=True, slots=True)
class Recipe:
    """Everything either recipe needs; the CLI fills it from the configuration."""

    #: The unit or program name, e.g. ``courier-worker``.
    name: str
    #: ``[/abs/path/courier, "consume", transports..., options...]``.
    command: Sequence[str]
    #: The transports it consumes, for the description.
    transports: Sequence[str]
    working_directory: Path
    config_file: Path | None = None
    user: str | None = None
    #: Seconds a stopping worker may take to finish the message in hand.
    stop_timeout: float = 30.0
    #: systemd only: seconds between a worker's exit and its restart.
    restart_delay: float = 2.0
    #: supervisord only: this many copies of the program (``numprocs``).
    numprocs: int = 1

    @property
    def description(self) -> str:
        return f"courier worker ({', '.join(self.transports)})"


def systemd_quote(value: str) -> str:
    """One word of a systemd command line: quoted when needed, ``%`` and ``$`` escaped."""
    escaped = value.replace("%", "%%").replace("$", "$$")
    if _PLAIN.fullmatch(value):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_unit(recipe: Recipe) -> str:
    """A ``<name>.service`` file."""
    lines = [
        f"# {recipe.name}.service, written by `courier deploy systemd`.",
        f"# Save as /etc/systemd/system/{recipe.name}.service, then:",
        f"#   systemctl daemon-reload && systemctl enable --now {recipe.name}",
        "[Unit]",
        f"Description={recipe.description}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
    ]
    if recipe.user is not None:
        lines.append(f"User={recipe.user}")
    lines.append(f"WorkingDirectory={systemd_quote(str(recipe.working_directory))}")
    environment = ["PYTHONUNBUFFERED=1"]
    if recipe.config_file is not None:
        environment.insert(0, systemd_quote(f"COURIER_CONFIG={recipe.config_file}"))
    lines += [
        "Environment=" + " ".join(environment),
        "ExecStart=" + " ".join(systemd_quote(arg) for arg in recipe.command),
        "# SIGTERM: finish the message in hand, then exit 0.",
        "KillSignal=SIGTERM",
        "# Only the main process gets SIGTERM (a pool forwards it); SIGKILL reaches all.",
        "KillMode=mixed",
        f"TimeoutStopSec={_seconds(recipe.stop_timeout)}",
        "# Workers exit 0 on --limit/--time-limit/--memory-limit: replace them.",
        "Restart=always",
        f"RestartSec={_seconds(recipe.restart_delay)}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"


def supervisor_program(recipe: Recipe) -> str:
    """A ``[program:<name>]`` section for supervisord."""
    words = [_supervisor_escape(shlex.quote(arg)) for arg in recipe.command]
    if recipe.numprocs > 1:
        # supervisord's own expansion: a stable id per copy, across restarts.
        words += ["--id", "%(host_node_name)s.%(process_num)d"]
    lines = [
        f"; {recipe.name}, written by `courier deploy supervisor`.",
        f"; Save as /etc/supervisor/conf.d/{recipe.name}.conf, then: supervisorctl update",
        f"[program:{recipe.name}]",
        "command=" + " ".join(words),
    ]
    if recipe.numprocs > 1:
        lines += [
            f"numprocs={recipe.numprocs}",
            "process_name=%(program_name)s_%(process_num)02d",
        ]
    lines.append(f"directory={_supervisor_escape(str(recipe.working_directory))}")
    environment = ['PYTHONUNBUFFERED="1"']
    if recipe.config_file is not None:
        environment.insert(0, f"COURIER_CONFIG={_supervisor_value(str(recipe.config_file))}")
    lines.append("environment=" + ",".join(environment))
    if recipe.user is not None:
        lines.append(f"user={recipe.user}")
    lines += [
        "autostart=true",
        "; workers exit 0 on --limit/--time-limit/--memory-limit: replace them.",
        "autorestart=true",
        "; a worker that cannot stay up a second (bad configuration) is retried 3 times.",
        "startsecs=1",
        "; SIGTERM: finish the message in hand, then exit 0.",
        "stopsignal=TERM",
        f"stopwaitsecs={_seconds(recipe.stop_timeout)}",
        "redirect_stderr=true",
    ]
    return "\n".join(lines) + "\n"


def _seconds(value: float) -> str:
    """Whole seconds, rounded up: never less time than asked for."""
    whole = int(value)
    return str(whole if whole == value else whole + 1)


def _supervisor_escape(value: str) -> str:
    """supervisord expands ``%(name)s`` in its values: a literal ``%`` is ``%%``."""
    return value.replace("%", "%%")


def _supervisor_value(value: str) -> str:
    return '"' + _supervisor_escape(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
