"""Acceptors: how one request comes off a listening socket and how it is released."""

from __future__ import annotations

import logging
import socket
import sys
import time
from typing import Final, Generic, cast, final

import attrs

from ._types import _AddrT
from ._validate import int_in_range
from .abc import Acceptor
from .connections import Datagram, StreamConnection, _accepted, _received

__all__ = ("Acceptor", "DatagramAcceptor", "StreamAcceptor")

# On Linux an accepted socket never inherits O_NONBLOCK from the listener; on
# the BSDs and macOS it does, and the handler expects a blocking socket.
_RESET_BLOCKING: Final = not sys.platform.startswith("linux")

log: Final = logging.getLogger("servekit.server")

#: The default largest datagram, in bytes (``socketserver.UDPServer.max_packet_size``).
MAX_PACKET_SIZE: Final = 8192

check_max_packet_size: Final = int_in_range("max_packet_size", 1, 65535)
"""The check of a ``max_packet_size`` option."""

#: Seconds between two reports of dropped, over-long datagrams.
DROP_REPORT_INTERVAL: Final = 10.0


def peer_address(address: object) -> object:
    """*address* as servekit reports it, from what ``accept()``/``recvfrom()`` gave.

    An IPv6 ``(host, port, flowinfo, scope_id)`` becomes ``(host, port)``,
    with a non-zero scope kept in the host (``"fe80::1%2"``); an unnamed Unix
    datagram sender (``None``) becomes ``""``, as an unnamed Unix stream peer
    already is.  Anything else is returned as it is.
    """
    if address is None:
        return ""
    if isinstance(address, tuple) and len(address) == 4:
        host, port, _flowinfo, scope_id = address
        return (f"{host}%{scope_id}" if scope_id else host, port)
    return address


class _ListenerAddress(Generic[_AddrT]):
    """The address of an acceptor's listening socket, learnt on its first accept (one per listener).

    Read per request as ``holder.address or holder.learn(listener)``, and
    given to the request as its ``server_address``.  (No bound socket has an
    empty address, which would only be asked again.)
    """

    __slots__ = ("address",)

    def __init__(self) -> None:
        self.address: _AddrT | None = None

    def learn(self, listener: socket.socket) -> _AddrT:
        """Ask *listener* its address (as a transport reports the address it bound), and keep it."""
        address = self.address = cast("_AddrT", peer_address(listener.getsockname()))
        return address


@final
@attrs.frozen
class StreamAcceptor(Generic[_AddrT]):
    """``accept()`` a connection; release it with a FIN and a close.

    With *convert_address* (IPv6 listeners) the peer's address is reported as
    :func:`peer_address` says.  Each connection's
    :attr:`~servekit.StreamConnection.server_address` is the listener's
    address, which the acceptor asks the listener once, on its first accept:
    an acceptor serves one listening socket (a server asks the transport for
    an acceptor per listener).
    """

    convert_address: bool = False
    _where: _ListenerAddress[_AddrT] = attrs.field(factory=_ListenerAddress, init=False, eq=False, repr=False)

    def accept(self, listener: socket.socket, /) -> StreamConnection[_AddrT]:
        sock, address = listener.accept()
        if _RESET_BLOCKING:
            sock.setblocking(True)
        if self.convert_address:
            address = peer_address(address)
        return _accepted(sock, address, self._where.address or self._where.learn(listener))

    def release(self, request: StreamConnection[_AddrT], /) -> None:
        request.close()

    def discard(self, request: StreamConnection[_AddrT], /) -> None:
        request.socket.close()


class _DropReport:
    """How many over-long datagrams were dropped since the last report (one per listener)."""

    __slots__ = ("dropped", "next_report")

    def __init__(self) -> None:
        self.dropped = 0
        self.next_report = 0.0


@final
@attrs.frozen
class DatagramAcceptor(Generic[_AddrT]):
    """``recvfrom()`` one datagram of at most *max_packet_size* bytes; nothing to release.

    A longer datagram is not handed to the handler cut short: it is dropped
    and reported on the ``servekit.server`` logger (a warning for the first,
    then at most one every :data:`DROP_REPORT_INTERVAL` seconds, counting the
    drops in between).  With *convert_address* (IPv6 and Unix datagram
    sockets) the sender's address is reported as :func:`peer_address` says.
    Each datagram's :attr:`~servekit.Datagram.server_address` is the
    socket's address, as for :class:`StreamAcceptor` (one acceptor per
    socket).
    """

    max_packet_size: int = attrs.field(default=MAX_PACKET_SIZE, validator=check_max_packet_size)
    convert_address: bool = False
    _report: _DropReport = attrs.field(factory=_DropReport, init=False, eq=False, repr=False)
    _where: _ListenerAddress[_AddrT] = attrs.field(factory=_ListenerAddress, init=False, eq=False, repr=False)

    def accept(self, listener: socket.socket, /) -> Datagram[_AddrT]:
        limit = self.max_packet_size
        # One byte more than the limit tells a datagram of exactly the limit
        # from a longer one, which the kernel would cut without a word.
        data, address = listener.recvfrom(limit + 1)
        if self.convert_address:
            address = peer_address(address)
        if len(data) > limit:
            self._dropped(listener, address)
            raise BlockingIOError("an over-long datagram was dropped: no request after all")
        return _received(data, listener, address, self._where.address or self._where.learn(listener))

    def _dropped(self, listener: socket.socket, address: object) -> None:
        report = self._report
        report.dropped += 1
        now = time.monotonic()
        if now < report.next_report:
            return
        log.warning(
            "dropped %d datagram(s) longer than max_packet_size=%d (the latest from %r) on %r",
            report.dropped,
            self.max_packet_size,
            address,
            listener.getsockname(),
        )
        report.dropped = 0
        report.next_report = now + DROP_REPORT_INTERVAL

    def release(self, request: Datagram[_AddrT], /) -> None:
        pass

    def discard(self, request: Datagram[_AddrT], /) -> None:
        pass
