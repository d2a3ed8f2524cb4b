"""What the operator's commands share: safe text, tables, durations, times.

Everything printed here may come from the wire (a type header, an error
message, a payload), so it is printed as plain text, never as rich markup,
and with every control and format character escaped: bytes from a broker
must not be able to move the cursor, recolour the terminal or reverse the
text around them.
"""

from __future__ import annotations

import json
import re
import time
import unicodedata
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from collections.abc import Iterable

    from rich.console import RenderableType

__all__ = [
    "MISSING",
    "Duration",
    "ago",
    "cell",
    "escape",
    "payload_preview",
    "plural",
    "print_block",
    "print_table",
    "say",
    "table",
    "tail",
    "timestamp",
]

#: What a table shows where a broker cannot tell.
MISSING = "-"

#: How wide tables may grow when the output is not a terminal (a pipe, a
#: file, CI): rows stay on one line for grep instead of wrapping at 80.
PIPE_WIDTH = 400

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def escape(text: str, *, multiline: bool = False, limit: int | None = None) -> str:
    """``text`` with control and format characters written as ``\\xNN`` escapes.

    ``multiline`` keeps newlines and tabs (tracebacks, pretty JSON); ``limit``
    cuts the result to that many characters, saying so.
    """
    if limit is not None and len(text) > limit:
        text = text[:limit] + "..."
    if text.isprintable():
        return text
    out: list[str] = []
    for char in text:
        if (
            (multiline and char in "\n\t")
            or char == " "
            or unicodedata.category(char) not in _UNSAFE_CATEGORIES
        ):
            out.append(char)
        else:
            code = ord(char)
            if code < 0x100:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
    return "".join(out)


def cell(value: object, *, limit: int | None = 120) -> Text:
    """One table cell: plain text, escaped; ``-`` for None."""
    if value is None:
        return Text(MISSING, style="dim")
    return Text(escape(str(value), limit=limit))


def table(*columns: str, title: str | None = None, right: Iterable[str] = ()) -> Table:
    """A plain table; columns named in ``right`` (counts) are right-aligned."""
    aligned = set(right)
    result = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for name in columns:
        result.add_column(name, justify="right" if name in aligned else "left", overflow="fold")
    return result


def print_table(console: Console, renderable: RenderableType) -> None:
    """Print a table; unwrapped up to :data:`PIPE_WIDTH` when not on a terminal."""
    if not console.is_terminal and console.width < PIPE_WIDTH:
        console = Console(file=console.file, width=PIPE_WIDTH, color_system=None)
    console.print(renderable, markup=False, emoji=False, highlight=False)


def say(console: Console, text: str | Text, *, style: str | None = None) -> None:
    """Print one line of trusted text, without interpreting ``[markup]`` in it."""
    line = text if isinstance(text, Text) else Text(text, style=style or "")
    console.print(line, markup=False, emoji=False, highlight=False, soft_wrap=True)


def print_block(console: Console, title: str, text: str, *, indent: str = "") -> None:
    """A bold title line, then untrusted multi-line ``text``, escaped."""
    say(console, title, style="bold")
    body = escape(text, multiline=True)
    say(console, indent + body.replace("\n", "\n" + indent) if indent else body)


def tail(text: str, lines: int) -> tuple[str, str]:
    """The last ``lines`` lines of ``text`` (0: all), and a note of what was left out."""
    found = text.rstrip("\n").splitlines()
    if not lines or len(found) <= lines:
        return "", "\n".join(found)
    return f"last {lines} of {len(found)} lines", "\n".join(found[-lines:])


def plural(count: int, noun: str) -> str:
    """``1 message``, ``2 messages``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def timestamp(seconds: float | None) -> str:
    """A Unix time as ``2026-11-22 10:21:55Z`` (UTC, to the second)."""
    if not seconds:
        return MISSING
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def ago(seconds: float | None, now: float | None = None) -> str:
    """How long ago a Unix time was, roughly: ``42s``, ``5m``, ``3h``, ``2d``."""
    if not seconds:
        return MISSING
    elapsed = max(0.0, (now if now is not None else time.time()) - seconds)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if elapsed >= size:
            return f"{int(elapsed // size)}{unit} ago"
    return f"{int(elapsed)}s ago"


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}


if TYPE_CHECKING:
    _ParamType = click.ParamType[float, Any]
else:
    _ParamType = click.ParamType  # generic only in recent click


class Duration(_ParamType):
    """A duration such as ``30s``, ``10m``, ``2h``, ``1d``, ``1h30m``; in seconds."""

    name = "duration"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip().lower()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            return float(text)
        if not text or _DURATION_PART.sub("", text):
            self.fail(f"{str(value)[:40]!r} is not a duration (like 30s, 10m, 2h, 1d)")
        return float(
            sum(float(number) * _UNITS[unit] for number, unit in _DURATION_PART.findall(text))
        )


def payload_preview(body: bytes, limit: int = 4_096) -> tuple[str, str]:
    """How to show untrusted bytes: ``(description, text)``, bounded and escaped.

    JSON is pretty-printed; other UTF-8 text is shown with control characters
    escaped; anything else as a hex dump of its first ``limit`` bytes.
    """
    size = f"{len(body):,} bytes"
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return f"binary, {size}", _hexdump(body, limit)
    try:
        shown = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        kind = f"JSON, {size}"
    except RecursionError:
        # Nested deeper than Python will follow (a hostile body): as it came.
        kind, shown = f"JSON nested too deep to lay out, {size}", text
    except ValueError:
        kind, shown = f"text, {size}", text
    if len(shown) > limit:
        rest = len(shown) - limit
        shown = shown[:limit] + f"\n... ({rest:,} more characters; --max-bytes to see more)"
    return kind, escape(shown, multiline=True)


def _hexdump(body: bytes, limit: int) -> str:
    lines = []
    for offset in range(0, min(len(body), limit), 16):
        chunk = body[offset : offset + 16]
        hexes = " ".join(f"{byte:02x}" for byte in chunk)
        chars = "".join(chr(byte) if 0x20 <= byte < 0x7F else "." for byte in chunk)
        lines.append(f"{offset:08x}  {hexes:<47}  |{chars}|")
    if len(body) > limit:
        lines.append(f"... ({len(body) - limit:,} more bytes; --max-bytes to see more)")
    return "\n".join(lines)
