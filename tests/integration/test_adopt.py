"""adopt(): serving a listening socket made elsewhere, which stays its maker's."""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from servekit import Address, BindError, Datagram, StreamConnection, server
from servekit.acceptors import DatagramAcceptor
from servekit.transports import (
    AdoptKind,
    AdoptedTransport,
    adopt,
    format_address,
    tcp,
    transport_kind,
    udp,
    unix_datagram,
    unix_stream,
)
from servekit.testing import datagram_exchange, serving, stream_exchange

pytestmark = pytest.mark.unix

TIMEOUT = 10.0

#: The sockets a test makes and hands over: family, type, host (None: a path in short_tmp).
SORTS = {
    "tcp4": (socket.AF_INET, socket.SOCK_STREAM, "127.0.0.1"),
    "tcp6": (socket.AF_INET6, socket.SOCK_STREAM, "::1"),
    "unix_stream": (socket.AF_UNIX, socket.SOCK_STREAM, None),
    "udp4": (socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1"),
    "unix_datagram": (socket.AF_UNIX, socket.SOCK_DGRAM, None),
}

#: (the socket made, the kind it is adopted as).
CASES: list[tuple[str, AdoptKind]] = [
    ("tcp4", "tcp"),
    ("tcp6", "tcp"),
    ("unix_stream", "unix_stream"),
    ("udp4", "udp"),
    ("unix_datagram", "unix_datagram"),
    ("tcp4", "stream"),
    ("unix_stream", "stream"),
    ("udp4", "datagram"),
    ("unix_datagram", "datagram"),
]

LABELS = {"tcp4": "TCP", "tcp6": "TCP", "unix_stream": "Unix stream", "udp4": "UDP", "unix_datagram": "Unix datagram"}


@contextmanager
def made(sort: str, tmp: Path, *, listen: bool = True) -> Iterator[socket.socket]:
    """A socket of *sort*, bound (to port 0 or a path in *tmp*) and, if a stream one, listening."""
    family, type, host = SORTS[sort]
    sock = socket.socket(family, type)
    try:
        try:
            sock.bind(str(tmp / f"{sort}.sock") if host is None else (host, 0))
        except OSError as exc:
            if family != socket.AF_INET6:
                raise
            pytest.skip(f"no IPv6 loopback (::1) on this machine to bind a socket to: {exc}")
        if listen and type == socket.SOCK_STREAM:
            sock.listen()
        yield sock
    finally:
        sock.close()


def upper(request: StreamConnection[Address] | Datagram[Address]) -> None:
    if isinstance(request, StreamConnection):
        request.wfile.write(request.rfile.read().upper())
    else:
        request.reply(request.data.upper())


def exchange(address: Address, type: int, tmp: Path, data: bytes = b"hi") -> bytes:
    if type == socket.SOCK_STREAM:
        return stream_exchange(address, data, timeout=TIMEOUT)
    reply_path = str(tmp / "reply.sock") if isinstance(address, str) else None
    return datagram_exchange(address, data, timeout=TIMEOUT, reply_path=reply_path)


def its_address(sock: socket.socket) -> Address:
    """*sock*'s address as servekit reports it: an IPv6 one as (host, port)."""
    address: Address = sock.getsockname()
    return address[:2] if isinstance(address, tuple) else address


def assert_still_serving(original: socket.socket) -> None:
    """*original* is open and bound where it was; a stream one still listens: the test serves one request itself."""
    assert original.fileno() >= 0
    address = original.getsockname()
    if original.family == socket.AF_UNIX:
        assert Path(address).is_socket(), "the Unix socket file was removed"
    # The server made its duplicate non-blocking, and the flag is shared (see adopt's docstring).
    assert not os.get_blocking(original.fileno())
    original.settimeout(TIMEOUT)
    with socket.socket(original.family, original.type) as client:
        client.settimeout(TIMEOUT)
        if original.type == socket.SOCK_STREAM:
            assert original.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            client.connect(address)
            conn, _ = original.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                client.sendall(b"still")
                assert conn.recv(16) == b"still"
        else:
            client.sendto(b"still", address)
            assert original.recv(16) == b"still"


class TestServing:
    @pytest.mark.parametrize("by", ["socket", "fd"])
    @pytest.mark.parametrize(("sort", "kind"), CASES, ids=[f"{sort}-as-{kind}" for sort, kind in CASES])
    def test_serves_the_socket_and_leaves_it_open(self, sort: str, kind: AdoptKind, by: str, short_tmp: Path) -> None:
        with made(sort, short_tmp) as original:
            fd = original.fileno()
            blocking = os.get_blocking(fd)
            transport = adopt(original if by == "socket" else fd, kind)
            assert transport.fd == fd and os.get_blocking(fd) == blocking, "adopt() did I/O"
            with serving(server(transport, upper).bind(), poll_interval=0.01) as bound:
                assert bound.address == its_address(original)
                name = f"{LABELS[sort]} {format_address(bound.address)} (fd {fd})"
                assert repr(bound).startswith(f"<servekit.Bound {name} ")
                # servekit's own, non-inheritable duplicate
                assert bound.fileno() not in (-1, fd)
                assert not os.get_inheritable(bound.fileno())
                assert exchange(bound.address, original.type, short_tmp) == b"HI"
            assert_still_serving(original)

    @pytest.mark.parametrize(("sort", "kind"), CASES[:5], ids=[kind for _, kind in CASES[:5]])
    def test_one_transport_binds_again_and_again(self, sort: str, kind: AdoptKind, short_tmp: Path) -> None:
        with made(sort, short_tmp) as original:
            transport = adopt(original, kind)
            for n in range(2):
                with serving(server(transport, upper).bind(), poll_interval=0.01) as bound:
                    assert exchange(bound.address, original.type, short_tmp, b"round %d" % n) == b"ROUND %d" % n
            assert_still_serving(original)

    def test_a_datagram_kind_takes_max_packet_size(self, short_tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
        with made("udp4", short_tmp) as original:
            transport = adopt(original, "udp", max_packet_size=4)
            assert transport.max_packet_size == 4
            assert isinstance(transport.acceptor(), DatagramAcceptor)
            with serving(server(transport, upper).bind(), poll_interval=0.01) as bound, socket.socket(
                socket.AF_INET, socket.SOCK_DGRAM
            ) as client:
                client.settimeout(TIMEOUT)
                with caplog.at_level(logging.WARNING, logger="servekit.server"):
                    client.sendto(b"five!", bound.address)  # one byte too many: dropped
                    client.sendto(b"four", bound.address)
                    assert client.recv(64) == b"FOUR"
            assert "longer than max_packet_size=4" in caplog.text


class TestRefused:
    """A socket that does not fit is refused at bind(), naming the fd, the kind and the socket; it is left as it was."""

    def test_a_udp_socket_as_tcp(self, short_tmp: Path) -> None:
        with made("udp4", short_tmp) as original:
            fd = original.fileno()
            with pytest.raises(ValueError) as info:
                server(adopt(original, "tcp"), upper).bind()
            assert str(info.value) == (
                f"cannot adopt fd {fd} as 'tcp': it is a UDP socket (AF_INET, SOCK_DGRAM);"
                " 'tcp' takes AF_INET or AF_INET6 with SOCK_STREAM"
            )
            assert os.get_blocking(fd), "the socket was changed"

    def test_a_tcp_socket_as_unix_stream(self, short_tmp: Path) -> None:
        with made("tcp4", short_tmp) as original:
            fd = original.fileno()
            with pytest.raises(ValueError) as info:
                server(adopt(fd, "unix_stream"), upper).bind()
            assert str(info.value) == (
                f"cannot adopt fd {fd} as 'unix_stream': it is a TCP socket (AF_INET, SOCK_STREAM);"
                " 'unix_stream' takes AF_UNIX with SOCK_STREAM"
            )

    @pytest.mark.parametrize("kind", ["tcp", "stream"])
    def test_a_stream_socket_that_is_not_listening(self, kind: AdoptKind, short_tmp: Path) -> None:
        with made("tcp4", short_tmp, listen=False) as original:
            fd = original.fileno()
            with pytest.raises(ValueError) as info:
                server(adopt(original, kind), upper).bind()
            assert str(info.value) == (
                f"cannot adopt fd {fd} as {kind!r}: it is a TCP socket (AF_INET, SOCK_STREAM)"
                f" at {format_address(original.getsockname())} that is not listening (call listen() on it first)"
            )
            assert not original.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN), "servekit listened on it"

    @pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_UNIX])
    def test_a_datagram_socket_that_is_not_bound(self, family: socket.AddressFamily) -> None:
        with socket.socket(family, socket.SOCK_DGRAM) as original:
            label = "UDP" if family == socket.AF_INET else "Unix datagram"
            with pytest.raises(ValueError) as info:
                server(adopt(original, "datagram"), upper).bind()
            assert str(info.value) == (
                f"cannot adopt fd {original.fileno()} as 'datagram': it is a {label} socket"
                f" ({family.name}, SOCK_DGRAM) that is not bound to an address (bind() it first)"
            )

    def test_a_closed_fd(self, short_tmp: Path) -> None:
        with made("tcp4", short_tmp) as original:
            fd = original.fileno()
            transport = adopt(original, "tcp")  # no I/O yet: only the number is kept
        with pytest.raises(BindError) as info:
            server(transport, upper).bind()
        assert info.value.errno == errno.EBADF
        assert info.value.strerror == f"cannot adopt fd {fd}: Bad file descriptor"

    def test_an_fd_that_is_no_socket(self) -> None:
        reader, writer = os.pipe()
        try:
            with pytest.raises(BindError) as info:
                server(adopt(reader, "stream"), upper).bind()
            assert info.value.errno == errno.ENOTSOCK
            assert info.value.strerror == f"cannot adopt fd {reader}: {os.strerror(errno.ENOTSOCK)}"
        finally:
            os.close(reader)
            os.close(writer)


