"""The reference page's and PyMOTW's socketserver examples, run on servekit.classic.

The only change to each program is ``import socketserver`` ->
``import servekit.classic as socketserver`` (and a hard-coded port -> 0).
The server of a server/client pair runs in a subprocess whose ``socket``
class announces the port it listens on (the program itself is untouched);
it is stopped the way the page says: Ctrl-C (SIGINT).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest

#: The bound on every wait, as tests/conftest.py's TIMEOUT (importing conftest by
#: name would make mypy see it under two module names).
TIMEOUT = 10.0

EXAMPLES = Path(__file__).with_name("examples")
PORT_LINE = 'HOST, PORT = "localhost", 9999'


def _program(name: str, port: int | None = None) -> str:
    source = (EXAMPLES / name).read_text(encoding="utf-8")
    if "import socketserver\n" in source:
        assert source.count("import socketserver\n") == 1
        source = source.replace("import socketserver\n", "import servekit.classic as socketserver\n")
    if port is not None:
        assert source.count(PORT_LINE) == 1
        source = source.replace(PORT_LINE, f'HOST, PORT = "localhost", {port}')
    return source


def _run(source: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", source, *args], capture_output=True, text=True, timeout=TIMEOUT * 3, check=False
    )


# -- self-contained programs -------------------------------------------------------


def test_reference_threading_mixin_example() -> None:
    proc = _run(_program("ref_threaded_tcp_server.py.txt"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("Server loop running in thread:")
    assert [line.split(": ", 2)[2] for line in lines[1:]] == ["Hello World 1", "Hello World 2", "Hello World 3"]
    assert all(line.startswith("Received: ") for line in lines[1:])


def test_pymotw_echo() -> None:
    proc = _run(_program("pymotw_socketserver_echo.py.txt"))
    assert proc.returncode == 0, proc.stderr
    # The calls PyMOTW shows, in its order (the client's lines interleave).
    server_side = [line for line in proc.stderr.splitlines() if line.startswith(("EchoServer", "EchoRequestHandler"))]
    expected = [
        "EchoServer: __init__",
        "EchoServer: server_activate",
        "EchoServer: waiting for request",
        "EchoServer: Handling requests, press <Ctrl-C> to quit",
        "EchoServer: verify_request(",
        "EchoServer: process_request(",
        "EchoServer: finish_request(",
        "EchoRequestHandler: __init__",
        "EchoRequestHandler: setup",
        "EchoRequestHandler: handle",
        "EchoRequestHandler: recv()->\"b'Hello, world'\"",
        "EchoRequestHandler: finish",
        "EchoServer: close_request(",
    ]
    # The client's shutdown() runs in another thread than the handler: it is
    # logged somewhere after the echo was received, not at a fixed place.
    shutdown = [i for i, line in enumerate(server_side) if line == "EchoServer: shutdown()"]
    assert len(shutdown) == 1, server_side
    assert shutdown[0] > 10, server_side
    del server_side[shutdown[0]]
    assert len(server_side) == len(expected), server_side
    assert all(line.startswith(prefix) for line, prefix in zip(server_side, expected)), server_side
    assert "client: response from server: b'Hello, world'" in proc.stderr


def test_pymotw_echo_simple() -> None:
    proc = _run(_program("pymotw_socketserver_echo_simple.py.txt"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["Sending : b'Hello, world'", "Received: b'Hello, world'"]


def test_pymotw_threaded() -> None:
    proc = _run(_program("pymotw_socketserver_threaded.py.txt"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("Server loop running in thread:")
    assert lines[1] == "Sending : b'Hello, world'"
    assert lines[2].startswith("Received: b'") and lines[2].endswith(": Hello, world'")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_pymotw_forking() -> None:
    proc = _run(_program("pymotw_socketserver_forking.py.txt"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    parent = int(lines[0].rsplit(" ", 1)[1])
    assert lines[1] == "Sending : b'Hello, world'"
    child = int(lines[2].removeprefix("Received: b'").split(":")[0])
    assert child != parent


# -- server/client pairs -----------------------------------------------------------

ANNOUNCE = """
import socket as _socket, sys as _sys
def _announce(sock):
    print("PORT", sock.getsockname()[1], file=_sys.stderr, flush=True)
_listen, _bind = _socket.socket.listen, _socket.socket.bind
def _listening(self, *args):
    _listen(self, *args)
    _announce(self)
def _bound(self, *args):
    _bind(self, *args)
    if self.type == _socket.SOCK_DGRAM:
        _announce(self)
_socket.socket.listen, _socket.socket.bind = _listening, _bound
del _listening, _bound
"""


class _Server:
    """An example server in a subprocess.

    Each pipe has exactly one reader, a thread started here that reads it to
    end-of-file and then closes it: stderr's lines arrive in a queue (the port
    is announced there), stdout is collected whole.  Nothing else reads the
    pipes (no ``communicate()``), and every wait is bounded by ``TIMEOUT``.
    """

    def __init__(self, source: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ANNOUNCE + source],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        self.stdout: list[str] = []
        self.readers = [
            threading.Thread(target=self._read_stderr, args=(self.proc.stderr,), name="example-stderr"),
            threading.Thread(target=self._read_stdout, args=(self.proc.stdout,), name="example-stdout"),
        ]
        for reader in self.readers:
            reader.start()

    def _read_stderr(self, pipe: IO[str]) -> None:
        try:
            for line in pipe:
                self.stderr.append(line)
                self.lines.put(line)
        finally:
            pipe.close()
            self.lines.put(None)

    def _read_stdout(self, pipe: IO[str]) -> None:
        try:
            self.stdout.append(pipe.read())
        finally:
            pipe.close()

    def port(self) -> int:
        line = self.lines.get(timeout=TIMEOUT)
        assert line is not None and line.startswith("PORT "), (line, "".join(self.stderr))
        return int(line.split()[1])

    def _finish(self) -> None:
        """Wait (bounded) for the process to exit and both readers to reach end-of-file."""
        self.proc.wait(timeout=TIMEOUT)
        deadline = time.monotonic() + TIMEOUT
        for reader in self.readers:
            reader.join(max(0.0, deadline - time.monotonic()))
        alive = [reader.name for reader in self.readers if reader.is_alive()]
        assert not alive, f"pipe readers still running after the server exited: {alive}"

    def interrupt(self) -> str:
        """Ctrl-C, as the page says; returns the server's stdout."""
        self.proc.send_signal(signal.SIGINT)
        self._finish()
        return "".join(self.stdout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self._finish()


@pytest.mark.parametrize(
    ("server", "client", "logged"),
    [
        ("ref_tcp_server.py.txt", "ref_tcp_client.py.txt", "Received from 127.0.0.1:"),
        ("ref_tcp_server_stream.py.txt", "ref_tcp_client.py.txt", "127.0.0.1 wrote:"),
        ("ref_udp_server.py.txt", "ref_udp_client.py.txt", "127.0.0.1 wrote:"),
    ],
)
def test_reference_server_and_client(server: str, client: str, logged: str) -> None:
    running = _Server(_program(server, port=0))
    try:
        port = running.port()
        for words in (["hello", "world", "with", "TCP"], ["python", "is", "nice"]):
            proc = _run(_program(client, port=port), *words)
            assert proc.returncode == 0, proc.stderr
            sent = " ".join(words)
            assert proc.stdout.splitlines() == [f"Sent: {sent}", f"Received: {sent.upper()}"]
        output = running.interrupt()
    finally:
        running.kill()
    assert output.splitlines() == [logged, "b'hello world with TCP'", logged, "b'python is nice'"]
