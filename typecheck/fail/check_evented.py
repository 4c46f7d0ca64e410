"""Negative type cases for the reactor's handlers (servekit.protocols, servekit.framing).

Not executed.  Each offending line ends in a coded ``# type: ignore[...]``;
mypy --strict (which warns about unused ignores) passing cleanly proves that
every line fails, and with that code.
"""

from __future__ import annotations

from servekit import (
    Deadlines,
    IPAddress,
    StreamConnection,
    first_line,
    pooled,
    server,
    tcp,
    threaded,
    udp,
    unix_stream,
)
from servekit.framing import Lines, datagrams, lines, messages
from servekit.protocols import Output, protocol
from servekit.testing import feed


def shout(message: bytes) -> bytes:
    return message.upper()


class Echo:
    def connected(self, out: Output[object], /) -> None:
        self.out = out

    def data_received(self, data: bytes, /) -> None:
        self.out.write(data)

    def eof_received(self) -> None: ...
    def writable(self) -> None: ...
    def closed(self, reason: str, /) -> None: ...


class TextEcho:
    """Wrong: data arrives as bytes."""

    def connected(self, out: Output[object], /) -> None: ...
    def data_received(self, data: str, /) -> None: ...
    def eof_received(self) -> None: ...
    def writable(self) -> None: ...
    def closed(self, reason: str, /) -> None: ...


class PortEcho:
    """Wants an IP peer."""

    def connected(self, out: Output[IPAddress], /) -> None: ...
    def data_received(self, data: bytes, /) -> None: ...
    def eof_received(self) -> None: ...
    def writable(self) -> None: ...
    def closed(self, reason: str, /) -> None: ...


def blocking(conn: StreamConnection[IPAddress]) -> None: ...


# A protocol whose method takes the wrong type.
protocol(TextEcho)  # type: ignore[arg-type]

# A protocol (its class, or an object) is not a blocking handler: wrap it in protocol().
server(tcp("127.0.0.1", 0), Echo)  # type: ignore[arg-type]
server(tcp("127.0.0.1", 0), Echo())  # type: ignore[call-overload]

# ... and a blocking handler is neither a protocol factory nor a message function.
protocol(blocking)  # type: ignore[arg-type]
lines(blocking)  # type: ignore[arg-type]
messages(Lines(), blocking)  # type: ignore[arg-type]

# Stream handlers on datagram transports, and the reverse.
server(udp("127.0.0.1", 0), lines(shout))  # type: ignore[arg-type]
server(udp("127.0.0.1", 0), protocol(Echo))  # type: ignore[arg-type]
server(tcp("127.0.0.1", 0), datagrams(shout))  # type: ignore[arg-type]

# The reactor holds the connections: no dispatcher, no gate.
server(tcp("127.0.0.1", 0), lines(shout), dispatcher=pooled())  # type: ignore[call-overload]
server(unix_stream("/tmp/s"), protocol(Echo), dispatcher=threaded())  # type: ignore[call-overload]
server(tcp("127.0.0.1", 0), lines(shout), gate=first_line())  # type: ignore[call-overload]
# Time limits are for stream connections.
server(udp("127.0.0.1", 0), datagrams(shout), deadlines=Deadlines(idle=1.0))  # type: ignore[arg-type]

# A protocol that wants an IP peer does not serve Unix connections.
server(unix_stream("/tmp/s"), protocol(PortEcho))  # type: ignore[misc]

# Options of the wrong type.
lines(shout, max_length="10")  # type: ignore[arg-type]
messages(Lines(), shout, offload=1.5)  # type: ignore[arg-type]
protocol(Echo, high_water=None)  # type: ignore[arg-type]

# The sans-IO kit: an IP protocol needs an IP peer; datagram handlers are not fed as streams.
feed(PortEcho(), b"x")  # type: ignore[arg-type]
feed(PortEcho(), b"x", peer="/tmp/s")  # type: ignore[misc]
feed(datagrams(shout), b"x")  # type: ignore[arg-type]
feed(Echo(), "text")  # type: ignore[call-overload]
