"""Mistakes with servekit.classic that mypy --strict must reject (with these codes)."""

from __future__ import annotations

import servekit.classic as socketserver


class Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline())


def instance_for_class(handler: Echo) -> None:
    # A handler instance where the class (a factory) is expected.
    socketserver.TCPServer(("127.0.0.1", 0), handler)  # type: ignore[arg-type]


# A wrong address type: a "host:port" string for an IP server.
socketserver.TCPServer("127.0.0.1:8080", Echo)  # type: ignore[arg-type]

# A port given as a string.
socketserver.UDPServer(("127.0.0.1", "8080"), Echo)  # type: ignore[arg-type]


class BadVerify(socketserver.TCPServer):
    # A hook with the wrong return type.
    def verify_request(self, request: object, client_address: object) -> str:  # type: ignore[override]
        return "yes"


class BadMixinOrder(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = "yes"  # type: ignore[assignment]


socketserver.TCPServer(("127.0.0.1", 0), Echo).serve_forever("fast")  # type: ignore[arg-type]

socketserver.TCPServer.request_queue_size = None  # type: ignore[assignment]

# handle_request() returns nothing (True/False would be a servekit-only API).
handled = socketserver.TCPServer(("127.0.0.1", 0), Echo).handle_request()  # type: ignore[func-returns-value]
