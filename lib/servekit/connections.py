"""The request values handed to handlers: a stream connection or a datagram."""

from __future__ import annotations

import errno
import io
import socket
from typing import TYPE_CHECKING, Generic, cast, final

from ._types import _AddrT_co

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from ._types import Address

__all__ = ("Datagram", "SocketWriter", "StreamConnection")


@final
class SocketWriter(io.BufferedIOBase):
    """A write-only file over a socket: every ``write()`` sends all its bytes at once.

    Unlike ``socket.makefile("wb", 0)``, a write is never partial, and unlike a
    buffered writer nothing waits in a buffer for a ``flush()``: an echo loop
    answers each line as it is written.
    """

    __slots__ = ("_sock",)

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        # None once closed: one check per write instead of IOBase's `closed` lookup.
        self._sock: socket.socket | None = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Buffer, /) -> int:
        sock = self._sock
        if sock is None:
            raise ValueError("I/O operation on closed SocketWriter")
        sock.sendall(data)
        if type(data) is bytes:  # the common case, without a memoryview
            return len(data)
        with memoryview(data) as view:
            return view.nbytes

    def fileno(self) -> int:
        sock = self._sock
        if sock is None:
            raise ValueError("I/O operation on closed SocketWriter")
        return sock.fileno()

    def close(self) -> None:
        self._sock = None
        super().close()


@final
class StreamConnection(Generic[_AddrT_co]):
    """One accepted stream connection (TCP or Unix stream), from a peer at an address of type *A*.

    ``rfile`` (a buffered reader) and ``wfile`` (a :class:`SocketWriter`) are
    made the first time a handler touches them, so a handler that uses the
    socket directly pays for neither.  The server closes them, and the
    connection, when the handler returns.
    """

    __slots__ = ("_address", "_rfile", "_socket", "_wfile")

    def __init__(self, sock: socket.socket, client_address: _AddrT_co) -> None:
        self._socket = sock
        self._address = client_address
        self._rfile: io.BufferedReader | None = None
        self._wfile: SocketWriter | None = None

    @property
    def socket(self) -> socket.socket:
        """The connected socket (blocking, no timeout)."""
        return self._socket

    @property
    def client_address(self) -> _AddrT_co:
        """The peer's address: ``(host, port)`` over IP, ``""`` from an unnamed Unix socket."""
        return self._address

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


@final
class Datagram(Generic[_AddrT_co]):
    """One received datagram (UDP or Unix datagram), from a peer at an address of type *A*.

    Nothing is sent back unless the handler calls :meth:`reply`.
    """

    __slots__ = ("_address", "_data", "_socket")

    def __init__(self, data: bytes, sock: socket.socket, client_address: _AddrT_co) -> None:
        self._data = data
        self._socket = sock
        self._address = client_address

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
        self._socket.sendto(data, cast("Address", address))

    def close(self) -> None:
        """Nothing to release: the socket belongs to the server."""

    def __repr__(self) -> str:
        return f"<Datagram of {len(self._data)} bytes from {self._address!r}>"
