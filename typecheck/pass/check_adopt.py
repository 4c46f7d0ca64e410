"""Positive type cases for adopt(): the kind decides the request and address types."""

from __future__ import annotations

import socket

from typing_extensions import assert_type

from servekit import Address, Datagram, IPAddress, Server, StreamConnection, Transport, UnixAddress, server
from servekit.transports import AdoptedTransport, AdoptKind, adopt

sock = socket.socket()

assert_type(adopt(3, "tcp"), AdoptedTransport[StreamConnection[IPAddress], IPAddress])
assert_type(adopt(sock, "unix_stream"), AdoptedTransport[StreamConnection[UnixAddress], UnixAddress])
assert_type(adopt(3, "stream"), AdoptedTransport[StreamConnection[Address], Address])
assert_type(adopt(3, "udp"), AdoptedTransport[Datagram[IPAddress], IPAddress])
assert_type(adopt(sock, "unix_datagram", max_packet_size=1024), AdoptedTransport[Datagram[UnixAddress], UnixAddress])
assert_type(adopt(3, "datagram"), AdoptedTransport[Datagram[Address], Address])

# A kind known only at run time (a command line's): either kind of request.
def any_kind(kind: AdoptKind) -> None:
    assert_type(adopt(3, kind), AdoptedTransport[StreamConnection[Address] | Datagram[Address], Address])


# Each is a Transport of its types.
tcp_transport: Transport[StreamConnection[IPAddress], IPAddress] = adopt(3, "tcp")
datagram_transport: Transport[Datagram[Address], Address] = adopt(3, "datagram")


def echo(conn: StreamConnection[IPAddress]) -> None:
    conn.wfile.write(conn.rfile.readline())


def pong(dg: Datagram) -> None:
    dg.reply(dg.data)


assert_type(server(adopt(3, "tcp"), echo), Server[StreamConnection[IPAddress], IPAddress])
assert_type(server(adopt(3, "unix_datagram"), pong), Server[Datagram[UnixAddress], UnixAddress])
# The address type reaches the bound server and the lambda handler's request.
assert_type(server(adopt(3, "tcp"), echo).bind().port, int)
def takes_any(address: Address) -> None: ...


server(adopt(3, "stream"), lambda conn: takes_any(conn.client_address))
assert_type(adopt(3, "tcp").fd, int)
assert_type(adopt(3, "udp").max_packet_size, int | None)
