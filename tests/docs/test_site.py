"""The documentation site builds with ``mkdocs build --strict``, offline, with the whole CLI.

``--strict`` turns every warning into a failure: a link to a page or an
anchor that does not exist, a page missing from the nav. The CLI reference
is generated from the click commands by ``docs/hooks/cli_reference.py``;
these tests check that every command and option reaches the page.
"""

from __future__ import annotations

import html
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import click
import pytest

from courier.cli import main

ROOT = Path(__file__).resolve().parents[2]
HOOK = ROOT / "docs" / "hooks" / "cli_reference.py"


def load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cli_reference", HOOK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "--site-dir", target],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr}"
    return target


def commands(command: click.Command, context: click.Context) -> list[click.Context]:
    found = [context]
    if isinstance(command, click.Group):
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            assert sub is not None
            found += commands(sub, click.Context(sub, info_name=name, parent=context))
    return found


def test_the_site_builds_offline(site: Path) -> None:
    for page in ("index.html", "tutorial/index.html", "cli/index.html", "operations/index.html"):
        assert (site / page).is_file(), page
    pages = "".join(path.read_text(encoding="utf-8") for path in site.rglob("*.html"))
    assert "fonts.googleapis.com" not in pages
    assert not (site / "hooks").exists(), "the hook is code, not a page"


def test_every_command_and_option_is_in_the_cli_reference(site: Path) -> None:
    page = html.unescape((site / "cli" / "index.html").read_text(encoding="utf-8"))
    hook = load_hook()
    assert hook.MARKER not in page
    for context in commands(main, click.Context(main, info_name="courier")):
        assert f'id="{hook.anchor(context)}"' in page, context.command_path
        for param in context.command.params:
            for option in getattr(param, "opts", []):
                # Hidden options (a pool's own flag for its processes) are left out, as by --help.
                if isinstance(param, click.Option) and not param.hidden:
                    assert option in page, f"{context.command_path} {option}"


def test_a_cli_page_without_the_marker_fails_the_build() -> None:
    from mkdocs.exceptions import PluginError

    hook = load_hook()
    page = SimpleNamespace(file=SimpleNamespace(src_uri="cli.md"))
    with pytest.raises(PluginError, match="marker"):
        hook.on_page_markdown("# The command line\n", page=page, config=None, files=None)
    other = SimpleNamespace(file=SimpleNamespace(src_uri="index.md"))
    assert hook.on_page_markdown("# Home\n", page=other, config=None, files=None) is None
