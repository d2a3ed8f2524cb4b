"""Names off the wire never import anything; courier never unpickles."""

from __future__ import annotations

import ast
import builtins
import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

import courier
from courier import InvalidMessage, Message, MessageDecodingFailed
from courier.registry import MessageRegistry
from courier.serializer import Headers, JsonSerializer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from courier import Bus
    from courier.transports.memory import MemoryTransport
    from courier.worker import Worker

PACKAGE = Path(courier.__file__).parent
BANNED = frozenset({"pickle", "marshal", "shelve", "_pickle", "dill", "cloudpickle"})

HOSTILE_NAMES = [
    "os.system",
    "builtins.eval",
    "__main__.Evil",
    "../../x",
    "subprocess.Popen",
    "courier.transports.memory.MemoryTransport",
    "pickle.loads",
    "__import__('os')",
    "a" * 10_000,
]


class Evil(Message):
    """A real class, importable by its qualified name, that must stay unreachable."""

    message_name: ClassVar[str] = "test.security.registered"


@pytest.fixture
def serializer() -> JsonSerializer:
    registry = MessageRegistry()
    registry.register(Evil)
    return JsonSerializer(registry)


def decode_while_watching(
    serializer: JsonSerializer,
    body: bytes,
    headers: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[BaseException | None, list[str]]:
    """Decode with every import recorded and ``importlib.import_module`` refused."""
    calls: list[str] = []
    real_import = builtins.__import__

    def recording_import(module: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(module)
        return real_import(module, *args, **kwargs)

    def refusing_import_module(module: str, package: str | None = None) -> Any:
        calls.append(f"import_module({module!r})")
        raise AssertionError("import_module called")

    raised: BaseException | None = None
    with monkeypatch.context() as patch:
        patch.setattr(importlib, "import_module", refusing_import_module)
        patch.setattr(builtins, "__import__", recording_import)  # last: setattr imports
        try:
            serializer.decode(body, headers)
        except BaseException as error:
            raised = error
    return raised, calls


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=lambda name: name[:24])
def test_hostile_type_names_are_rejected_without_importing(
    serializer: JsonSerializer, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    modules = dict(sys.modules)
    body = b"{}"
    error, imports = decode_while_watching(
        serializer, body, {Headers.TYPE: name, Headers.ID: "x"}, monkeypatch
    )
    assert imports == []
    assert sys.modules == modules
    assert isinstance(error, MessageDecodingFailed)
    assert error.raw == body
    assert "message type" in error.reason
    assert len(error.reason) < 120  # the name is quoted, bounded


def test_the_watch_sees_an_import(
    serializer: JsonSerializer, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Importing(JsonSerializer):
        def decode(self, body: bytes, headers: Any) -> Any:
            import os.path  # noqa: F401

            return importlib.import_module("os")

    error, imports = decode_while_watching(Importing(serializer.registry), b"{}", {}, monkeypatch)
    assert isinstance(error, AssertionError)
    assert imports == ["os.path", "import_module('os')"]


def test_only_registered_names_decode(serializer: JsonSerializer) -> None:
    # Even courier's own classes and this module's are unreachable by path.
    for name in (f"{__name__}.Evil", "courier.dead_letters.InvalidMessage", "courier.Message"):
        with pytest.raises(MessageDecodingFailed, match="unknown message type"):
            serializer.decode(b"{}", {Headers.TYPE: name, Headers.ID: "x"})
    decoded = serializer.decode(b"{}", {Headers.TYPE: "test.security.registered", Headers.ID: "x"})
    assert type(decoded.message) is Evil


def test_hostile_names_in_the_consume_path_import_nothing(
    make_bus: Callable[..., Bus],
    add_memory: Callable[..., MemoryTransport],
    run_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bus = make_bus(failure_transport="failed")
    jobs = add_memory(bus, "jobs")
    failed = add_memory(bus, "failed")
    bus.route(Evil, "jobs")
    bus.add_handler(lambda message: None, Evil)
    for name in HOSTILE_NAMES:
        jobs.send_raw(b'{"cmd": "rm -rf /"}', {Headers.TYPE: name, Headers.ID: "x"})
    modules = set(sys.modules)
    [received] = jobs.receive(max=1)  # warm up the code path once
    jobs.release(received)
    calls: list[str] = []

    def refusing_import_module(module: str, package: str | None = None) -> Any:
        calls.append(module)
        raise AssertionError("import_module called")

    monkeypatch.setattr(importlib, "import_module", refusing_import_module)
    run_worker(bus, ["jobs"])
    assert calls == []
    assert set(sys.modules) == modules
    kept = failed.list()
    assert len(kept) == len(HOSTILE_NAMES)
    assert all(isinstance(envelope.message, InvalidMessage) for envelope in kept)


def courier_sources() -> list[Path]:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert PACKAGE / "serializer.py" in sources
    return sources


def imported_names(tree: ast.AST) -> Iterator[str]:
    """Every module an import statement, ``__import__`` or ``import_module`` names."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            first = node.args[0]
            if called in {"__import__", "import_module"} and isinstance(first, ast.Constant):
                yield str(first.value)


def test_the_scanner_sees_every_kind_of_import() -> None:
    tree = ast.parse(
        "import pickle\nfrom marshal import loads\nimport x.shelve as s\n"
        "__import__('dill')\nimportlib.import_module('cloudpickle')\n"
    )
    assert list(imported_names(tree)) == ["pickle", "marshal", "x.shelve", "dill", "cloudpickle"]


def test_no_courier_module_imports_pickle_marshal_or_shelve() -> None:
    offenders = []
    for path in courier_sources():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name in imported_names(tree):
            if set(name.split(".")) & BANNED:
                offenders.append(f"{path.relative_to(PACKAGE)}: {name}")
    assert offenders == []


def test_no_courier_module_evaluates_code() -> None:
    offenders = []
    for path in courier_sources():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in {"eval", "exec"}
            ):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert offenders == []


#: Imports every courier module in a fresh interpreter, the core before the
#: command line and the framework integrations (courier.contrib imports Django
#: and Flask, which load pickle themselves), and reports what each part loaded
#: and which module asked for a banned one (an audit hook sees every import).
PROBE = r"""
import importlib, json, pathlib, sys

banned = set(json.loads(sys.argv[1]))
requested = []

def hook(event, args):
    if event == "import" and args[0].split(".")[0] in banned:
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__", "").startswith(
            ("importlib", "_frozen_importlib")
        ):
            frame = frame.f_back
        importer = frame.f_globals.get("__name__", "?") if frame is not None else "?"
        requested.append([args[0], importer])

before = set(sys.modules)
sys.addaudithook(hook)
import courier
root = pathlib.Path(courier.__file__).parent
# From the files, not pkgutil.walk_packages, which imports every package it walks.
names = sorted(
    ".".join(("courier", *path.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
    for path in root.rglob("*.py")
)
core = [name for name in names if not name.startswith(("courier.cli", "courier.contrib"))]
for name in core:
    importlib.import_module(name)
after_core = set(sys.modules)
for name in names:
    importlib.import_module(name)
print(json.dumps({
    "core": core,
    "all": names,
    "new_by_core": sorted(after_core - before),
    "new_by_all": sorted(set(sys.modules) - before),
    "requested": requested,
}))
"""


def test_importing_courier_loads_no_pickle() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(sorted(BANNED))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert {"courier.serializer", "courier.worker", "courier.transports.memory"} <= set(
        report["core"]
    )
    # The core (all but the command line and courier.contrib) loads none of them.
    assert [name for name in report["new_by_core"] if name in BANNED] == []
    # Whatever a dependency of the command line may load (rich uses pickle to
    # copy styles), no courier module ever asks for one.
    requested_by_courier = [
        (module, importer) for module, importer in report["requested"]
        if importer.split(".")[0] == "courier"
    ]  # fmt: skip
    assert requested_by_courier == []
    loaded = [name for name in report["new_by_all"] if name in BANNED]
    assert {module for module, _ in report["requested"]} >= set(loaded)
