"""Negative type cases for the composed API.

Not executed.  Each offending line ends in a coded ``# type: ignore[...]``;
mypy --strict (which warns about unused ignores) passing cleanly proves that
every line fails, and with that code.
"""

from __future__ import annotations

import attrs

from servekit import (
    Bound,
    Deadlines,
    first_line,
    BoundServer,
    Datagram,
    IPAddress,
    StreamConnection,
    forked,
    pooled,
    server,
    tcp,
    threaded,
    udp,
    unix_datagram,
    unix_stream,
)


def echo(conn: StreamConnection) -> None: ...


def pong(dg: Datagram) -> None: ...


# A datagram handler on a stream transport, and the reverse.
server(tcp("127.0.0.1", 0), pong)  # type: ignore[arg-type]
server(unix_stream("/tmp/s"), pong)  # type: ignore[arg-type]
server(udp("127.0.0.1", 0), echo)  # type: ignore[arg-type]
server(unix_datagram("/tmp/d"), echo)  # type: ignore[arg-type]

# Wrong address types.
tcp("127.0.0.1", "80")  # type: ignore[arg-type]
tcp(("127.0.0.1", 80), 0)  # type: ignore[arg-type]
udp(b"127.0.0.1", 0)  # type: ignore[arg-type]
unix_stream(("127.0.0.1", 80))  # type: ignore[arg-type]
unix_datagram(5)  # type: ignore[arg-type]

# Assigning to a frozen field (descriptions and request values are read-only).
transport = tcp("127.0.0.1", 0)
transport.port = 1  # type: ignore[misc]  # Property "port" ... is read-only
srv = server(transport, echo)
srv.dispatcher = threaded()  # type: ignore[misc]  # Property "dispatcher" ... is read-only
forked().max_children = 2  # type: ignore[misc]
pooled().workers = 2  # type: ignore[misc]


def mutate(conn: StreamConnection, dg: Datagram) -> None:
    conn.client_address = ("127.0.0.1", 1)  # type: ignore[misc]  # property is read-only
    dg.data = b""  # type: ignore[misc]  # property is read-only


# Options of the wrong type, and evolve with a wrong or unknown field.
threaded(daemon="yes")  # type: ignore[arg-type]
forked(max_children=1.5)  # type: ignore[arg-type]
pooled(workers="8")  # type: ignore[arg-type]
pooled(queue=2.5)  # type: ignore[arg-type]
pooled(16)  # type: ignore[call-arg]  # the options are keywords only
server(tcp("127.0.0.1", 0), echo, timeout="1")  # type: ignore[call-overload]
attrs.evolve(transport, port="80")  # type: ignore[arg-type]
attrs.evolve(transport, prot=80)  # type: ignore[call-arg]

# A handler must take exactly one request.
def no_request() -> None: ...


server(tcp("127.0.0.1", 0), no_request)  # type: ignore[arg-type]

# A lambda handler is checked against the transport's request type.
server(tcp("127.0.0.1", 0), lambda conn: conn.reply(b""))  # type: ignore[attr-defined]
server(udp("127.0.0.1", 0), lambda dg: dg.rfile.readline())  # type: ignore[attr-defined]
server(unix_stream("/tmp/s"), lambda conn: conn.client_address[1] + 1)  # type: ignore[operator]
server(tcp("127.0.0.1", 0), echo, on_error=lambda dg, exc: dg.reply(b""))  # type: ignore[attr-defined]

# The address type follows the transport.
unix_bound = server(unix_stream("/tmp/s"), echo).bind()
host, port = unix_bound.address  # type: ignore[str-unpack]
unix_bound.port  # type: ignore[misc]  # Invalid self argument: a Unix server has no port
unix_bound.host  # type: ignore[misc]  # ... nor a host
tcp_bound = server(tcp("127.0.0.1", 0), echo).bind()
scope_id = tcp_bound.address[3]  # type: ignore[misc]  # Tuple index out of range
path: str = tcp_bound.address  # type: ignore[assignment]


def from_loopback(address: tuple[str, int]) -> bool:
    return address[0] == "127.0.0.1"


server(unix_stream("/tmp/s"), echo, verify=from_loopback)  # type: ignore[arg-type]
server(unix_datagram("/tmp/d"), pong, verify=lambda address: address.port > 0)  # type: ignore[union-attr]

# Any bound server: for the lifecycle only, not for the request type.
servers: list[BoundServer] = [tcp_bound, unix_bound]
servers[0].server  # type: ignore[attr-defined]
ip_servers: list[BoundServer[IPAddress]] = [tcp_bound, unix_bound]  # type: ignore[list-item]
narrow: Bound[StreamConnection[IPAddress], IPAddress] = server(udp("127.0.0.1", 0), pong).bind()  # type: ignore[assignment]

# Several listeners must yield one kind of request: stream and datagram do not mix.
server((tcp("127.0.0.1", 0), udp("127.0.0.1", 0)), print)  # type: ignore[type-var]
server((unix_stream("/tmp/s"), unix_datagram("/tmp/d")), print)  # type: ignore[type-var]

# A gate and deadlines are for stream connections only.
server(udp("127.0.0.1", 0), pong, gate=first_line())  # type: ignore[arg-type]
server(unix_datagram("/tmp/d"), pong, deadlines=Deadlines(idle=1.0))  # type: ignore[arg-type]

# Live connections carry the server's address type.
server(unix_stream("/tmp/s"), echo).bind().connections()[0].peer[1] + 1  # type: ignore[operator]
