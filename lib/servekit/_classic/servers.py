"""The classic servers: ``BaseServer``, ``TCPServer``, ``UDPServer`` and the Unix ones.

Real classes with ``socketserver``'s template methods; the loop and the
workers behind them are servekit's (see :mod:`servekit._classic.route`).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Sequence

from .._lite import TYPE_CHECKING
from . import route as _route
from .route import Route, accept, describe, handshake

if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any, Final

    from typing_extensions import Self

__all__ = ("BaseServer", "TCPServer", "UDPServer", "UnixDatagramServer", "UnixStreamServer")


#: ``serve_forever(poll_interval=None)`` (classic: wait without a limit) waits
#: this long between service actions; ``shutdown()`` never waits for it.
_LONGEST_POLL: Final = 3600.0
#: A zero or negative poll interval (classic: poll without waiting).
_SHORTEST_POLL: Final = 0.001


class BaseServer:
    """The base of every classic server: the serve loop and the request hooks.

    ``RequestHandlerClass(request, client_address, server)`` is instantiated
    for each request.  A subclass provides ``fileno()`` and ``get_request()``.
    """

    timeout: float | None = None

    #: The server's route: its loop and workers.  An instance attribute only:
    #: a class attribute of the same name (a descriptor making it on first
    #: use, say) would keep every ``self._servekit`` from being specialized
    #: by the interpreter, a generic lookup at each request.
    _servekit: Route

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        # Made here, not in __init__: a subclass whose __init__ skips ours
        # still has one.
        server = super().__new__(cls)
        server._servekit = Route(server)
        return server

    def __init__(self, server_address: Any, RequestHandlerClass: Callable[..., Any]) -> None:
        self.server_address = server_address
        self.RequestHandlerClass = RequestHandlerClass

    def server_activate(self) -> None:
        """Called by the constructor after binding; a stream server listens here."""

    def serve_forever(self, poll_interval: float | None = 0.5) -> None:
        """Handle requests until :meth:`shutdown`.

        *poll_interval* bounds the time between calls of
        :meth:`service_actions`; ``shutdown()`` does not wait for it.
        """
        if poll_interval is None:
            interval = _LONGEST_POLL
        else:
            interval = poll_interval if poll_interval > 0 else _SHORTEST_POLL
        self._servekit.loop.serve_forever(interval)

    def shutdown(self) -> None:
        """Stop the :meth:`serve_forever` loop and wait until it has returned.

        Returns at once when the loop is waiting.  With no loop running it
        returns at once too, except that a thread already started with this
        server's ``serve_forever`` as its target stops as soon as it starts.
        """
        self._servekit.loop.shutdown(self.serve_forever)

    def service_actions(self) -> None:
        """Called after every wake-up of the :meth:`serve_forever` loop."""

    def handle_request(self) -> None:
        """Wait for one request, up to the timeout, and handle it.

        The timeout is the smaller of ``self.timeout`` and the socket's own
        timeout; when it passes with no request, :meth:`handle_timeout` runs.
        """
        timeout = self.timeout
        sock: socket.socket | None = getattr(self, "socket", None)
        if sock is not None:
            sock_timeout = sock.gettimeout()
            if sock_timeout is not None:
                timeout = sock_timeout if timeout is None else min(timeout, sock_timeout)
        route = self._servekit
        if route.loop.handle_request(timeout):
            return None
        if route.fileno() < 0:
            raise ValueError(f"{describe(self)}: the server socket is closed")
        return self.handle_timeout()

    def _handle_request_noblock(self) -> None:
        """Take one request off the ready socket and process it (classic order)."""
        # get_request() is the subclass's: BaseServer, like the standard
        # library's, does not define it.
        try:
            request, client_address = self.get_request()  # type: ignore[attr-defined]
        except OSError as exc:
            self._servekit.accept_failed(exc)
            return
        if self.verify_request(request, client_address):
            try:
                self.process_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
                self.shutdown_request(request)
            except BaseException:
                self.shutdown_request(request)
                raise
        else:
            self.shutdown_request(request)

    def handle_timeout(self) -> None:
        """Called when :meth:`handle_request` times out."""

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Return ``False`` to drop the request unhandled."""
        return True

    def process_request(self, request: Any, client_address: Any) -> None:
        """Handle the request in this thread, then shut it down.

        A TLS request's handshake is done here first, bounded by the
        server's ``timeout`` (10 s when it is ``None``).
        """
        if _route.deferred:
            handshake(self, request)  # deferred by get_request(); see route.accept
        self.finish_request(request, client_address)
        self.shutdown_request(request)

    def server_close(self) -> None:
        """Clean up; stops a ``serve_forever`` running in another thread."""
        self._servekit.loop.stop()

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Instantiate ``RequestHandlerClass``, which handles the request."""
        if _route.deferred:
            # Done already unless process_request() is the program's own.
            handshake(self, request)
        self.RequestHandlerClass(request, client_address, self)

    def shutdown_request(self, request: Any) -> None:
        """Shut down and close one request."""
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        """Release one request."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Report an exception raised while handling a request (on stderr) and go on."""
        rule = "-" * 40
        print(rule, file=sys.stderr)
        print("Exception occurred during processing of request from", client_address, file=sys.stderr)
        failure = sys.exc_info()
        try:
            import traceback  # noqa: PLC0415 - only when an error is reported
        except OSError:
            # An import opens files; with no fd free (the handler may have
            # failed for that very reason) the interpreter's own printer,
            # which needs none, prints the traceback instead.
            sys.__excepthook__(*failure)
        else:
            traceback.print_exception(*failure)
        print(rule, file=sys.stderr)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.server_close()

    # -- private hooks of the adapter --------------------------------------

    def _servekit_capacity(self) -> Callable[[], Sequence[int] | None] | None:
        """The workers' capacity, as the loop asks it (see servekit._runtime.loop.Run): none here."""
        return None


