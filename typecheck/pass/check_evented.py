"""Positive type cases for the reactor's handlers: must type-check cleanly under mypy --strict."""

from __future__ import annotations

from typing_extensions import assert_type

from servekit import (
    Admission,
    Bound,
    Datagram,
    Deadlines,
    IPAddress,
    Server,
    StreamConnection,
    UnixAddress,
    server,
    tcp,
    udp,
    unix_datagram,
    unix_stream,
)
from servekit.framing import Lines, datagrams, length_prefixed, lines, messages
from servekit.protocols import Evented, Output, StreamProtocol, protocol
from servekit.testing import FakeOutput, feed


def shout(message: bytes) -> bytes:
    return message.upper()


def maybe(message: bytes) -> bytes | None:
    return message if message.strip() else None


class Echo:
    """A user's protocol, for connections from any address."""

    def connected(self, out: Output[object], /) -> None:
        self.out = out

    def data_received(self, data: bytes, /) -> None:
        self.out.write(data)

    def eof_received(self) -> None: ...
    def writable(self) -> None: ...
    def closed(self, reason: str, /) -> None: ...


class PortEcho:
    """A protocol that reads the peer's port: for IP connections only."""

    def connected(self, out: Output[IPAddress], /) -> None:
        host, port = out.peer
        out.write(f"{host}:{port + 1}\n".encode())

    def data_received(self, data: bytes, /) -> None: ...
    def eof_received(self) -> None: ...
    def writable(self) -> None: ...
    def closed(self, reason: str, /) -> None: ...


def make_echo() -> Echo:
    return Echo()


# What each handler is: the requests it serves.
assert_type(lines(shout), Evented[StreamConnection[object]])
assert_type(length_prefixed(maybe, size=2), Evented[StreamConnection[object]])
assert_type(messages(Lines(delimiter=b"\r\n"), shout, offload=4), Evented[StreamConnection[object]])
assert_type(datagrams(shout), Evented[Datagram[object]])
assert_type(protocol(Echo), Evented[StreamConnection[object]])
assert_type(protocol(make_echo), Evented[StreamConnection[object]])
assert_type(protocol(PortEcho), Evented[StreamConnection[IPAddress]])
proto: StreamProtocol[IPAddress] = Echo()  # a protocol for any address serves IP connections too

# On the transports they fit; the server's type is the transport's.
tcp_lines = server(tcp("127.0.0.1", 0), lines(shout))
assert_type(tcp_lines, Server[StreamConnection[IPAddress], IPAddress])
assert_type(tcp_lines.bind(), Bound[StreamConnection[IPAddress], IPAddress])
assert_type(server(udp("127.0.0.1", 0), datagrams(shout)), Server[Datagram[IPAddress], IPAddress])
assert_type(server(unix_datagram("/tmp/d"), datagrams(maybe)), Server[Datagram[UnixAddress], UnixAddress])
assert_type(server(unix_stream("/tmp/s"), protocol(Echo)), Server[StreamConnection[UnixAddress], UnixAddress])
assert_type(server(tcp("127.0.0.1", 0), protocol(PortEcho)), Server[StreamConnection[IPAddress], IPAddress])
assert_type(server(tcp("::1", 0), length_prefixed(shout, offload=8)), Server[StreamConnection[IPAddress], IPAddress])
assert_type(server((tcp("127.0.0.1", 0), tcp("::1", 0)), lines(shout)), Server[StreamConnection[IPAddress], IPAddress])

# The options that apply: deadlines (the reactor's time limits), admission, and the rest.
server(
    tcp("127.0.0.1", 0),
    lines(shout, offload=2),
    deadlines=Deadlines(first_byte=5.0, idle=30.0),
    admission=Admission(max_connections=10_000),
    verify=lambda address: address[0] == "127.0.0.1",
    on_error=lambda conn, exc: print(conn.client_address[1], exc),
    timeout=1.0,
)
server(unix_stream("/tmp/s"), protocol(Echo), deadlines=Deadlines(idle=1.0), admission=Admission())
server(udp("127.0.0.1", 0), datagrams(shout), admission=Admission(), on_error=lambda dg, exc: print(dg.data))

# The sans-IO kit: what it gives back carries the peer's type.
assert_type(feed(lines(shout), b"a\n", eof=True), FakeOutput[str])
assert_type(feed(Echo(), b"a"), FakeOutput[str])
assert_type(feed(PortEcho(), peer=("127.0.0.1", 1)), FakeOutput[tuple[str, int]])
assert_type(feed(protocol(PortEcho), b"x", peer=("::1", 2), server_address=("::", 80)).written, bytes)
ip_output: Output[IPAddress] = FakeOutput(("127.0.0.1", 1))
