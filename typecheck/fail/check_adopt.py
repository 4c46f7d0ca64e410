"""Negative type cases for adopt().

Not executed.  Each offending line ends in a coded ``# type: ignore[...]``.
"""

from __future__ import annotations

from servekit import Datagram, IPAddress, StreamConnection, UnixAddress, server
from servekit.transports import adopt


def echo(conn: StreamConnection[IPAddress]) -> None: ...


def pong(dg: Datagram) -> None: ...


# The kind decides the request type: a handler of the other kind is refused.
server(adopt(3, "tcp"), pong)  # type: ignore[arg-type]
server(adopt(3, "udp"), echo)  # type: ignore[arg-type]
server(adopt(3, "datagram"), echo)  # type: ignore[arg-type]
# ... and the address type: a handler for IP peers does not fit a Unix socket, nor one of either family.
server(adopt(3, "unix_stream"), echo)  # type: ignore[arg-type]
server(adopt(3, "stream"), echo)  # type: ignore[arg-type]

# Bad arguments: an unknown kind, a str fd, max_packet_size on a stream kind.
adopt(3, "sctp")  # type: ignore[call-overload]
adopt("3", "tcp")  # type: ignore[call-overload]
adopt(3, "tcp", max_packet_size=1024)  # type: ignore[call-overload]

# A description is frozen; a TCP socket has no Unix address.
adopt(3, "tcp").fd = 4  # type: ignore[misc]
unix: UnixAddress = adopt(3, "tcp").listen().address  # type: ignore[assignment]
