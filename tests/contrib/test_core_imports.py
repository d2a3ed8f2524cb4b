"""The frameworks are optional: the core, its command line and its test support import none.

Checked in a fresh interpreter, as a user without Django, Flask or FastAPI
runs courier: import the package and every module outside
``courier.contrib`` (the pytest plugin and its fixtures' modules included),
run ``courier`` commands, then look at ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FRAMEWORKS = ["django", "flask", "werkzeug", "fastapi", "starlette"]

PROBE = r"""
import contextlib, importlib, io, json, pathlib, sys

import courier
import courier.contrib  # the package itself names the integrations, imports none

root = pathlib.Path(courier.__file__).parent
for path in sorted(root.rglob("*.py")):
    parts = path.relative_to(root).with_suffix("").parts
    if parts[0] != "contrib":
        importlib.import_module(".".join(("courier", *parts)).removesuffix(".__init__"))

from courier.cli import main

for args in (["--help"], ["setup"], ["debug"], ["stats"], ["consume", "--help"]):
    with contextlib.redirect_stdout(io.StringIO()):
        code = main.main(args=args, standalone_mode=False)
    assert code in (None, 0), (args, code)

frameworks = json.loads(sys.argv[1])
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in frameworks)))
"""


def test_courier_and_its_command_line_import_no_web_framework(tmp_path: Path) -> None:
    (tmp_path / "courier.toml").write_text(
        '[transports]\njobs = "memory://"\n[routing]\n"*" = "jobs"\n'
    )
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(FRAMEWORKS)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == []
