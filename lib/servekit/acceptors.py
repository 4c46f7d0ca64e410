"""Acceptors: how one request comes off a listening socket and how it is released."""

from __future__ import annotations

import socket
import sys
from typing import Final, Protocol, final

import attrs

from ._types import _ReqT
from ._validate import int_in_range
from .connections import Datagram, StreamConnection

__all__ = ("Acceptor", "DatagramAcceptor", "StreamAcceptor", "accept_stream", "receive_datagram")

# On Linux an accepted socket never inherits O_NONBLOCK from the listener; on
# the BSDs and macOS it does, and the handler expects a blocking socket.
_RESET_BLOCKING: Final = not sys.platform.startswith("linux")


class Acceptor(Protocol[_ReqT]):
    """**Protocol:** takes requests off a listening socket and releases them.

    Called by the serve loop's thread (``accept``, ``discard``) and by the
    worker that ran the handler (``release``).
    """

    def accept(self, listener: socket.socket, /) -> _ReqT:
        """Take one request off the non-blocking *listener*.

        Raises :class:`BlockingIOError` when nothing is waiting after all and
        other :class:`OSError` for failed accepts; the server handles both.
        """
        ...

    def release(self, request: _ReqT, /) -> None:
        """The handler is done with *request*: finish and close it."""
        ...

    def discard(self, request: _ReqT, /) -> None:
        """Drop this process's copy of *request*: another process handles it."""
        ...


@final
@attrs.frozen
class StreamAcceptor:
    """``accept()`` a connection; release it with a FIN and a close."""

    def accept(self, listener: socket.socket, /) -> StreamConnection:
        sock, address = listener.accept()
        if _RESET_BLOCKING:
            sock.setblocking(True)
        return StreamConnection(sock, address)

    def release(self, request: StreamConnection, /) -> None:
        request.close()

    def discard(self, request: StreamConnection, /) -> None:
        request.socket.close()


@final
@attrs.frozen
class DatagramAcceptor:
    """``recvfrom()`` one datagram of at most *max_packet_size* bytes; nothing to release."""

    max_packet_size: int = attrs.field(default=8192, validator=int_in_range("max_packet_size", 1, 65535))

    def accept(self, listener: socket.socket, /) -> Datagram:
        data, address = listener.recvfrom(self.max_packet_size)
        return Datagram(data, listener, address)

    def release(self, request: Datagram, /) -> None:
        pass

    def discard(self, request: Datagram, /) -> None:
        pass


def accept_stream() -> StreamAcceptor:
    """The acceptor of stream transports."""
    return StreamAcceptor()


def receive_datagram(max_packet_size: int = 8192) -> DatagramAcceptor:
    """The acceptor of datagram transports, reading datagrams of up to *max_packet_size* bytes."""
    return DatagramAcceptor(max_packet_size)
