"""Configuration that means what it says: found the way git finds its own, paths from its folder.

Run as a user runs it: real processes, real folders, a real home folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

COURIER = str(Path(sys.executable).with_name("courier"))

APP = """
from typing import ClassVar
from pathlib import Path
from courier import Bus, Message

class Resize(Message):
    message_name: ClassVar[str] = "images.resize"
    n: int

bus = Bus.from_config()

@bus.handler(Resize)
def resize(message: Resize) -> None:
    with (Path(__file__).parent / "done.txt").open("a") as done:
        done.write(f"{message.n}\\n")
"""

CONFIG = """
app = "images_app:bus"

[transports]
images = "sqlite:///courier.db?queue=images"

[routing]
"images.resize" = "images"
"""


def run(args: list[str], cwd: Path, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("COURIER_")}
    env.update(extra_env)
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def make_app(home: Path) -> Path:
    app = home / "app"
    (app / "scripts").mkdir(parents=True)
    (app / "images_app.py").write_text(APP)
    (app / "courier.toml").write_text(textwrap.dedent(CONFIG))
    return app


def produce(cwd: Path, count: int) -> subprocess.CompletedProcess[str]:
    script = (
        "import sys; sys.path.insert(0, '..');"
        "from images_app import bus, Resize;"
        f"[bus.dispatch(Resize(n=n)) for n in range({count})]"
    )
    return run([sys.executable, "-c", script], cwd)


def test_a_producer_in_a_subfolder_and_a_worker_elsewhere_share_one_database(
    tmp_path: Path,
) -> None:
    app = make_app(tmp_path)
    # From app/scripts: courier.toml is found in the parent, courier.db is app's.
    produced = produce(app / "scripts", 50)
    assert produced.returncode == 0, produced.stderr
    assert (app / "courier.db").exists()
    assert not (app / "scripts" / "courier.db").exists()
    # From the home folder, as `cd ~ && courier --config ~/app/courier.toml consume images`.
    consumed = run(
        [COURIER, "--config", str(app / "courier.toml"), "consume", "images", "--stop-when-empty"],
        tmp_path,
    )
    assert consumed.returncode == 0, consumed.stderr
    assert "handled 50" in consumed.stdout
    assert sorted(int(n) for n in (app / "done.txt").read_text().split()) == list(range(50))
    assert not (tmp_path / "courier.db").exists()
    # The global options after the command, as users type them.
    again = produce(app / "scripts", 1)
    assert again.returncode == 0, again.stderr
    after = run(
        [COURIER, "consume", "images", "--stop-when-empty", "--config", "app/courier.toml", "-v"],
        tmp_path,
    )
    assert after.returncode == 0, after.stderr
    assert "handled 1" in after.stdout
    assert "worker started" in after.stderr  # -v: INFO logs


def test_debug_says_which_file_it_read(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    assert produce(app / "scripts", 1).returncode == 0
    shown = run([COURIER, "debug"], app / "scripts")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0] == f"configuration: {app / 'courier.toml'}"
    assert f"sqlite:///{app / 'courier.db'}?queue=images" in shown.stdout


def test_without_any_configuration_the_default_says_which_file_it_uses(tmp_path: Path) -> None:
    script = (
        "from typing import ClassVar\n"
        "from courier import Bus, Message\n"
        "class Ping(Message):\n"
        "    message_name: ClassVar[str] = 'ping'\n"
        "bus = Bus.from_config()\n"
        "bus.dispatch(Ping())\n"
        "bus.dispatch(Ping())\n"
    )
    result = run([sys.executable, "-c", script], tmp_path)
    assert result.returncode == 0, result.stderr
    said = [line for line in result.stderr.splitlines() if "embedded default" in line]
    assert said == [
        f"no courier.toml (or pyproject.toml with [tool.courier]) in {tmp_path} or its "
        f"parents: using the embedded default, {tmp_path / 'courier.db'}"
    ]
    assert (tmp_path / "courier.db").exists()


def test_bus_settings_come_from_the_file_too(tmp_path: Path) -> None:
    (tmp_path / "courier.toml").write_text(
        'ack_policy = "nack_on_error"\nvalidate = true\nmax_body = 1000\n'
    )
    script = (
        "from courier import Bus, AckPolicy\n"
        "bus = Bus.from_config()\n"
        "assert bus.ack_policy is AckPolicy.NACK_ON_ERROR\n"
        "assert bus.validate is True\n"
        "assert bus.serializer.max_body == bus.store_serializer.max_body == 1000\n"
        "print('ok')\n"
    )
    result = run([sys.executable, "-c", script], tmp_path)
    assert (result.returncode, result.stdout) == (0, "ok\n"), result.stderr
    (tmp_path / "courier.toml").write_text('ack_policy = "sometimes"\n')
    refused = run([COURIER, "debug"], tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: courier.toml: ack_policy: Input should be ")
