"""Typeshed-style uses of servekit.classic that must type-check under --strict."""

from __future__ import annotations

import socket
import sys
from typing import Any

from typing_extensions import assert_type

import servekit.classic as socketserver


class Echo(socketserver.StreamRequestHandler):
    timeout = 5.0
    disable_nagle_algorithm = True

    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line)


class Shout(socketserver.DatagramRequestHandler):
    def handle(self) -> None:
        assert_type(self.packet, bytes)
        assert_type(self.socket, socket.socket)
        self.wfile.write(self.rfile.read().upper())


class Picky(socketserver.TCPServer):
    allow_reuse_address = True
    request_queue_size = 64

    def verify_request(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> bool:
        return bool(client_address[0] == "127.0.0.1")

    def handle_error(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
        pass

    def service_actions(self) -> None:
        pass


class ThreadedPicky(socketserver.ThreadingMixIn, Picky):
    daemon_threads = True
    block_on_close = False


def make_servers() -> None:
    with Picky(("127.0.0.1", 0), Echo) as server:
        assert_type(server, Picky)
        assert_type(server.socket, socket.socket)
        assert_type(server.fileno(), int)
        server.handle_request()
    with ThreadedPicky(("127.0.0.1", 0), Echo, bind_and_activate=False) as threaded:
        threaded.server_bind()
        threaded.server_activate()
        threaded.serve_forever(poll_interval=0.1)
        threaded.shutdown()
    udp = socketserver.ThreadingUDPServer(("::1", 0, 0, 0), Shout)
    assert_type(udp.get_request(), tuple[tuple[bytes, socket.socket], Any])
    assert_type(socketserver.UDPServer.max_packet_size, int)
    udp.server_close()
    if sys.platform != "win32":
        unix = socketserver.ThreadingUnixStreamServer("/tmp/echo.sock", Echo)
        unix.server_close()
        forking = socketserver.ForkingTCPServer(("127.0.0.1", 0), Echo)
        forking.max_children = 4
        assert_type(forking.active_children, set[int] | None)
        forking.collect_children(blocking=True)
        forking.server_close()
    if sys.version_info >= (3, 12) and sys.platform != "win32":
        socketserver.ForkingUnixDatagramServer("/tmp/echo.dgram", Shout).server_close()


def handler_factory(request: Any, client_address: Any, server: socketserver.TCPServer) -> Echo:
    return Echo(request, client_address, server)


socketserver.TCPServer(("127.0.0.1", 0), handler_factory).server_close()
