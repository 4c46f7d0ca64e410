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
    Connection,
    Deadlines,
    Listeners,
    WorkerTraits,
    first_line,
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


def takes_ip(address: IPAddress) -> None: ...


def takes_unix(address: UnixAddress) -> None: ...


server(tcp("127.0.0.1", 0), lambda conn: takes_ip(conn.client_address))
server(unix_datagram("/tmp/d"), lambda dg: takes_unix(dg.client_address))

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


# A transport chosen at run time has one type: Transport is covariant.
def listener(url: str) -> Transport[StreamConnection[Address], Address]:
    return tcp("127.0.0.1", int(url[4:])) if url.startswith("tcp:") else unix_stream(url[5:])


def handle(conn: StreamConnection[Address]) -> None:
    conn.wfile.write(repr(conn.client_address).encode())


from_config = server(listener("tcp:8000"), handle)
assert_type(from_config, Server[StreamConnection[Address], Address])
# ... and several listeners, TCP and Unix together, with the stream-only options.
several = server(
    (tcp("0.0.0.0", 8000), tcp("::", 8000), unix_stream("/run/app.sock")),
    handle,
    gate=first_line(),
    deadlines=Deadlines(request=5.0),
)
assert_type(several, Server[StreamConnection[Address], Address])
assert_type(several.bind().addresses, tuple[Address, ...])
assert_type(several.transports, tuple[Transport[StreamConnection[Address], Address], ...])
both_ip = server((tcp("127.0.0.1", 0), tcp("::1", 0)), echo)
assert_type(both_ip, Server[IPStream, IPAddress])
listeners: Listeners[StreamConnection[Address], Address] = (listener("tcp:1"), unix_stream("/tmp/s"))
server(listeners, handle)

# A variant on another kind of transport.
spec: Server[StreamConnection[Address], Address] = server(tcp("127.0.0.1", 8000), handle)
assert_type(attrs.evolve(spec, transport=unix_stream("/tmp/s")), Server[StreamConnection[Address], Address])
assert_type(attrs.evolve(spec, transport=(tcp("127.0.0.1", 0), unix_stream("/tmp/s"))), Server[StreamConnection[Address], Address])

# Live connections carry the server's address type.
ip_live = server(tcp("127.0.0.1", 0), echo).bind().connections()
assert_type(ip_live, list[Connection[IPAddress]])
assert_type(ip_live[0].peer, IPAddress)
server(tcp("127.0.0.1", 0), echo).bind().close_clients(lambda c: c.peer[0] == "127.0.0.1")


# Workers may declare what they are (optional; only makes serving cheaper).
@attrs.define
class DeclaredWorkers(CountingWorkers[_R]):
    traits: WorkerTraits = WorkerTraits("loop", capacity=False, service=False)


def declared(host: WorkerHost[IPStream]) -> Workers[IPStream]:
    return DeclaredWorkers(host)
