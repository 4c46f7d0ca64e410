"""Request values over socketpairs: lazy files, release, read-only fields, reprs; the listener each came from."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

from servekit import (
    Acceptor,
    Datagram,
    Deadlines,
    IPAddress,
    Listener,
    SocketWriter,
    StreamConnection,
    Transport,
    server,
    tcp,
    udp,
    unix_datagram,
    unix_stream,
)
from servekit.acceptors import DatagramAcceptor, StreamAcceptor
from servekit.testing import driving, serving, stream_exchange

TIMEOUT = 10.0

R = TypeVar("R")
A = TypeVar("A")


IP_HOSTS = ["127.0.0.1", pytest.param("::1", marks=pytest.mark.ipv6)]


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


@contextmanager
def _listening(transport: Transport[R, A]) -> Iterator[tuple[Listener[A], Acceptor[R]]]:
    """A real listening socket of *transport* (its waits bounded) and the acceptor a server would use on it."""
    listener = transport.listen()
    try:
        listener.socket.settimeout(TIMEOUT)
        yield listener, transport.acceptor()
    finally:
        listener.close()


def _tcp_connections(
    listener: Listener[IPAddress], acceptor: Acceptor[StreamConnection[IPAddress]], n: int
) -> list[StreamConnection[IPAddress]]:
    """*n* connections from clients to *listener*, taken (and closed) by *acceptor*."""
    taken = []
    for _ in range(n):
        with socket.create_connection(listener.address, timeout=TIMEOUT):
            conn = acceptor.accept(listener.socket)
            conn.close()
        taken.append(conn)
    return taken


class TestServerAddress:
    """Each request names the listening socket it was taken from, as the listener reports its address."""

    @pytest.mark.parametrize("host", IP_HOSTS)
    def test_tcp(self, host: str) -> None:
        with _listening(tcp(host, 0)) as (listener, acceptor):
            # The second connection gets what the acceptor learnt on its first accept.
            taken = _tcp_connections(listener, acceptor, 2)
        assert [conn.server_address for conn in taken] == [(host, listener.address[1])] * 2
        assert listener.address == (host, listener.address[1])

    def test_a_served_handler_sees_the_bound_address(self) -> None:
        seen: list[object] = []

        def record(conn: StreamConnection[IPAddress]) -> None:
            seen.append(conn.server_address)

        with serving(server(tcp("127.0.0.1", 0), record).bind(), poll_interval=0.01) as bound:
            assert stream_exchange(bound.address, b"", timeout=TIMEOUT) == b""
            address = bound.address
        assert seen == [address]

    def test_each_listener_has_its_own(self) -> None:
        """Two listeners, an acceptor each: every connection names the one it came in on."""
        with _listening(tcp("127.0.0.1", 0)) as (one, at_one), _listening(tcp("127.0.0.1", 0)) as (two, at_two):
            taken = [*_tcp_connections(one, at_one, 1), *_tcp_connections(two, at_two, 1)]
            taken += _tcp_connections(one, at_one, 1)
        assert one.address != two.address
        assert [conn.server_address for conn in taken] == [one.address, two.address, one.address]

    def test_unix_stream(self, short_tmp: Path) -> None:
        path = str(short_tmp / "stream")
        with _listening(unix_stream(path)) as (listener, acceptor):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(TIMEOUT)
                client.connect(path)
                conn = acceptor.accept(listener.socket)
                conn.close()
        assert conn.server_address == listener.address == path
        assert conn.client_address == ""

    @pytest.mark.parametrize("host", IP_HOSTS)
    def test_udp(self, host: str) -> None:
        with _listening(udp(host, 0)) as (listener, acceptor):
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as client:
                for data in (b"one", b"two"):
                    client.sendto(data, listener.address)
                    dg = acceptor.accept(listener.socket)
                    assert dg.data == data
                    assert dg.server_address == listener.address == (host, listener.address[1])

    def test_unix_datagram(self, short_tmp: Path) -> None:
        path, sender = str(short_tmp / "dgram"), str(short_tmp / "sender")
        with _listening(unix_datagram(path)) as (listener, acceptor):
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
                client.bind(sender)
                client.sendto(b"ping", path)
                dg = acceptor.accept(listener.socket)
        assert dg.server_address == listener.address == path
        assert dg.client_address == sender

    def test_none_when_made_without_a_listener(self, pair: tuple[socket.socket, socket.socket]) -> None:
        server_end, client_end = pair
        with client_end:
            assert Datagram(b"x", server_end, "peer").server_address is None
            assert StreamConnection(server_end, "peer").server_address is None
            conn = StreamConnection(server_end, "peer", deadlines=Deadlines(idle=1.0).clock())
            assert conn.server_address is None
            conn.close()

    def test_driving_makes_connections_without_one(self) -> None:
        seen: list[object] = ["unset"]

        def record(conn: StreamConnection[str]) -> None:
            seen[:] = [conn.server_address]

        with driving(record):
            pass
        assert seen == [None]

    def test_acceptors_make_what_the_constructors_make(self, pair: tuple[socket.socket, socket.socket]) -> None:
        """The acceptors' own way of making a request (no class call: cheaper) sets every field as __init__ does."""
        from servekit.connections import _accepted, _received

        def fields(request: object) -> tuple[type, list[object]]:
            return type(request), [getattr(request, name) for name in getattr(type(request), "__slots__")]

        server_end, client_end = pair
        with server_end, client_end:
            at = "/run/app.sock"
            made = _accepted(server_end, "peer", at)
            assert fields(made) == fields(StreamConnection(server_end, "peer", server_address=at))
            received = _received(b"x", server_end, "peer", at)
            assert fields(received) == fields(Datagram(b"x", server_end, "peer", server_address=at))

    def test_given_and_read_only(self, pair: tuple[socket.socket, socket.socket]) -> None:
        """Passed by keyword (as a stage that re-makes a connection passes it on), kept, never reassigned."""
        server_end, client_end = pair
        with client_end:
            clock = Deadlines(idle=1.0).clock()
            conn = StreamConnection(server_end, "peer", server_address="/run/app.sock", deadlines=clock)
            dg = Datagram(b"x", server_end, "peer", server_address="/run/app.sock")
            assert conn.server_address == dg.server_address == "/run/app.sock"
            with pytest.raises(AttributeError):
                conn.server_address = "/elsewhere"  # type: ignore[misc]
            with pytest.raises(AttributeError):
                dg.server_address = "/elsewhere"  # type: ignore[misc]
            assert repr(conn) == f"<StreamConnection from 'peer' fd={server_end.fileno()}>"
            conn.close()