class TCPServer(BaseServer):
    """A TCP server (and the base of every socket server)."""

    address_family: int = socket.AF_INET
    socket_type: int = socket.SOCK_STREAM
    request_queue_size: int = 5
    allow_reuse_address: bool = False
    allow_reuse_port: bool = False

    def __init__(
        self,
        server_address: Any,
        RequestHandlerClass: Callable[..., Any],
        bind_and_activate: bool = True,
    ) -> None:
        BaseServer.__init__(self, server_address, RequestHandlerClass)
        self.socket = socket.socket(self.address_family, self.socket_type)
        if bind_and_activate:
            try:
                self.server_bind()
                self.server_activate()
            except BaseException:
                self.server_close()
                raise

    def server_bind(self) -> None:
        """Set the reuse options the class attributes ask for, and bind."""
        sock = self.socket
        if self.allow_reuse_address and hasattr(socket, "SO_REUSEADDR"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.allow_reuse_port and hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(self.server_address)
        except OSError as exc:
            # Same exception type and errno; the message names the address.
            if exc.filename is None:
                exc.filename = self.server_address
            raise
        self.server_address = sock.getsockname()

    def server_activate(self) -> None:
        """Listen, with a backlog of ``request_queue_size``."""
        self.socket.listen(self.request_queue_size)

    def server_close(self) -> None:
        """Stop a loop serving in another thread and close the socket."""
        self._servekit.loop.stop()
        self.socket.close()

    def fileno(self) -> int:
        """The server socket's file descriptor."""
        return self.socket.fileno()

    def get_request(self) -> tuple[Any, Any]:
        """Accept a connection: ``(socket, client_address)``.

        From a TLS listener (an ``ssl.SSLSocket``) the connection is an
        ``SSLSocket`` whose handshake is left to where the request is handled
        (the request's thread or child, or ``process_request`` in this one),
        so that a silent client does not stall the serving thread.
        """
        sock = self.socket
        if type(sock) is socket.socket:
            return sock.accept()
        return accept(sock)

    def shutdown_request(self, request: Any) -> None:
        """Send FIN (even if a forked child still shares the socket), then close."""
        try:
            request.shutdown(socket.SHUT_WR)
        except OSError:  # the peer is gone already (ENOTCONN on some platforms)
            pass
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        """Close the connection."""
        request.close()


class UDPServer(TCPServer):
    """A UDP server: each datagram is a request ``(data, socket)``."""

    allow_reuse_address = False
    allow_reuse_port = False
    socket_type = socket.SOCK_DGRAM
    max_packet_size = 8192

    def get_request(self) -> tuple[Any, Any]:
        """Receive a datagram: ``((data, socket), client_address)``."""
        data, client_address = self.socket.recvfrom(self.max_packet_size)
        return (data, self.socket), client_address

    def server_activate(self) -> None:
        """Nothing to do: datagram sockets do not listen."""

    def shutdown_request(self, request: Any) -> None:
        """Nothing to shut down."""
        self.close_request(request)

    def close_request(self, request: Any) -> None:
        """Nothing to close: the socket is the server's."""


if hasattr(socket, "AF_UNIX"):

    class UnixStreamServer(TCPServer):
        """A Unix stream server; the address is a path."""

        address_family = socket.AF_UNIX

    class UnixDatagramServer(UDPServer):
        """A Unix datagram server; the address is a path."""

        address_family = socket.AF_UNIX
