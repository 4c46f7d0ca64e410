"""The classic request handlers: ``BaseRequestHandler`` and its stream and datagram kinds."""

from __future__ import annotations

import io
import socket

from .._lite import TYPE_CHECKING
from .._socket_writer import SocketWriter

if TYPE_CHECKING:
    from typing import Any

    from .servers import BaseServer

__all__ = ("BaseRequestHandler", "DatagramRequestHandler", "StreamRequestHandler")


class BaseRequestHandler:
    """Handles one request: ``setup()``, ``handle()``, then ``finish()`` (always)."""

    def __init__(self, request: Any, client_address: Any, server: BaseServer) -> None:
        self.request = request
        self.client_address = client_address
        self.server = server
        self.setup()
        try:
            self.handle()
        finally:
            self.finish()

    def setup(self) -> None:
        """Prepare for :meth:`handle`."""

    def handle(self) -> None:
        """Serve the request."""

    def finish(self) -> None:
        """Clean up after :meth:`handle`, even if it raised."""


class StreamRequestHandler(BaseRequestHandler):
    """A stream handler with ``rfile`` (buffered reader) and ``wfile`` (writer)."""

    rbufsize = -1
    wbufsize = 0
    timeout: float | None = None
    disable_nagle_algorithm = False

    def setup(self) -> None:
        self.connection = conn = self.request
        if self.timeout is not None:
            conn.settimeout(self.timeout)
        if self.disable_nagle_algorithm:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        self.rfile: io.BufferedIOBase = conn.makefile("rb", self.rbufsize)
        # Unbuffered (the default): every write() is sent whole, at once.
        self.wfile: io.BufferedIOBase = (
            SocketWriter(conn) if self.wbufsize == 0 else conn.makefile("wb", self.wbufsize)
        )

    def finish(self) -> None:
        wfile = self.wfile
        if not wfile.closed:
            try:
                wfile.flush()
            except OSError:  # the peer went away (ECONNABORTED, EPIPE, ...)
                pass
        wfile.close()
        self.rfile.close()


class DatagramRequestHandler(BaseRequestHandler):
    """A datagram handler: ``rfile`` reads the packet, ``wfile`` collects the reply."""

    def setup(self) -> None:
        self.packet: bytes
        self.socket: socket.socket
        self.packet, self.socket = self.request
        self.rfile: io.BufferedIOBase = io.BytesIO(self.packet)
        self.wfile: io.BufferedIOBase = io.BytesIO()

    def finish(self) -> None:
        # (The wfile that setup() made; no cast() call: this runs per datagram.)
        reply = self.wfile.getvalue()  # type: ignore[attr-defined]
        self.socket.sendto(reply, self.client_address)
