"""The request values handed to handlers: a stream connection or a datagram.

A stream connection may carry deadlines (:class:`servekit.deadlines.Deadlines`
describes them): a private clock per connection that bounds each read and
write of its ``rfile`` and ``wfile`` and raises :exc:`DeadlineExceeded`
(defined in :mod:`servekit.errors`, and importable from here too).  The
clock and the reads and writes it bounds are the private
``servekit._deadline_io``.
"""

from __future__ import annotations

import errno
import io
import socket
from typing import TYPE_CHECKING, Generic, final

from ._deadline_io import _ConnectionReader, _DeadlineSender, _stop_kernel_wait
from ._socket_writer import SocketWriter
from ._types import _AddrT, _AddrT_co
from .errors import DeadlineExceeded

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from ._deadline_io import _DeadlineClock

__all__ = ("Datagram", "DeadlineExceeded", "SocketWriter", "StreamConnection")

_new = object.__new__


@final
class StreamConnection(Generic[_AddrT_co]):
    """One accepted stream connection (TCP or Unix stream), from a peer at an address of type *A*.

    ``rfile`` (a buffered reader) and ``wfile`` (a :class:`SocketWriter`) are
    made the first time a handler touches them, so a handler that uses the
    socket directly pays for neither (with deadlines or a prefix, at once).
    The server closes them, and the connection, when the handler returns.

    *deadlines*, a per-connection clock made by
    :meth:`servekit.deadlines.Deadlines.clock`, bounds every read of
    ``rfile`` and write of ``wfile`` (see :class:`~servekit.deadlines.Deadlines`):
    one that passes raises :exc:`DeadlineExceeded`, and the connection is
    unusable from then on (each later read or write raises it again).  The
    socket's own timeout is set to the ``idle`` limit, so a handler that
    uses the socket directly is bounded too (by a plain ``TimeoutError``).
    *prefix* holds bytes already read off the socket (by the server, before
    the handler ran): ``rfile`` returns them first, as they are.
    *server_address* is the address of the listening socket the connection
    came in on (see :attr:`server_address`).
    """

    __slots__ = ("_address", "_clock", "_rfile", "_server_address", "_socket", "_wfile")

    def __init__(
        self,
        sock: socket.socket,
        client_address: _AddrT_co,
        *,
        server_address: _AddrT_co | None = None,
        deadlines: _DeadlineClock | None = None,
        prefix: bytes = b"",
    ) -> None:
        # (An acceptor makes a plain connection with _accepted(): keep it in step.)
        self._socket = sock
        self._address = client_address
        self._server_address = server_address
        self._clock = deadlines
        self._rfile: io.BufferedReader | None = None
        self._wfile: SocketWriter | None = None
        if deadlines is not None or prefix:
            self._arm(prefix)

    def _arm(self, prefix: bytes) -> None:
        """Make the files of a connection with deadlines (its clock) or a *prefix*, at once.

        So that the properties' first use costs a plain connection nothing
        more, the files of this kind of connection are made up front.
        """
        sock = self._socket
        deadlines = self._clock
        self._rfile = io.BufferedReader(_ConnectionReader(sock, deadlines, prefix))
        if deadlines is None:
            return
        wfile = self._wfile = SocketWriter(sock)
        wfile._sock = _DeadlineSender(sock, deadlines)
        if prefix:
            deadlines.first_byte_at = None  # the server read it already
        sock.settimeout(deadlines.idle)

    @property
    def socket(self) -> socket.socket:
        """The connected socket (blocking; with deadlines, its timeout is the ``idle`` limit)."""
        clock = self._clock
        if clock is not None and clock.kernel_wait is not None:
            _stop_kernel_wait(self._socket, clock)
        return self._socket

    @property
    def client_address(self) -> _AddrT_co:
        """The peer's address: ``(host, port)`` over IP, ``""`` from an unnamed Unix socket."""
        return self._address

    @property
    def server_address(self) -> _AddrT_co | None:
        """The address of the listening socket the connection came in on; ``None`` if made without one.

        It is the address as the listener reports it, one of the bound
        server's addresses (``("127.0.0.1", 8000)``, ``("::", 8000)``, a
        socket path), so a handler serving several listeners can tell them
        apart.  A connection made by hand (over a ``socket.socketpair()``,
        as :func:`servekit.testing.driving` does) has none.
        """
        return self._server_address

    @property
    def rfile(self) -> io.BufferedReader:
        """A buffered binary reader over the connection (made on first use)."""
        rfile = self._rfile
        if rfile is None:
            rfile = self._rfile = self._socket.makefile("rb")
        return rfile

    @property
    def wfile(self) -> SocketWriter:
        """An unbuffered binary writer over the connection (made on first use)."""
        wfile = self._wfile
        if wfile is None:
            wfile = self._wfile = SocketWriter(self._socket)
        return wfile

    @property
    def deadline_exceeded(self) -> DeadlineExceeded | None:
        """The last :exc:`DeadlineExceeded` a read or write raised (``None``: none did)."""
        clock = self._clock
        return None if clock is None else clock.exceeded

    def close(self) -> None:
        """Finish the connection: close the files, send FIN, close the socket.

        Idempotent.  Errors from a peer that already went away are ignored.
        """
        rfile = self._rfile
        wfile = self._wfile
        if rfile is not None:
            rfile.close()
        if wfile is not None:
            wfile.close()
        sock = self._socket
        if sock.fileno() < 0:
            return
        try:
            # Shut down explicitly: a forked child may still share the fd, and
            # close() alone would then send no FIN.
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        sock.close()

    def __repr__(self) -> str:
        return f"<StreamConnection from {self._address!r} fd={self._socket.fileno()}>"


