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
    "_lite",
    "_types",
    "_traits",
    "_socket_writer",
    "abc",
    "_validate",
    "errors",
    "_deadline_io",
    "connections",
    "events",
    "protocols",
    "framing",
    "proxy",
    "_runtime",
    "_runtime.waiter",
    "_runtime.loop",
    "_runtime.workers",
    "_runtime.pool",
    "_runtime.wiring",
    "_runtime.books",
    "_runtime.admission",
    "_runtime.gate",
    "_runtime.children",
    "_runtime.clients",
    "_runtime.pipeline",
    "_runtime.reactor",
    "_runtime.lifecycle",
    "acceptors",
    "handlers",
    "dispatchers",
    "transports",
    "tls",
    "systemd",
    "deadlines",
    "gates",
    "admission",
    "servers",
    "_signals",
    "runner",
    "metrics",
    "_supervisor",
    "_cli",
    "__main__",
    "testing",
    "_api",
    "__init__",
    "_classic",
    "_classic.route",
    "_classic.handlers",
    "_classic.servers",
    "_classic.mixins",
    "classic",
]

#: What the runtime and the classic adapter may import of servekit: nothing that loads attrs or logging.
STDLIB_ONLY = ("_lite", "_types", "_traits", "_socket_writer", "abc", "_validate", "errors", "_deadline_io", "connections", "events", "protocols", "framing", "proxy", "_runtime")


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name below it (a package by its own name)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path) -> set[str]:
    """The servekit modules *name* imports (relative imports, resolved)."""
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    if name == "__init__":
        package = []
    targets = set()
    tree = ast.parse(path.read_text())
    # Imports for the type checker only do not load anything.
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            base = package[: len(package) - (node.level - 1)]
            if node.module:
                targets.add(".".join([*base, *node.module.split(".")]))
            else:
                targets.update(".".join([*base, alias.name]) for alias in node.names)
    return targets


def test_all_is_complete_and_sorted() -> None:
    public = {name for name in dir(servekit) if not name.startswith("_")}
    modules = {"abc", "admission", "events", "gates", "servers", "acceptors", "connections", "dispatchers", "errors", "handlers", "testing", "transports", "deadlines", "classic", "runner", "protocols", "framing", "metrics", "proxy", "systemd", "tls"}
    assert set(servekit.__all__) == public - modules
    assert list(servekit.__all__) == sorted(servekit.__all__)


def _fresh(code: str) -> str:
    """Run *code* in a new interpreter; return what it printed."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


#: What ``import servekit.classic`` loads beyond what ``import socketserver``
#: loads, pinned (bench/README "Import cost" measures the time): servekit's own
#: modules on the classic path, ``gc`` (ForkingMixIn collects the young
#: generation before a fork; a built-in module) and ``__future__`` (every
#: module's postponed annotations).  No typing, re, attrs, logging,
#: typing_extensions, struct or heapq: a forking server copies what is loaded
#: for every request, and each module is start-up time.
CLASSIC_EXTRA = {
    "__future__",
    "gc",
    "servekit",
    "servekit._classic",
    "servekit._classic.handlers",
    "servekit._classic.mixins",
    "servekit._classic.route",
    "servekit._classic.servers",
    "servekit._lite",
    "servekit._runtime",
    "servekit._runtime.loop",
    "servekit._runtime.waiter",
    "servekit._runtime.workers",
    "servekit._socket_writer",
    "servekit._traits",
    "servekit._validate",
    "servekit.classic",
}


def _loads(statement: str) -> set[str]:
    """The modules *statement* adds to a fresh interpreter's ``sys.modules``."""
    code = f"import sys\nbefore = set(sys.modules)\n{statement}\nprint(*sorted(set(sys.modules) - before))"
    return set(_fresh(code).split())


def test_classic_imports_what_socketserver_does_and_its_own_modules() -> None:
    socketserver, classic = _loads("import socketserver"), _loads("import servekit.classic")
    assert socketserver - classic == {"socketserver"}
    assert classic - socketserver == CLASSIC_EXTRA


def test_the_classic_face_runs_without_typing() -> None:
    # Its classes are built, serve and are subscripted where a user's
    # annotation would be, and typing is still not loaded.
    code = (
        "import socket, sys, threading\n"
        "import servekit.classic as ss\n"
        "class Echo(ss.StreamRequestHandler):\n"
        "    def handle(self):\n"
        "        self.wfile.write(self.rfile.readline())\n"
        "with ss.ThreadingTCPServer(('127.0.0.1', 0), Echo) as server:\n"
        "    t = threading.Thread(target=server.serve_forever, args=(0.05,))\n"
        "    t.start()\n"
        "    with socket.socket() as c:\n"  # (create_connection's getaddrinfo would load re)
        "        c.settimeout(10)\n"
        "        c.connect(server.server_address)\n"
        "        c.sendall(b'hi\\n')\n"
        "        answer = c.makefile('rb').readline()\n"
        "    server.shutdown()\n"
        "    t.join(10)\n"
        "from servekit._runtime.workers import ThreadWorkers\n"
        "print(answer, ThreadWorkers[int], 'typing' in sys.modules, 're' in sys.modules)"
    )
    assert _fresh(code) == "b'hi\\n' servekit._runtime.workers.ThreadWorkers[int] False False"


