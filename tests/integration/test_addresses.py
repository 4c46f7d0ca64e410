"""Addresses follow the transport: (host, port) over IPv4 and IPv6, paths over Unix sockets."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import attrs
import pytest

from servekit import Datagram, IPAddress, StreamConnection, server, tcp, udp, unix_stream
from servekit.acceptors import peer_address
from servekit.testing import datagram_exchange, serving, stream_exchange

TIMEOUT = 10.0


needs_ipv6 = pytest.mark.ipv6


def tell_peer(conn: StreamConnection[IPAddress]) -> None:
    host, port = conn.client_address
    conn.wfile.write(f"{host} {port}".encode())


class TestIPv4:
    def test_server_and_peer_are_host_port_pairs(self) -> None:
        seen: list[IPAddress] = []

        def allow(address: tuple[str, int]) -> bool:
            seen.append(address)
            return True

        with serving(server(tcp("127.0.0.1", 0), tell_peer, verify=allow).bind(), poll_interval=0.01) as bound:
            host, port = bound.address
            assert (host, port) == (bound.host, bound.port) == ("127.0.0.1", bound.port)
            with socket.create_connection(bound.address, timeout=TIMEOUT) as client:
                client.shutdown(socket.SHUT_WR)
                answer = client.recv(64).decode()
                assert answer == "127.0.0.1 %d" % client.getsockname()[1]
        assert seen == [("127.0.0.1", int(answer.split()[1]))]


@needs_ipv6
class TestIPv6:
    def test_stream_addresses_unpack_as_host_port(self) -> None:
        with serving(server(tcp("::1", 0), tell_peer).bind(), poll_interval=0.01) as bound:
            assert bound.address == ("::1", bound.port)
            assert bound.host == "::1"
            assert repr(bound).startswith(f"<servekit.Bound TCP [::1]:{bound.port} ")
            with socket.create_connection(bound.address, timeout=TIMEOUT) as client:
                client.shutdown(socket.SHUT_WR)
                assert client.recv(64).decode() == "::1 %d" % client.getsockname()[1]

    def test_datagram_reply_reaches_the_ipv6_sender(self) -> None:
        peers: list[object] = []

        def pong(dg: Datagram[IPAddress]) -> None:
            peers.append(dg.client_address)
            dg.reply(b"pong")

        with serving(server(udp("::1", 0), pong).bind(), poll_interval=0.01) as bound:
            assert datagram_exchange(bound.address, b"ping", timeout=TIMEOUT) == b"pong"
        [peer] = peers
        assert isinstance(peer, tuple) and len(peer) == 2 and peer[0] == "::1"


class TestScopeId:
    def test_scope_travels_in_the_host(self) -> None:
        """A link-local peer's scope id is kept as host%scope, which the socket layer reads back."""
        assert peer_address(("fe80::1", 8080, 0, 1)) == ("fe80::1%1", 8080)
        assert peer_address(("::1", 8080, 0, 0)) == ("::1", 8080)
        reported = peer_address(("fe80::1", 8080, 0, 1))
        assert isinstance(reported, tuple)
        [(_, _, _, _, resolved)] = socket.getaddrinfo(reported[0], reported[1], socket.AF_INET6, socket.SOCK_STREAM)
        assert resolved == ("fe80::1", 8080, 0, 1)

    def test_other_addresses_are_kept(self) -> None:
        assert peer_address(("127.0.0.1", 80)) == ("127.0.0.1", 80)
        assert peer_address("/run/x.sock") == "/run/x.sock"
        assert peer_address(b"\0abstract") == b"\0abstract"
        assert peer_address(None) == ""


@pytest.mark.unix
class TestUnix:
    def test_no_host_or_port(self, short_tmp: Path) -> None:
        path = str(short_tmp / "s.sock")
        with server(unix_stream(path), lambda conn: None).bind() as bound:
            assert bound.address == path
            with pytest.raises(TypeError, match=r"^Unix stream .* is not on an IP address: it has no host or port$"):
                bound.port  # type: ignore[misc]
            with pytest.raises(TypeError, match="no host or port"):
                bound.host  # type: ignore[misc]

    def test_unnamed_stream_peer_is_empty(self, short_tmp: Path) -> None:
        peers: list[object] = []
        path = str(short_tmp / "s.sock")
        with serving(server(unix_stream(path), lambda conn: peers.append(conn.client_address)).bind(), poll_interval=0.01):
            assert stream_exchange(path, b"", timeout=TIMEOUT) == b""
        assert peers == [""]


class TestAsyncHandlers:
    def test_refused_when_described(self) -> None:
        async def handler(conn: StreamConnection) -> None: ...

        with pytest.raises(TypeError, match=r"^handler must be a plain function, got the async function <function"):
            server(tcp("127.0.0.1", 0), handler)

    def test_refused_in_a_variant(self) -> None:
        class Handler:
            async def __call__(self, conn: StreamConnection) -> None: ...

        spec = server(tcp("127.0.0.1", 0), lambda conn: None)
        with pytest.raises(TypeError, match="would never run"):
            attrs.evolve(spec, handler=Handler())

    def test_plain_callables_pass(self) -> None:
        lock = threading.Lock()
        server(tcp("127.0.0.1", 0), lambda conn: lock)
        server(tcp("127.0.0.1", 0), print)
