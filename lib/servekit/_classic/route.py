"""The classic pipeline: ``socketserver``'s template methods as the stages of a request's route.

A classic server runs on the same loop and workers as a composed one; only
the stages differ.  On the loop's thread the intake source's callback is the
server's own ``_handle_request_noblock`` (``get_request`` -> ``verify_request``
-> ``process_request``).  ``ThreadingMixIn.process_request`` dispatches to
the core's thread workers, whose host here runs ``process_request_thread``
in the worker; ``ForkingMixIn.process_request`` forks through the core's
child workers (which track, limit and reap the children) and, as
``socketserver`` does, handles the request in the child itself
(``finish_request``, ``handle_error``, ``shutdown_request``).  Each stage is
looked up on the instance when it runs, so a subclass's overrides take
effect.

A TLS listener (an ``ssl.SSLSocket``, as ``http.server.HTTPSServer`` makes)
is accepted from without its handshake (:func:`accept`); the handshake is
the first step where the request is handled (:func:`handshake`), so a client
that connects and says nothing holds up its own worker, not the loop.

Only what ``socketserver`` itself needs is imported here (no attrs, no
logging until something is logged): a forking server copies every page of
the process for each request, so the adapter's own footprint is a cost.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable

from .._lite import TYPE_CHECKING
from .._runtime.loop import Loop, Run
from .._runtime.workers import ChildWorkers, ThreadWorkers

if TYPE_CHECKING:
    from typing import Any, Final, TypeAlias

    from .servers import BaseServer

    #: A classic request on its way to a worker: ``(request, client_address)``.
    Item: TypeAlias = tuple[Any, Any]

__all__ = ("HANDSHAKE_TIMEOUT", "Route", "ThreadRoute", "accept", "deferred", "describe", "handshake")

#: The logger accept() failures are reported on.
LOGGER: Final = "servekit.classic"

#: The longest a TLS handshake may take, in seconds, on a server whose
#: ``timeout`` is ``None`` (see :func:`handshake`).
HANDSHAKE_TIMEOUT: Final = 10.0


#: Whether :func:`accept` has left a TLS handshake to a request's handling
#: in this process.  Until it has, no request can need :func:`handshake`, and
#: the mix-ins do not call it (nor look at the request's type: in a forked
#: child, the look writes pages the child would otherwise share).
deferred = False


def describe(server: BaseServer) -> str:
    return f"{type(server).__name__} on {getattr(server, 'server_address', '?')!r}"


def _fileno(server: BaseServer) -> int:
    """The server's ``fileno()``, or ``-1`` when its socket is closed."""
    fileno: Callable[[], int] = getattr(server, "fileno")
    try:
        return fileno()
    except (OSError, ValueError):
        return -1


def accept(listener: socket.socket) -> tuple[socket.socket, Any]:
    """``listener.accept()``; on a TLS listener, without the TLS handshake.

    ``ssl.SSLSocket.accept()`` completes the handshake before it returns, in
    the thread that serves the listener: one client that connects and stays
    silent would stall every later one.  Here the connection is taken off the
    listener with the plain ``socket.accept()`` and wrapped for the
    listener's context without a handshake; the request is the
    ``SSLSocket`` that ``SSLSocket.accept()`` returns (same context,
    ``do_handshake_on_connect`` and ``suppress_ragged_eofs``) except that its
    handshake is still to come, done by :func:`handshake` where the request
    is handled.  A listener with ``do_handshake_on_connect=False`` is
    accepted from as usual: its handshake already waits for the first read.
    """
    ssl = sys.modules.get("ssl")  # nothing is an SSLSocket before ssl is loaded
    if ssl is None or not isinstance(listener, ssl.SSLSocket) or not listener.do_handshake_on_connect:
        return listener.accept()
    conn, address = socket.socket.accept(listener)
    try:
        request = listener.context.wrap_socket(
            conn, server_side=True, do_handshake_on_connect=False, suppress_ragged_eofs=listener.suppress_ragged_eofs
        )
    except BaseException:
        conn.close()
        raise
    # What SSLSocket.accept() sets; with the handshake not done (version() is
    # None) it is what handshake() looks for.  Nothing else reads it on an
    # accepted socket (only connect() does).
    request.do_handshake_on_connect = True
    global deferred
    deferred = True
    return request, address


