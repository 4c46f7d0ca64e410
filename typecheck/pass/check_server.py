"""Positive type cases for the composed API: must type-check cleanly under mypy --strict."""

from __future__ import annotations

import io
import socket
from collections.abc import Sequence

import attrs
from typing_extensions import assert_type

from servekit import (
    Address,
    Bound,
    Datagram,
    Handler,
    Job,
    Request,
    Server,
    StreamConnection,
    TCPTransport,
    Transport,
    WorkerHost,
    Workers,
    forked,
    inline,
    server,
    tcp,
    threaded,
    udp,
    unix_datagram,
    unix_stream,
)
from servekit.connections import SocketWriter


def echo(conn: StreamConnection) -> None:
    for line in conn.rfile:
        conn.wfile.write(line)


def pong(dg: Datagram) -> None:
    dg.reply(b"pong " + dg.data)


def any_request(request: Request) -> int:  # a handler may return anything; it is ignored
    return len(repr(request.client_address))


# Stream transports pair with StreamConnection handlers, datagram ones with Datagram handlers.
assert_type(server(tcp("127.0.0.1", 0), echo), Server[StreamConnection])
assert_type(server(unix_stream("/tmp/s"), echo), Server[StreamConnection])
assert_type(server(udp("127.0.0.1", 0), pong), Server[Datagram])
assert_type(server(unix_datagram("/tmp/d"), pong), Server[Datagram])
# A handler of a wider type fits either kind (handlers are contravariant).
assert_type(server(tcp("127.0.0.1", 0), any_request), Server[StreamConnection])
assert_type(server(udp("127.0.0.1", 0), any_request), Server[Datagram])

srv = server(tcp("127.0.0.1", 0), echo, dispatcher=threaded(daemon=True), timeout=1.5)
bound = srv.bind()
assert_type(bound, Bound[StreamConnection])
assert_type(bound.address, Address)
assert_type(bound.handle_request(), bool)
assert_type(bound.fileno(), int)
with bound as entered:
    assert_type(entered, Bound[StreamConnection])

conn = StreamConnection(socket.socket(), ("127.0.0.1", 1))
assert_type(conn.rfile, io.BufferedReader)
assert_type(conn.wfile, SocketWriter)
assert_type(conn.socket, socket.socket)
assert_type(Datagram(b"", socket.socket(), "/tmp/peer").data, bytes)

# Variants are values: attrs.evolve is checked by mypy's attrs plugin.
local = attrs.evolve(tcp("0.0.0.0", 8000, backlog=128), host="127.0.0.1")
assert_type(local, TCPTransport)
prod = attrs.evolve(srv, dispatcher=forked(max_children=8))
assert_type(prod, Server[StreamConnection])

transport: Transport[StreamConnection] = tcp("127.0.0.1", 0)
handler: Handler[StreamConnection] = echo
assert_type(server(transport, handler, dispatcher=inline()), Server[StreamConnection])


# A dispatcher of one's own, by structure: nothing imported or inherited.
@attrs.frozen
class Counting:
    def start(self, host: WorkerHost, /) -> Workers:
        return CountingWorkers()


@attrs.define
class CountingWorkers:
    jobs: int = 0

    def dispatch(self, job: Job, /) -> None:
        self.jobs += 1
        job.run()

    def capacity(self) -> Sequence[int] | None:
        return None

    def service_actions(self) -> None:
        pass

    def close(self) -> None:
        pass


assert_type(server(tcp("127.0.0.1", 0), echo, dispatcher=Counting()), Server[StreamConnection])
