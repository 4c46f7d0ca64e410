"""``SocketWriter``, the unbuffered ``wfile`` of a stream request (public in :mod:`servekit.connections`).

A module of its own so that ``servekit.classic``, whose
``StreamRequestHandler`` writes through it when ``wbufsize`` is 0, loads
neither the connections nor their deadline clock.
"""

from __future__ import annotations

import io

from ._lite import TYPE_CHECKING, final

if TYPE_CHECKING:
    import socket

    from typing_extensions import Buffer

    from ._deadline_io import _DeadlineSender

__all__ = ("SocketWriter",)


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
        # (A connection with deadlines puts its _DeadlineSender here.)
        self._sock: socket.socket | _DeadlineSender | None = sock

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


SocketWriter.__module__ = "servekit.connections"  # where it is public