def _timed(conn: StreamConnection[_AddrT], clock: _DeadlineClock) -> StreamConnection[_AddrT]:
    """*conn*, a plain connection nothing has read or written through yet, given deadlines (*clock*) in place.

    What ``StreamConnection(conn.socket, conn.client_address,
    server_address=conn.server_address, deadlines=clock)`` would make,
    without a second object (the server's deadline stage, once per
    connection).
    """
    conn._clock = clock
    conn._arm(b"")
    return conn


def _accepted(sock: socket.socket, client_address: _AddrT, server_address: _AddrT) -> StreamConnection[_AddrT]:
    """``StreamConnection(sock, client_address, server_address=server_address)``, as an acceptor makes it.

    The same object, made without calling the class: on Python 3.11 and
    3.12 a class called with a keyword argument costs some 1,000
    instructions more, and even an unused keyword-only default some 200
    (an inline UDP request costs about 23,000 in all).  Keep it in step with
    ``__init__`` (a test compares the two).
    """
    conn: StreamConnection[_AddrT] = _new(StreamConnection)
    conn._socket = sock
    conn._address = client_address
    conn._server_address = server_address
    conn._clock = None
    conn._rfile = None
    conn._wfile = None
    return conn


def _over(conn: StreamConnection[_AddrT], sock: socket.socket) -> StreamConnection[_AddrT]:
    """*conn*, now over *sock* (its socket wrapped: TLS), before anything was read or written through it."""
    conn._socket = sock
    return conn


def _readdress(request: object, client_address: object) -> None:
    """Give a stream connection the client address a PROXY header named (the balancer's peer is not the client)."""
    if isinstance(request, StreamConnection):
        request._address = client_address


def _socket_of(request: object) -> socket.socket | None:
    """A stream connection's socket, without the ``socket`` property's side effects (deadlines); else ``None``."""
    return request._socket if isinstance(request, StreamConnection) else None


def _traffic(request: object) -> tuple[int | None, int | None]:
    """Bytes in and out of *request* where they were counted (a connection with deadlines), else ``None``."""
    # (This module's own class: its clock is not private to this function.)
    clock = request._clock if isinstance(request, StreamConnection) else None
    if clock is None:
        return None, None
    return clock.received, clock.sent


@final
class Datagram(Generic[_AddrT_co]):
    """One received datagram (UDP or Unix datagram), from a peer at an address of type *A*.

    Nothing is sent back unless the handler calls :meth:`reply`.
    *server_address* is the address of the socket it arrived on (see
    :attr:`server_address`).
    """

    __slots__ = ("_address", "_data", "_server_address", "_socket")

    def __init__(
        self, data: bytes, sock: socket.socket, client_address: _AddrT_co, *, server_address: _AddrT_co | None = None
    ) -> None:
        # (An acceptor makes a datagram with _received(): keep it in step.)
        self._data = data
        self._socket = sock
        self._address = client_address
        self._server_address = server_address

    @property
    def data(self) -> bytes:
        """The payload, at most the transport's ``max_packet_size`` bytes."""
        return self._data

    @property
    def socket(self) -> socket.socket:
        """The server's socket, shared by every datagram; replies go out on it."""
        return self._socket

    @property
    def client_address(self) -> _AddrT_co:
        """The sender's address: ``(host, port)`` over IP, ``""`` from an unnamed Unix socket."""
        return self._address

    @property
    def server_address(self) -> _AddrT_co | None:
        """The address of the server socket the datagram arrived on; ``None`` if made without one.

        As for :attr:`StreamConnection.server_address`: one of the bound
        server's addresses, as the listener reports it.
        """
        return self._server_address

    def reply(self, data: Buffer) -> None:
        """Send *data* to the sender in one datagram.

        Raises:
            OSError: with ``errno.EDESTADDRREQ``, when the sender cannot be
                answered: a Unix datagram socket that is not bound to a name
                (``client_address == ""``) has no address to send to.  Any
                other ``OSError`` is one of ``sendto()``.
        """
        address = self._address
        if not address:
            raise OSError(
                errno.EDESTADDRREQ,
                f"cannot reply to a datagram from an unnamed Unix socket ({address!r}): "
                "the sender must bind its socket to a path to get replies",
            )
        # (No typing.cast here: it is a call, once per reply.)
        self._socket.sendto(data, address)  # type: ignore[call-overload]  # an address of the socket's family

    def close(self) -> None:
        """Nothing to release: the socket belongs to the server."""

    def __repr__(self) -> str:
        return f"<Datagram of {len(self._data)} bytes from {self._address!r}>"


def _received(data: bytes, sock: socket.socket, client_address: _AddrT, server_address: _AddrT) -> Datagram[_AddrT]:
    """``Datagram(data, sock, client_address, server_address=server_address)``, made as :func:`_accepted` is."""
    datagram: Datagram[_AddrT] = _new(Datagram)
    datagram._data = data
    datagram._socket = sock
    datagram._address = client_address
    datagram._server_address = server_address
    return datagram
