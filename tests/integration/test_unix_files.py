"""A Unix socket file left by a crashed server: replaced on request, never taken from a live one."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from servekit import BindError, server, unix_datagram, unix_stream
from servekit.testing import datagram_exchange, serving, stream_exchange

pytestmark = pytest.mark.unix

TIMEOUT = 10.0

KINDS = {"stream": socket.SOCK_STREAM, "datagram": socket.SOCK_DGRAM}


def crash_leaving(path: Path, kind: str) -> None:
    """A server process binds *path* and is killed: its socket file stays behind."""
    code = (
        "import os, signal, socket, sys\n"
        f"s = socket.socket(socket.AF_UNIX, {int(KINDS[kind])})\n"
        "s.bind(sys.argv[1])\n"
        f"{'s.listen()' if kind == 'stream' else 'pass'}\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], timeout=TIMEOUT, check=False)
    assert done.returncode == -9
    assert path.is_socket()


def exchange(kind: str, path: Path, tmp: Path) -> bytes:
    if kind == "stream":
        return stream_exchange(str(path), b"hi", timeout=TIMEOUT)
    return datagram_exchange(str(path), b"hi", timeout=TIMEOUT, reply_path=str(tmp / "reply.sock"))


def upper(request: object) -> None:
    from servekit import Datagram, StreamConnection

    if isinstance(request, StreamConnection):
        request.wfile.write(request.rfile.read().upper())
    elif isinstance(request, Datagram):
        request.reply(request.data.upper())


@pytest.mark.parametrize("kind", ["stream", "datagram"])
class TestStaleSocketFile:
    def test_blocks_a_restart_by_default(self, kind: str, short_tmp: Path) -> None:
        path = short_tmp / "s.sock"
        crash_leaving(path, kind)
        spec = server(unix_stream(path), upper) if kind == "stream" else server(unix_datagram(path), upper)
        with pytest.raises(BindError) as info:
            spec.bind()
        assert info.value.errno == errno.EADDRINUSE
        assert path.is_socket()

    def test_replaced_when_asked(self, kind: str, short_tmp: Path) -> None:
        path = short_tmp / "s.sock"
        crash_leaving(path, kind)
        spec = (
            server(unix_stream(path, replace_stale=True), upper)
            if kind == "stream"
            else server(unix_datagram(path, replace_stale=True), upper)
        )
        with serving(spec.bind(), poll_interval=0.01):
            assert exchange(kind, path, short_tmp) == b"HI"
        assert not path.exists()  # the new server removed the file it made

    def test_a_live_server_is_never_taken_over(self, kind: str, short_tmp: Path) -> None:
        path = short_tmp / "s.sock"
        live = server(unix_stream(path), upper) if kind == "stream" else server(unix_datagram(path), upper)
        with serving(live.bind(), poll_interval=0.01):
            rival = (
                server(unix_stream(path, replace_stale=True), upper)
                if kind == "stream"
                else server(unix_datagram(path, replace_stale=True), upper)
            )
            with pytest.raises(BindError) as info:
                rival.bind()
            assert info.value.errno == errno.EADDRINUSE
            assert exchange(kind, path, short_tmp) == b"HI"  # still the live one's

    def test_a_file_that_is_not_a_socket_is_never_removed(self, kind: str, short_tmp: Path) -> None:
        path = short_tmp / "s.sock"
        path.write_text("precious")
        spec = (
            server(unix_stream(path, replace_stale=True), upper)
            if kind == "stream"
            else server(unix_datagram(path, replace_stale=True), upper)
        )
        with pytest.raises(BindError):
            spec.bind()
        assert path.read_text() == "precious"


def test_live_listener_with_a_full_backlog_is_not_stale(short_tmp: Path) -> None:
    """A listener that accepts nothing (its backlog full) still counts as alive."""
    path = short_tmp / "s.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as busy:
        busy.bind(str(path))
        busy.listen(0)
        waiting = []
        try:
            for _ in range(8):  # fill the backlog
                client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                client.setblocking(False)
                waiting.append(client)
                try:
                    client.connect(str(path))
                except BlockingIOError:
                    break
            with pytest.raises(BindError) as info:
                server(unix_stream(path, replace_stale=True), upper).bind()
            assert info.value.errno == errno.EADDRINUSE
            assert path.is_socket()
        finally:
            for client in waiting:
                client.close()
