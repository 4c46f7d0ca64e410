"""Every transport round-trips data under every dispatcher, on real sockets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from servekit import Datagram, Dispatcher, StreamConnection, forked, inline, server, tcp, threaded, udp
from servekit import unix_datagram, unix_stream
from servekit.testing import datagram_exchange, serving, stream_exchange

TIMEOUT = 10.0

DISPATCHERS: dict[str, Dispatcher] = {"inline": inline(), "threaded": threaded(), "forked": forked()}


def shout(conn: StreamConnection) -> None:
    """Answer every line in upper case until the peer half-closes."""
    for line in conn.rfile:
        conn.wfile.write(line.upper())


def pong(dg: Datagram) -> None:
    dg.reply(dg.data.upper())


@pytest.fixture(params=sorted(DISPATCHERS))
def dispatcher(request: pytest.FixtureRequest) -> Dispatcher:
    name: str = request.param
    if name == "forked" and not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    return DISPATCHERS[name]


class TestStreamTransports:
    def test_tcp(self, dispatcher: Dispatcher) -> None:
        """TCP echoes each connection's lines, request after request."""
        with serving(server(tcp("127.0.0.1", 0), shout, dispatcher=dispatcher).bind(), poll_interval=0.01) as bound:
            for i in range(3):
                assert stream_exchange(bound.address, b"a%d\nb\n" % i, timeout=TIMEOUT) == b"A%d\nB\n" % i

    def test_tcp_ipv6(self, dispatcher: Dispatcher) -> None:
        """An IPv6 literal makes an IPv6 listener."""
        try:
            bound = server(tcp("::1", 0), shout, dispatcher=dispatcher).bind()
        except OSError as exc:
            pytest.skip(f"no IPv6 loopback here: {exc}")
        with serving(bound, poll_interval=0.01):
            assert stream_exchange(bound.address, b"six\n", timeout=TIMEOUT) == b"SIX\n"

    def test_unix_stream(self, dispatcher: Dispatcher, short_tmp: Path) -> None:
        """A Unix stream socket echoes too, and reports its path as the address."""
        path = str(short_tmp / "s")
        with serving(server(unix_stream(path), shout, dispatcher=dispatcher).bind(), poll_interval=0.01) as bound:
            assert bound.address == path
            for i in range(3):
                assert stream_exchange(path, b"u%d\n" % i, timeout=TIMEOUT) == b"U%d\n" % i


class TestDatagramTransports:
    def test_udp(self, dispatcher: Dispatcher) -> None:
        """UDP answers each datagram once."""
        with serving(server(udp("127.0.0.1", 0), pong, dispatcher=dispatcher).bind(), poll_interval=0.01) as bound:
            for i in range(3):
                assert datagram_exchange(bound.address, b"p%d" % i, timeout=TIMEOUT) == b"P%d" % i

    def test_unix_datagram(self, dispatcher: Dispatcher, short_tmp: Path) -> None:
        """A Unix datagram socket answers a client bound to its own path."""
        path = str(short_tmp / "d")
        with serving(server(unix_datagram(path), pong, dispatcher=dispatcher).bind(), poll_interval=0.01) as bound:
            for i in range(3):
                reply = datagram_exchange(bound.address, b"q%d" % i, timeout=TIMEOUT, reply_path=str(short_tmp / "c"))
                assert reply == b"Q%d" % i
