"""MkDocs hook: the CLI reference, generated from courier's click commands.

``docs/cli.md`` is written by hand (what the commands are for, examples,
exit codes) and ends with the marker ``<!-- cli-reference -->``. At build
time this hook replaces the marker with every command of
:data:`courier.cli.main`, walked through click itself: the usage line, the
help text, each option with its help and default, and the subcommands of
each group. The reference is what ``courier COMMAND --help`` prints, so it
cannot drift from the code; a page without the marker fails the build
instead of being published without its reference.
"""

from __future__ import annotations

import html
import inspect
import re
from typing import TYPE_CHECKING, Any

import click
from mkdocs.exceptions import PluginError

if TYPE_CHECKING:
    from mkdocs.config.defaults import MkDocsConfig
    from mkdocs.structure.files import Files
    from mkdocs.structure.pages import Page

__all__ = ["MARKER", "PAGE", "on_page_markdown", "render_reference"]

#: The page that carries the reference, relative to ``docs/``.
PAGE = "cli.md"
#: Replaced by the generated reference.
MARKER = "<!-- cli-reference -->"

#: click >= 8.2 marks "no default" with a sentinel; older versions use None.
_UNSET: object = getattr(click.core, "UNSET", None)
#: Characters that would otherwise be read as Markdown inside help text.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|])")


def on_page_markdown(
    markdown: str, /, *, page: Page, config: MkDocsConfig, files: Files
) -> str | None:
    """Put the generated reference where ``cli.md`` has its marker."""
    if page.file.src_uri != PAGE:
        return None
    if markdown.count(MARKER) != 1:
        raise PluginError(f"{PAGE} must contain the marker {MARKER} exactly once")
    from courier.cli import main

    return markdown.replace(MARKER, render_reference(main, "courier"))


def render_reference(command: click.Command, name: str) -> str:
    """Markdown for ``command`` and every command under it, depth first."""
    context = click.Context(command, info_name=name, **command.context_settings)
    return "\n".join(_render(command, context, depth=0)).rstrip() + "\n"


def anchor(context: click.Context) -> str:
    """The heading id of a command's section: ``cli-courier-failed-list``."""
    return "cli-" + re.sub(r"[^a-z0-9]+", "-", context.command_path.lower()).strip("-")


def _render(command: click.Command, context: click.Context, depth: int) -> list[str]:
    level = "#" * min(3 + max(depth - 1, 0), 6)
    lines = [f"{level} `{context.command_path}` {{#{anchor(context)}}}", ""]
    pieces = " ".join(command.collect_usage_pieces(context))
    lines += ["```text", f"{context.command_path} {pieces}".rstrip(), "```", ""]
    lines += _help_paragraphs(command.help)
    lines += _options_table(command, context, root=depth == 0)
    children = _subcommands(command, context) if isinstance(command, click.Group) else []
    if children:
        lines += ["| command | summary |", "|---|---|"]
        for sub_name, sub, sub_context in children:
            summary = _text(sub.get_short_help_str(limit=120))
            lines.append(f"| [`{sub_name}`](#{anchor(sub_context)}) | {summary} |")
        lines.append("")
        for _, sub, sub_context in children:
            lines += _render(sub, sub_context, depth + 1)
    return lines


def _subcommands(
    group: click.Group, context: click.Context
) -> list[tuple[str, click.Command, click.Context]]:
    found = []
    for sub_name in group.list_commands(context):
        sub = group.get_command(context, sub_name)
        if sub is None or sub.hidden:
            continue
        sub_context = click.Context(sub, info_name=sub_name, parent=context, **sub.context_settings)
        found.append((sub_name, sub, sub_context))
    return found


def _help_paragraphs(text: str | None) -> list[str]:
    """click's help text as Markdown paragraphs; ``\\b`` blocks stay as written."""
    if not text:
        return []
    text = inspect.cleandoc(text).split("\f", 1)[0]
    lines: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        if paragraph.startswith("\b"):
            lines += ["```text", paragraph[1:].strip("\n"), "```", ""]
        else:
            lines += [_text(" ".join(paragraph.split())), ""]
    return lines


def _options_table(command: click.Command, context: click.Context, *, root: bool) -> list[str]:
    help_option = command.get_help_option(context)
    rows = []
    for param in command.get_params(context):
        if not isinstance(param, click.Option) or param.hidden:
            continue
        is_help = help_option is not None and param.name == help_option.name
        if is_help and not root:
            continue  # every command has it; the root's table says so once
        record = param.get_help_record(context)
        if record is None:
            continue
        meaning = _text(" ".join(param.help.split())) if param.help else ""
        if is_help:
            meaning += " Every command takes it."
        meaning = f"{meaning} {_notes(param)}"
        declaration = record[0].replace("|", "\\|")
        rows.append(f"| `{declaration}` | {_default(param, context)} | {meaning.strip()} |")
    if not rows:
        return []
    return ["| option | default | meaning |", "|---|---|---|", *rows, ""]


def _notes(param: click.Option) -> str:
    """What ``--help`` adds in brackets, as sentences: range, choices, environment."""
    notes = []
    kind = param.type
    if isinstance(kind, click.IntRange | click.FloatRange) and not param.count:
        notes.append(_describe_range(kind))
    elif isinstance(kind, click.Choice):
        notes.append("one of " + ", ".join(f"`{choice}`" for choice in kind.choices))
    if param.required:
        notes.append("required")
    if param.multiple and "repeatable" not in (param.help or ""):
        notes.append("repeatable")
    envvars = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or ())
    if envvars:
        notes.append("also " + ", ".join(f"`${name}`" for name in envvars))
    return " ".join(f"{note[0].upper()}{note[1:]}." for note in notes if note)


def _describe_range(kind: click.IntRange | click.FloatRange) -> str:
    low, high = kind.min, kind.max
    if low is not None and high is not None:
        return f"{low} to {high}"
    if low is not None:
        return f"more than {low}" if kind.min_open else f"at least {low}"
    if high is not None:
        return f"less than {high}" if kind.max_open else f"at most {high}"
    return ""


def _default(param: click.Option, context: click.Context) -> str:
    if isinstance(param.show_default, str):
        return _text(param.show_default)
    value: Any = param.get_default(context, call=False)
    if value is None or value is _UNSET or value == ():
        return ""
    if callable(value):
        return "computed"
    if param.is_flag and not param.count:
        return "on" if value is True else ""
    if param.count and value == 0:
        return ""
    if isinstance(value, list | tuple):
        value = ", ".join(str(item) for item in value)
    return f"`{value}`"


def _text(text: str) -> str:
    """Plain help text, safe in a Markdown paragraph or table cell."""
    escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))
    if escaped[:1] in {"#", "-", "+", ">"}:
        escaped = "\\" + escaped
    return escaped
