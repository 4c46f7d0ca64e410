"""The public surface: names, layering, and no Any in the composed API."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import typing
from pathlib import Path

import servekit

PACKAGE = Path(servekit.__file__).parent

# Import order, lowest first: a module may import only modules before it.
LAYERS = [
    "_types",
    "abc",
    "_validate",
    "errors",
    "connections",
    "acceptors",
    "handlers",
    "_workers",
    "dispatchers",
    "transports",
    "_loop",
    "server",
    "testing",
    "_api",
    "__init__",
    "_classic",
    "classic",
]


def test_all_is_complete_and_sorted() -> None:
    public = {name for name in dir(servekit) if not name.startswith("_")}
    # (servekit.server names the function; the module of the same name stays importable.)
    modules = {"abc", "acceptors", "connections", "dispatchers", "errors", "handlers", "testing", "transports", "classic"}
    assert set(servekit.__all__) == public - modules
    assert list(servekit.__all__) == sorted(servekit.__all__)


def _fresh(code: str) -> str:
    """Run *code* in a new interpreter; return what it printed."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_classic_imports_only_what_socketserver_would() -> None:
    # A forking server copies the process for every request: what the
    # adapter loads is paid for per request, not only at start-up.
    loaded = _fresh(
        "import sys, servekit.classic\n"
        "print(sorted(m for m in ('attrs', 'attr', 'logging', 'typing_extensions', 'traceback', 'servekit.server')"
        " if m in sys.modules))"
    )
    assert loaded == "[]"


def test_public_names_load_on_first_use() -> None:
    code = (
        "import sys, servekit\n"
        "assert 'servekit.server' not in sys.modules\n"
        "from servekit import server, tcp\n"
        "print(server.__module__, tcp.__module__, 'attrs' in sys.modules)"
    )
    assert _fresh(code) == "servekit.server servekit.transports True"


def test_importing_the_server_module_first_keeps_the_function() -> None:
    # Importing a submodule binds it on its package; servekit.server must
    # stay the function even when the module of that name loads first.
    code = "import servekit.server, servekit\nprint(callable(servekit.server), servekit.Bound.__module__)"
    assert _fresh(code) == "True servekit.server"


def test_unknown_names_raise_attribute_error() -> None:
    assert _fresh("import servekit\ntry:\n    servekit.nope\nexcept AttributeError as e:\n    print(e)") == (
        "module 'servekit' has no attribute 'nope'"
    )


def test_layering() -> None:
    """Imports flow one way; nothing but classic imports _classic/classic."""
    for path in PACKAGE.glob("*.py"):
        name = path.stem
        assert name in LAYERS, f"{name} is missing from LAYERS"
        allowed = set(LAYERS[: LAYERS.index(name)])
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                targets = [node.module.split(".")[0]] if node.module else [alias.name for alias in node.names]
                for target in targets:
                    assert target in allowed, f"{name} imports {target}"


def test_no_any_in_public_signatures() -> None:
    for name in servekit.__all__:
        obj = getattr(servekit, name)
        members = [obj] if callable(obj) else []
        if inspect.isclass(obj):
            members += [m for n, m in vars(obj).items() if not n.startswith("_") and callable(m)]
        for member in members:
            try:
                hints = typing.get_type_hints(member)
            except Exception:  # noqa: BLE001 - aliases and protocols without hints
                continue
            assert "Any" not in repr(hints), f"{name}.{getattr(member, '__name__', '')}: {hints}"


def test_public_names_report_public_modules() -> None:
    """Reprs and type errors name where a type is public, never a private module."""
    for name in servekit.__all__:
        module = getattr(getattr(servekit, name), "__module__", "servekit")
        assert not module.startswith("servekit._"), f"{name}.__module__ == {module!r}"
    assert _fresh("import servekit.classic, servekit.abc\nprint(servekit.abc.Job.__module__)") == "servekit.abc"


def test_type_errors_name_public_modules(tmp_path: Path) -> None:
    """mypy reports a dispatcher's protocol types under servekit.abc, where a user imports them."""
    from mypy import api

    program = tmp_path / "wrong_workers.py"
    program.write_text(
        "from servekit import server, tcp\n"
        "from servekit.abc import WorkerHost\n"
        "class Pool:\n"
        "    def start(self, host: WorkerHost, /) -> int:\n"
        "        return 0\n"
        "server(tcp('127.0.0.1', 0), print, dispatcher=Pool())\n"
        "from servekit import forked\n"
        "reveal_type(forked().start)\n"
    )
    out, err, _ = api.run(["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(program)])
    assert 'expected "Dispatcher"' in out, out
    assert "(servekit.abc.WorkerHost) -> servekit.abc.Workers" in out, out
    assert "servekit._" not in out + err, out
