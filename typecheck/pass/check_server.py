"""Positive type cases for the composed API: must type-check cleanly under mypy --strict."""

from __future__ import annotations

import io
import socket
from collections.abc import Sequence
from typing import Generic, TypeVar

import attrs
from typing_extensions import assert_type

from servekit import (
    Address,
    Bound,
    BoundServer,
    Datagram,
    Handler,
    IPAddress,
    Request,
    Server,
    StreamConnection,
    TCPTransport,
    Transport,
    UnixAddress,
    WorkerHost,
    Workers,
    forked,
    inline,
    pooled,
    server,
    tcp,
    threaded,
    udp,
    unix_datagram,
    unix_stream,
)
from servekit.connections import SocketWriter
from servekit.testing import serving

IPStream = StreamConnection[IPAddress]
IPDatagram = Datagram[IPAddress]
UnixStream = StreamConnection[UnixAddress]
UnixDatagram = Datagram[UnixAddress]


def echo(conn: StreamConnection) -> None:
    for line in conn.rfile:
        conn.wfile.write(line)


def pong(dg: Datagram) -> None:
    dg.reply(b"pong " + dg.data)


def any_request(request: Request) -> int:  # a handler may return anything; it is ignored
    return len(repr(request.client_address))


# The transport decides the request type and the address type.
assert_type(server(tcp("127.0.0.1", 0), echo), Server[IPStream, IPAddress])
assert_type(server(unix_stream("/tmp/s"), echo), Server[UnixStream, UnixAddress])
assert_type(server(udp("127.0.0.1", 0), pong), Server[IPDatagram, IPAddress])
assert_type(server(unix_datagram("/tmp/d"), pong), Server[UnixDatagram, UnixAddress])
# A handler of a wider type fits either kind (handlers are contravariant).
assert_type(server(tcp("127.0.0.1", 0), any_request), Server[IPStream, IPAddress])
assert_type(server(udp("127.0.0.1", 0), any_request), Server[IPDatagram, IPAddress])

# A lambda handler's parameter is inferred from the transport, so its body is checked.
assert_type(server(tcp("127.0.0.1", 0), lambda conn: conn.wfile.write(conn.rfile.readline())), Server[IPStream, IPAddress])
assert_type(server(udp("127.0.0.1", 0), lambda dg: dg.reply(dg.data.upper())), Server[IPDatagram, IPAddress])
server(tcp("127.0.0.1", 0), lambda conn: assert_type(conn.client_address, IPAddress))
server(unix_datagram("/tmp/d"), lambda dg: assert_type(dg.client_address, UnixAddress))

srv = server(tcp("127.0.0.1", 0), echo, dispatcher=threaded(daemon=True), timeout=1.5)
bound = srv.bind()
assert_type(bound, Bound[IPStream, IPAddress])
assert_type(bound.handle_request(), bool)
assert_type(bound.fileno(), int)
with bound as entered:
    assert_type(entered, Bound[IPStream, IPAddress])

# An IP server's address unpacks as (host, port); it has a typed host and port.
host, port = bound.address
assert_type(host, str)
assert_type(port, int)
assert_type(bound.host, str)
assert_type(bound.port, int)
unix_bound = server(unix_stream("/tmp/s"), echo).bind()
assert_type(unix_bound.address, UnixAddress)


# verify takes the transport's address type: a precise predicate fits.
def from_loopback(address: tuple[str, int]) -> bool:
    return address[0].startswith("127.")


def from_any(address: Address) -> bool:
    return bool(address)


server(tcp("127.0.0.1", 0), echo, verify=from_loopback)
server(tcp("127.0.0.1", 0), echo, verify=from_any)
server(udp("127.0.0.1", 0), pong, verify=lambda address: address[1] > 1024)
server(unix_stream("/tmp/s"), echo, verify=lambda path: path != "")
server(tcp("127.0.0.1", 0), echo, on_error=lambda conn, exc: conn.wfile.write(str(exc).encode()))


# Any bound server, for the lifecycle: TCP and UDP handles in one list.
def stop_all(servers: Sequence[BoundServer]) -> None:
    for each in servers:
        each.shutdown()
        each.close()


udp_bound = server(udp("127.0.0.1", 0), pong).bind()
mixed: list[BoundServer] = [bound, udp_bound, unix_bound]
stop_all(mixed)
ip_only: list[BoundServer[IPAddress]] = [bound, udp_bound]
assert_type(ip_only[0].address, IPAddress)
either: Bound[IPStream, IPAddress] | Bound[IPDatagram, IPAddress] = bound
stop_all([either])
with serving(udp_bound) as served:
    assert_type(served, Bound[IPDatagram, IPAddress])

conn = StreamConnection(socket.socket(), ("127.0.0.1", 1))
assert_type(conn.rfile, io.BufferedReader)
assert_type(conn.wfile, SocketWriter)
assert_type(conn.socket, socket.socket)
assert_type(Datagram(b"", socket.socket(), "/tmp/peer").data, bytes)

# Variants are values: attrs.evolve is checked by mypy's attrs plugin.
local = attrs.evolve(tcp("0.0.0.0", 8000, backlog=128), host="127.0.0.1")
assert_type(local, TCPTransport)
prod = attrs.evolve(srv, dispatcher=forked(max_children=8))
assert_type(prod, Server[IPStream, IPAddress])
# A bounded pool fits any transport; its queue is optional.
assert_type(attrs.evolve(srv, dispatcher=pooled(workers=32)), Server[IPStream, IPAddress])
assert_type(server(udp("127.0.0.1", 0), pong, dispatcher=pooled(workers=4, queue=64)), Server[IPDatagram, IPAddress])
assert_type(pooled().queue, int | None)
assert_type(attrs.evolve(pooled(), queue=None, block_on_close=False).workers, int)

transport: Transport[IPStream, IPAddress] = tcp("127.0.0.1", 0)
handler: Handler[StreamConnection] = echo
assert_type(server(transport, handler, dispatcher=inline()), Server[IPStream, IPAddress])


# A dispatcher of one's own, by structure: nothing inherited, only the
# annotations' types imported (from servekit.abc).
_R = TypeVar("_R")


@attrs.frozen
class Counting:
    def start(self, host: WorkerHost[_R], /) -> Workers[_R]:
        return CountingWorkers(host)


@attrs.define
class CountingWorkers(Generic[_R]):
    host: WorkerHost[_R]
    requests: int = 0

    def dispatch(self, request: _R, /) -> None:
        self.requests += 1
        self.host.run(request)

    def capacity(self) -> Sequence[int] | None:
        return None

    def service_actions(self) -> None:
        pass

    def close(self) -> None:
        pass


assert_type(server(tcp("127.0.0.1", 0), echo, dispatcher=Counting()), Server[IPStream, IPAddress])
