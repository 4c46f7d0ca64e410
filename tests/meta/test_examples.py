"""Every example runs, as a user would run it: a subprocess on a free port."""

from __future__ import annotations

import ast
import os
import select
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 30.0


@contextmanager
def started(
    script: str, *args: str, python: Sequence[str] = (sys.executable,), env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """Start an example server; yield it and the port from its first line."""
    proc = subprocess.Popen(
        [*python, "-u", str(EXAMPLES / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        # Bounded: a server that never gets to print its address fails the test
        # instead of hanging it.  (-u: the line comes in one write.)
        ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
        assert ready, f"no address line within {TIMEOUT} s"
        first = proc.stdout.readline()
        assert first.startswith("listening on "), first + (proc.stderr.read() if proc.stderr else "")
        yield proc, int(first.rsplit(":", 1)[1])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=TIMEOUT)


def run(script: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True, timeout=TIMEOUT, check=True
    )
    return done.stdout


@pytest.mark.parametrize(("server", "client"), [("tcp_echo_server.py", "tcp_echo_client.py"), ("udp_server.py", "udp_client.py")])
def test_server_and_client_pair(server: str, client: str) -> None:
    """The server answers the client upper-cased, then stops after --max-requests."""
    with started(server, "--max-requests", "2") as (proc, port):
        for words in (["hello", "world"], ["again"]):
            out = run(client, "--port", str(port), *words)
            assert out.splitlines() == [f"Sent:     {' '.join(words)}", f"Received: {' '.join(words).upper()}"]
        assert proc.wait(TIMEOUT) == 0
        assert proc.stdout is not None
        assert "wrote: b'again'" in proc.stdout.read()


def test_an_example_runs_from_a_checkout_where_servekit_is_not_installed() -> None:
    """``python examples/x.py`` with no ``pip install -e .``: the example finds ../lib itself."""
    import attrs
    import typing_extensions

    # -S: no site-packages and no .pth files, so no installed servekit; only its dependencies.
    deps = {str(Path(module.__file__ or "").resolve().parent) for module in (typing_extensions,)}
    deps.add(str(Path(attrs.__file__).resolve().parent.parent))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sorted(deps))}
    probe = [sys.executable, "-S", "-c", "import importlib.util; print(importlib.util.find_spec('servekit'))"]
    assert subprocess.run(probe, env=env, capture_output=True, text=True, timeout=TIMEOUT).stdout.strip() == "None"
    with started("tcp_echo_server.py", "--max-requests", "1", python=(sys.executable, "-S"), env=env) as (proc, port):
        assert run("tcp_echo_client.py", "--port", str(port), "plain").splitlines()[1] == "Received: PLAIN"
        assert proc.wait(TIMEOUT) == 0


def test_server_stops_on_sigint() -> None:
    """Ctrl-C stops a serving example cleanly (exit status 0)."""
    import signal

    with started("tcp_echo_server.py") as (proc, port):
        run("tcp_echo_client.py", "--port", str(port), "x")  # it is inside serve_forever now
        proc.send_signal(signal.SIGINT)
        assert proc.wait(TIMEOUT) == 0


def test_threaded_example() -> None:
    out = run("threaded_server.py").splitlines()
    assert out[0].startswith("listening on ")
    assert [line.rsplit(": ", 1)[1] for line in out[1:]] == ["Hello World 1", "Hello World 2", "Hello World 3"]
    assert all(line.startswith("Received: servekit-worker-") for line in out[1:])


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.py")), ids=lambda p: p.name)
def test_examples_use_only_public_names(path: Path) -> None:
    """Examples import nothing underscored from servekit."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("servekit"):
            assert not any(part.startswith("_") for part in (node.module or "").split("."))
            assert not [alias.name for alias in node.names if alias.name.startswith("_")]