def test_public_names_load_on_first_use() -> None:
    code = (
        "import sys, servekit\n"
        "assert 'servekit.servers' not in sys.modules\n"
        "from servekit import server, tcp\n"
        "print(server.__module__, tcp.__module__, 'attrs' in sys.modules)"
    )
    assert _fresh(code) == "servekit.servers servekit.transports True"


def test_ssl_loads_with_the_first_tls_transport() -> None:
    # ssl is a fifth of the composed face's import time: a server without TLS
    # serves without it, and one with TLS still handshakes (tests/integration/test_tls.py).
    code = (
        "import sys\n"
        "from servekit import server, tcp, threaded\n"
        "with server(tcp('127.0.0.1', 0), lambda conn: None, dispatcher=threaded()).bind():\n"
        "    loaded = 'ssl' in sys.modules, 'servekit.tls' in sys.modules\n"
        "import servekit.tls\n"
        "print(*loaded, 'ssl' in sys.modules)"
    )
    assert _fresh(code) == "False False True"


def test_the_server_module_is_a_module() -> None:
    # servekit.server (the function that makes a Server) lives in servekit.servers,
    # so no import replaces one with the other.
    code = (
        "import servekit.servers as m, servekit, types\n"
        "print(isinstance(m, types.ModuleType), servekit.server is m.server, type(servekit).__name__)"
    )
    assert _fresh(code) == "True True module"


def test_unknown_names_raise_attribute_error() -> None:
    assert _fresh("import servekit\ntry:\n    servekit.nope\nexcept AttributeError as e:\n    print(e)") == (
        "module 'servekit' has no attribute 'nope'"
    )


def test_layering() -> None:
    """Imports flow one way; the runtime and the classic adapter import only stdlib-only modules."""
    modules = _modules()
    assert set(modules) == set(LAYERS), set(modules) ^ set(LAYERS)
    for name, path in modules.items():
        allowed = set(LAYERS[: LAYERS.index(name)])
        for target in _imports(name, path):
            assert target in allowed, f"{name} imports {target}"
            if name.startswith(("_runtime", "_classic", "classic")):
                assert target.startswith(STDLIB_ONLY) or target.startswith("_classic"), f"{name} imports {target}"


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
    code = "import servekit.classic, servekit.abc\nprint(servekit.abc.Workers.__module__, servekit.abc.WorkerHost.__module__)"
    assert _fresh(code) == "servekit.abc servekit.abc"


def test_type_errors_name_public_modules(tmp_path: Path) -> None:
    """mypy reports a dispatcher's protocol types under servekit.abc, where a user imports them."""
    from mypy import api

    program = tmp_path / "wrong_workers.py"
    program.write_text(
        "from servekit import Server, tcp\n"
        "from servekit.abc import WorkerHost\n"
        "class Pool:\n"
        "    def start(self, host: WorkerHost[object], /) -> int:\n"
        "        return 0\n"
        "Server(tcp('127.0.0.1', 0), print, dispatcher=Pool())\n"
        "from servekit import forked\n"
        "reveal_type(forked().start)\n"
    )
    out, err, _ = api.run(["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(program)])
    assert 'expected "Dispatcher"' in out, out
    assert "(servekit.abc.WorkerHost[_ReqT]) -> servekit.abc.Workers[_ReqT]" in out, out
    assert "servekit._" not in out + err, out


def test_the_bound_handle_shows_only_its_documented_members() -> None:
    """The loop's driver, the workers' host and the request's route are not reachable from the handle."""
    from typing import Generic

    from servekit import server, tcp

    with server(tcp("127.0.0.1", 0), print).bind() as bound:
        # (On 3.11 typing.Generic itself adds _is_protocol to every generic class.)
        members = [name for name in dir(bound) if not name.startswith("__") and name not in dir(Generic)]
        assert members == [
            "abort_clients",
            "address",
            "addresses",
            "close",
            "close_clients",
            "closed",
            "connections",
            "drain",
            "draining",
            "fileno",
            "handle_request",
            "host",
            "port",
            "serve_forever",
            "server",
            "shutdown",
            "stats",
        ]
        assert not hasattr(bound, "__dict__")
