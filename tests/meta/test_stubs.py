"""The classic stub: stubtest against the runtime, and parity with typeshed's socketserver.pyi."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mypy

ROOT = Path(__file__).resolve().parents[2]
OURS = ROOT / "stubs" / "servekit-stubs" / "classic.pyi"
TYPESHED = Path(mypy.__file__).parent / "typeshed" / "stdlib" / "socketserver.pyi"
ALLOWLIST = ROOT / "stubs" / "stubtest-allowlist.txt"

#: stubtest imports mypy and the runtime; bounded all the same.
STUBTEST_TIMEOUT = 300.0


def _items(body: list[ast.stmt], where: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], str]]:
    """Every declaration, keyed by its class and ``if`` path, as unparsed text."""
    for node in body:
        if isinstance(node, ast.If):
            yield from _items(node.body, (*where, f"if {ast.unparse(node.test)}"))
            yield from _items(node.orelse, (*where, f"if not {ast.unparse(node.test)}"))
        elif isinstance(node, ast.ClassDef):
            bases = ", ".join(ast.unparse(base) for base in [*node.bases, *node.keywords])
            yield where, f"class {node.name}({bases})"
            yield from _items(node.body, (*where, f"class {node.name}"))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            returns = "" if node.returns is None else f" -> {ast.unparse(node.returns)}"
            decorators = "".join(f"@{ast.unparse(d)} " for d in node.decorator_list)
            yield where, f"{decorators}def {node.name}({ast.unparse(node.args)}){returns}"
        elif isinstance(node, ast.AnnAssign):
            yield where, f"{ast.unparse(node.target)}: {ast.unparse(node.annotation)}"
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.Import, ast.ImportFrom)):
            yield where, ast.unparse(node)


def _declarations(path: Path) -> set[tuple[tuple[str, ...], str]]:
    return set(_items(ast.parse(path.read_text(encoding="utf-8")).body, ()))


def test_stub_has_everything_typeshed_has() -> None:
    """Every class, base, attribute and signature of typeshed's stub is in ours, under the same gates."""
    theirs = _declarations(TYPESHED)
    ours = _declarations(OURS)
    missing = sorted(theirs - ours)
    assert not missing, "declarations of typeshed's socketserver.pyi missing from classic.pyi:\n" + "\n".join(
        f"  {' / '.join(where) or '<module>'}: {text}" for where, text in missing
    )
    # The comparison really compared something.
    assert ((), "class ThreadingTCPServer(ThreadingMixIn, TCPServer)") in theirs


def test_partial_stub_package_marker() -> None:
    assert (OURS.parent / "py.typed").read_text(encoding="utf-8").strip() == "partial"


def test_stubtest() -> None:
    """The stub matches the runtime module of this interpreter (``python -m mypy.stubtest``)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            "servekit.classic",
            "--allowlist",
            str(ALLOWLIST),
            # No --mypy-config-file: mypy.ini pins python_version = 3.11, but
            # the stub's version gates must be read as the running interpreter.
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=STUBTEST_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_stub_is_the_one_mypy_uses(tmp_path: Path) -> None:
    """A program using servekit.classic is checked against the stub, not the runtime module."""
    import mypy.api

    probe = tmp_path / "probe.py"
    probe.write_text("import servekit.classic as ss\nreveal_type(ss.ThreadingTCPServer)\n", encoding="utf-8")
    stdout, stderr, status = mypy.api.run(
        ["--config-file", str(ROOT / "mypy.ini"), "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(probe)]
    )
    # The runtime module makes ThreadingTCPServer with types.new_class: only
    # the stub lets mypy see it.
    assert status == 0, stdout + stderr
    assert "-> servekit.classic.ThreadingTCPServer" in stdout, stdout + stderr