class TestArguments:
    """Bad arguments are refused when the transport is made, naming the value."""

    @pytest.mark.parametrize(
        ("source", "kind", "options", "error", "message"),
        [
            ("3", "tcp", {}, TypeError, "source must be a file descriptor (an int) or a socket.socket, got str '3'"),
            (True, "tcp", {}, TypeError, "source must be a file descriptor (an int) or a socket.socket, got bool True"),
            (-1, "tcp", {}, ValueError, "source must be a file descriptor >= 0, got -1"),
            (
                3,
                "sctp",
                {},
                ValueError,
                "kind must be one of 'tcp', 'unix_stream', 'stream', 'udp', 'unix_datagram', 'datagram', got 'sctp'",
            ),
            (3, None, {}, TypeError, "kind must be a str, got NoneType None"),
            (
                3,
                "tcp",
                {"max_packet_size": 100},
                ValueError,
                "max_packet_size is for datagram kinds only, got 100 with kind 'tcp'",
            ),
            (3, "udp", {"max_packet_size": 0}, ValueError, "max_packet_size must be between 1 and 65535, got 0"),
            (3, "datagram", {"max_packet_size": 65536}, ValueError, "max_packet_size must be between 1 and 65535, got 65536"),
        ],
    )
    def test_refused(
        self, source: object, kind: object, options: dict[str, object], error: type[Exception], message: str
    ) -> None:
        with pytest.raises(error, match=f"^{re.escape(message)}$"):
            adopt(source, kind, **options)  # type: ignore[call-overload]

    def test_a_closed_socket(self) -> None:
        sock = socket.socket()
        sock.close()
        with pytest.raises(ValueError, match=r"^source socket is closed: <socket.socket \[closed\]"):
            adopt(sock, "tcp")

    def test_a_value_like_the_others(self) -> None:
        assert adopt(3, "tcp") == AdoptedTransport(3, "tcp") == adopt(3, "tcp")
        assert adopt(3, "udp").max_packet_size == 8192 == udp("127.0.0.1", 0).max_packet_size
        assert adopt(3, "unix_stream").max_packet_size is None
        assert repr(adopt(4, "datagram", max_packet_size=512)) == (
            "AdoptedTransport(fd=4, kind='datagram', max_packet_size=512)"
        )


KIND_CASES: list[tuple[object, str | None]] = [
    (tcp("127.0.0.1", 0), "stream"),
    (unix_stream("/tmp/s"), "stream"),
    (udp("127.0.0.1", 0), "datagram"),
    (unix_datagram("/tmp/d"), "datagram"),
    *((adopt(3, kind), "stream") for kind in ("tcp", "unix_stream", "stream")),
    *((adopt(3, kind), "datagram") for kind in ("udp", "unix_datagram", "datagram")),
    (object(), None),  # a transport of the user's own
]


@pytest.mark.parametrize(
    ("transport", "expected"),
    KIND_CASES,
    ids=[f"{type(t).__name__}-{getattr(t, 'kind', '')}-{expected}" for t, expected in KIND_CASES],
)
def test_transport_kind(transport: object, expected: str | None) -> None:
    assert transport_kind(transport) == expected
