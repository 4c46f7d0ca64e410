"""Request values over socketpairs: lazy files, release, read-only fields, reprs."""

from __future__ import annotations

import socket

import pytest

from servekit import Datagram, SocketWriter, StreamConnection
from servekit.acceptors import DatagramAcceptor, StreamAcceptor

TIMEOUT = 10.0


@pytest.fixture
def pair() -> tuple[socket.socket, socket.socket]:
    server_end, client_end = socket.socketpair()
    client_end.settimeout(TIMEOUT)
    return server_end, client_end


class TestStreamConnection:
    def test_files_are_made_on_first_use_only(self, pair: tuple[socket.socket, socket.socket]) -> None:
        server_end, client_end = pair
        conn = StreamConnection(server_end, "peer")
        assert conn._rfile is None and conn._wfile is None
        assert conn.rfile is conn.rfile
        assert conn.wfile is conn.wfile
        conn.close()
        client_end.close()

    def test_wfile_sends_each_write_at_once(self, pair: tuple[socket.socket, socket.socket]) -> None:
        server_end, client_end = pair
        conn = StreamConnection(server_end, "peer")
        client_end.sendall(b"one\ntwo\n")
        for line in (b"one\n", b"two\n"):
            assert conn.rfile.readline() == line
            assert conn.wfile.write(line.upper()) == 4
            assert client_end.recv(16) == line.upper()  # no flush needed
        conn.close()
        client_end.close()

    def test_close_sends_fin_closes_files_and_is_idempotent(self, pair: tuple[socket.socket, socket.socket]) -> None:
        server_end, client_end = pair
        conn = StreamConnection(server_end, "peer")
        rfile, wfile = conn.rfile, conn.wfile
        conn.close()
        conn.close()
        assert rfile.closed and wfile.closed
        assert conn.socket.fileno() == -1
        assert client_end.recv(16) == b""
        with pytest.raises(ValueError, match="closed"):
            wfile.write(b"late")
        client_end.close()

    def test_fields_are_read_only(self, pair: tuple[socket.socket, socket.socket]) -> None:
        server_end, client_end = pair
        conn = StreamConnection(server_end, ("127.0.0.1", 5))
        with pytest.raises(AttributeError):
            conn.client_address = ("127.0.0.1", 6)  # type: ignore[misc]
        with pytest.raises(AttributeError):
            conn.extra = 1  # type: ignore[attr-defined]
        assert repr(conn) == f"<StreamConnection from ('127.0.0.1', 5) fd={server_end.fileno()}>"
        conn.close()
        client_end.close()

    def test_acceptor_discard_closes_without_shutdown(self, pair: tuple[socket.socket, socket.socket]) -> None:
        """The parent's discard closes only its own copy: a child's duplicate stays usable."""
        server_end, client_end = pair
        duplicate = server_end.dup()
        StreamAcceptor[str]().discard(StreamConnection(server_end, "peer"))
        assert server_end.fileno() == -1
        duplicate.sendall(b"still here")
        assert client_end.recv(16) == b"still here"
        duplicate.close()
        client_end.close()


class TestDatagram:
    def test_reply_goes_to_the_sender(self) -> None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        with a, b:
            b.settimeout(TIMEOUT)
            a.send(b"ping")
            dg = DatagramAcceptor[str](max_packet_size=16).accept(b)
            assert dg.data == b"ping"
            dg.socket.send(b"pong")  # socketpair peers are unnamed: reply on the connected pair
            assert a.recv(16) == b"pong"
            assert repr(dg).startswith("<Datagram of 4 bytes from ")

    def test_fields_are_read_only(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            dg = Datagram(b"x", sock, ("127.0.0.1", 1))
            with pytest.raises(AttributeError):
                dg.data = b"y"  # type: ignore[misc]


def test_socket_writer_is_write_only() -> None:
    a, b = socket.socketpair()
    with a, b:
        writer = SocketWriter(a)
        assert writer.writable() and not writer.readable()
        assert writer.fileno() == a.fileno()
        assert writer.write(memoryview(b"abc")) == 3
        b.settimeout(TIMEOUT)
        assert b.recv(8) == b"abc"
