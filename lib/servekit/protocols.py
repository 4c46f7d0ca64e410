"""Event-driven serving: sans-IO protocol objects, held by the server's reactor.

A blocking handler holds a thread for its connection's whole life.  A
*protocol* holds nothing: the server's reactor -- on the serve loop, in one
thread -- owns every connection's socket, reads what arrives and hands it to
the connection's protocol object, and sends what the protocol writes.  A
connection then costs a few hundred bytes between messages and no thread, so
one process holds tens of thousands of idle ones.

A protocol is any object with the five methods of :class:`StreamProtocol`;
it writes through an :class:`Output`, never a socket, so it is tested by
feeding it bytes -- no loop, no socket, no clock
(:func:`servekit.testing.feed` does it)::

    class Echo:
        def connected(self, out: Output[object], /) -> None:
            self.out = out

        def data_received(self, data: bytes, /) -> None:
            self.out.write(data)

        def eof_received(self) -> None: ...
        def writable(self) -> None: ...
        def closed(self, reason: str, /) -> None: ...

    server(tcp("127.0.0.1", 0), protocol(Echo))

Most protocols are messages and replies: :mod:`servekit.framing` splits the
stream into messages (lines, length-prefixed, your own) and calls a plain
``(message) -> reply`` function -- on the loop, or on a pool of threads when
it blocks (``offload=``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Literal, Protocol, TypeAlias, TypeVar, final

from ._types import _AddrT_co, _ReqT_contra
from ._validate import int_in_range
from .connections import StreamConnection

__all__ = ("Evented", "Output", "ProtocolFactory", "StreamProtocol", "protocol")

_AddrT_contra = TypeVar("_AddrT_contra", contravariant=True)
_A = TypeVar("_A")


class Output(Protocol[_AddrT_co]):
    """**Protocol:** what a :class:`StreamProtocol` writes through: its connection, as the reactor holds it.

    Writes never block: what the socket does not take at once is buffered
    and sent as the peer reads.  When more than the reactor's ``high_water``
    bytes wait, the connection stops being read (a peer that does not read
    cannot make the server buffer without bound) until the buffer is down to
    ``low_water`` bytes; the protocol's ``writable()`` is called then.
    """

    @property
    def peer(self) -> _AddrT_co:
        """The client's address."""
        ...

    @property
    def server_address(self) -> _AddrT_co | None:
        """The address of the listener the connection came in on."""
        ...

    @property
    def buffered(self) -> int:
        """Bytes written and not yet sent."""
        ...

    def write(self, data: bytes, /) -> None:
        """Send *data* (after what is buffered).  Ignored once the connection is closing."""
        ...

    def close(self, reason: str = "finished", /) -> None:
        """Close the connection once what is buffered is sent, for *reason* (its events and stats say it).  Idempotent."""
        ...

    def abort(self) -> None:
        """Close the connection now, dropping what is buffered (the peer gets a reset)."""
        ...

    def pause_reading(self) -> None:
        """Read nothing more until :meth:`resume_reading` (the client's time limits wait too)."""
        ...

    def resume_reading(self) -> None:
        """Read again after :meth:`pause_reading`."""
        ...


class StreamProtocol(Protocol[_AddrT_contra]):
    """**Protocol:** the logic of one stream connection, driven by the reactor (sans-IO).

    One object per connection, made by the factory given to :func:`protocol`.
    Every method is called on the serve loop's thread, one at a time, so it
    must not block: blocking work goes to a pool (see
    :mod:`servekit.framing`'s ``offload``).  An ``Exception`` raised by any of
    them is reported to the server's ``on_error`` (or logged) and closes the
    connection with the reason ``"error"``; the server goes on serving.
    """

    def connected(self, out: Output[_AddrT_contra], /) -> None:
        """The connection is up; *out* is where its replies go (keep it)."""
        ...

    def data_received(self, data: bytes, /) -> None:
        """*data* arrived (any number of bytes: a message may be split or several may come together)."""
        ...

    def eof_received(self) -> None:
        """The client will send nothing more.  The connection is closed once what is buffered is sent."""
        ...

    def writable(self) -> None:
        """The output buffer went over ``high_water`` and is back down to ``low_water``: write again."""
        ...

    def closed(self, reason: str, /) -> None:
        """The connection is closed, for *reason* (as in :class:`~servekit.events.ConnectionClosed`): the last call."""
        ...


ProtocolFactory: TypeAlias = Callable[[], StreamProtocol[_AddrT_contra]]
"""Makes the protocol object of one new connection: a class, or any function of no arguments."""

Kind: TypeAlias = Literal["stream", "datagram"]


@final
class Evented(Generic[_ReqT_contra]):
    """What a reactor serves: a server's handler, given in place of a blocking function.

    Made by :func:`protocol` and by :mod:`servekit.framing`'s ``lines``,
    ``length_prefixed``, ``messages`` and ``datagrams``; its type says which
    requests it serves (``Evented[StreamConnection[object]]``: stream
    connections from any address), so a mismatch with the transport is a type
    error.  Not callable: where a blocking handler is expected it is a type
    error too.

    Attributes:
        kind: ``"stream"`` or ``"datagram"``.
        start: makes the per-connection object (stream), or is the message
            function (datagram).
        offload: run the message function on a pool of this many threads
            (``0``: on the loop).
        high_water, low_water: the output buffer's marks, in bytes.
        read_size: the most bytes read in one go.
    """

    __slots__ = ("high_water", "kind", "low_water", "offload", "read_size", "start")

    def __init__(
        self,
        kind: Kind,
        start: Callable[[], object] | Callable[[bytes], bytes | None],
        *,
        offload: int = 0,
        high_water: int = 64 * 1024,
        low_water: int | None = None,
        read_size: int = 64 * 1024,
    ) -> None:
        for name, value, least in (("offload", offload, 0), ("high_water", high_water, 1), ("read_size", read_size, 1)):
            int_in_range(name, least)(None, None, value)
        if low_water is None:
            low_water = high_water // 4
        int_in_range("low_water", 0)(None, None, low_water)
        if low_water > high_water:
            raise ValueError(f"low_water must be at most high_water ({high_water}), got {low_water!r}")
        given: object = start
        if not callable(given):
            what = "a protocol factory" if kind == "stream" else "a message handler"
            raise TypeError(f"expected {what} (a callable), got {type(start).__name__} {start!r}")
        self.kind: Kind = kind
        self.start = start
        self.offload = offload
        self.high_water = high_water
        self.low_water = low_water
        self.read_size = read_size

    def __repr__(self) -> str:
        name = getattr(self.start, "__qualname__", repr(self.start))
        return f"<Evented {self.kind} {name} offload={self.offload}>"


def protocol(
    factory: ProtocolFactory[_A],
    *,
    high_water: int = 64 * 1024,
    low_water: int | None = None,
    read_size: int = 64 * 1024,
) -> Evented[StreamConnection[_A]]:
    """Serve each stream connection with a protocol object made by *factory*, on the reactor.

    ``server(tcp(host, port), protocol(Echo))``.

    Args:
        factory: makes one :class:`StreamProtocol` per connection.
        high_water: when more bytes than this wait to be sent, the connection
            stops being read.
        low_water: ... until no more than this many wait (default: a quarter
            of *high_water*); then its ``writable()`` is called.
        read_size: the most bytes read off the socket at a time.

    Raises:
        TypeError, ValueError: an argument of the wrong type or value.
    """
    return Evented("stream", factory, high_water=high_water, low_water=low_water, read_size=read_size)

