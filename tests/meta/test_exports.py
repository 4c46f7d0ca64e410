"""The public surface: names, layering, and no Any in the composed API."""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path

import servekit

PACKAGE = Path(servekit.__file__).parent

# Import order, lowest first: a module may import only modules before it.
LAYERS = [
    "_types",
    "_validate",
    "errors",
    "connections",
    "acceptors",
    "handlers",
    "dispatchers",
    "transports",
    "_loop",
    "server",
    "testing",
    "__init__",
    "_classic",
    "classic",
]


def test_all_is_complete_and_sorted() -> None:
    public = {name for name in dir(servekit) if not name.startswith("_")}
    # (servekit.server names the function; the module of the same name stays importable.)
    modules = {"acceptors", "connections", "dispatchers", "errors", "handlers", "testing", "transports", "classic"}
    assert set(servekit.__all__) == public - modules
    assert list(servekit.__all__) == sorted(servekit.__all__)


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