def handshake(server: BaseServer, request: Any) -> None:
    """Complete the TLS handshake that :func:`accept` left to the request's handling.

    Does nothing unless *request* is a server-side ``ssl.SSLSocket`` that
    asks for its handshake on connect and has not had it (any other request
    returns at once, so calling this twice is harmless).  The handshake may
    take at most the server's ``timeout`` -- :data:`HANDSHAKE_TIMEOUT`
    seconds when that is ``None`` -- or the socket's own timeout if it is
    shorter; the socket's timeout is then restored.  The bound matters for a
    server that handles requests in its serving thread: a silent client
    stalls it that long at most.  A failure (``ssl.SSLError``,
    ``TimeoutError``, another ``OSError``) is raised into the caller's error
    path, which reports it (``handle_error``) and shuts the request down.
    """
    ssl = sys.modules.get("ssl")
    if ssl is None or not isinstance(request, ssl.SSLSocket):
        return
    if not (request.do_handshake_on_connect and request.server_side) or request.version() is not None:
        return
    bound = server.timeout
    if bound is None or bound <= 0:
        bound = HANDSHAKE_TIMEOUT
    own = request.gettimeout()
    request.settimeout(bound if not own or own > bound else own)
    try:
        request.do_handshake()
    finally:
        request.settimeout(own)


class Route:
    """One classic server's loop, and the mix-ins' workers (made at their first request)."""

    __slots__ = ("children", "loop", "server", "threads")

    def __init__(self, server: BaseServer) -> None:
        self.server = server
        self.loop = Loop(self)
        self.threads: ThreadWorkers[Item] | None = None
        self.children: ChildWorkers[Item] | None = None

    def loop_run(self) -> Run:
        # The stages are the server's own methods, looked up once per run (as
        # the standard library registers the server once per serve_forever).
        server = self.server
        fd = _fileno(server)
        return Run({fd: server._handle_request_noblock}, server.service_actions, server._servekit_capacity())

    def fileno(self) -> int:
        return _fileno(self.server)

    def accept_failed(self, exc: OSError) -> None:
        """``get_request()`` failed: the loop backs off (resource exhaustion) or goes on."""
        self.loop.accept_failed(exc, "get_request()", describe(self.server), LOGGER)

    def thread_workers(self, daemon: bool, block_on_close: bool) -> ThreadWorkers[Item]:
        """The thread workers, configured from the class attributes now."""
        workers = self.threads
        if workers is None:
            workers = self.threads = ThreadWorkers(ThreadRoute(self.server), daemon, block_on_close)
        else:
            workers.daemon = daemon
            workers.block_on_close = block_on_close
        return workers


class ThreadRoute:
    """``ThreadingMixIn``'s stage in the worker thread: ``process_request_thread``."""

    __slots__ = ("_server",)

    def __init__(self, server: BaseServer) -> None:
        self._server = server

    def run(self, item: Item, /) -> None:
        self._server.process_request_thread(*item)  # type: ignore[attr-defined]

    def discard(self, item: Item, /) -> None:
        pass

    def drop(self, item: Item, /) -> None:
        self._server.shutdown_request(item[0])

    def close_inherited(self) -> None:
        pass

    def child_exited(self, pid: int, status: int, /) -> None:
        pass

    def worker_failed(self, exc: BaseException, /) -> None:
        # Classic request threads let SystemExit & co. end the thread, where
        # threading.excepthook sees them; the server goes on serving.
        raise exc
