"""The classic ``socketserver`` classes, driven by servekit's serve loop and dispatchers.

The public namespace is :mod:`servekit.classic`; this module holds the real
classes.  They keep the standard library's shape -- template methods that a
subclass overrides -- and delegate the machinery to the core:

* the one serve loop (:class:`servekit._loop.ServeLoop`) runs ``serve_forever``
  and ``handle_request``; a small private driver hands it the server's own
  methods (``_handle_request_noblock``, ``service_actions``) at the start of
  every run, and those call the public hooks (``get_request``,
  ``verify_request``, ``process_request``, ``handle_error``,
  ``shutdown_request``, ...) on the instance, so overrides take effect;
* ``ThreadingMixIn`` hands each request to the core's thread workers, and
  ``ForkingMixIn`` forks through the core's child workers (which track,
  limit and reap the children), both configured from the instance's class
  attributes when a request arrives.

Where the classic behaviour is a defect with no documented purpose the loop
does better (``shutdown()`` returns at once, ``shutdown()`` before
``serve_forever()`` neither deadlocks nor poisons the next loop, ``accept()``
failing for lack of resources backs off instead of spinning, closing the
server stops a loop running in another thread, bind errors name the address).
"""

from __future__ import annotations

import io
import os
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Final, cast

from ._loop import Hooks, ServeLoop, accept_failed
from ._validate import int_in_range
from ._workers import ChildWorkers, Job, ThreadWorkers
from .connections import SocketWriter

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

# Only what ``socketserver`` itself needs is imported here (no attrs, no
# logging): a forking server copies every page of the process for each
# request, so the adapter's own footprint is a cost.

#: The logger accept() failures are reported on (servekit._loop reports
#: through logging only if the program loaded it, else on stderr as logging's
#: last resort would: importing it needs fds, which may have run out).
_LOGGER: Final = "servekit.classic"

_check_max_children: Final = int_in_range("max_children", 1)

#: ``serve_forever(poll_interval=None)`` (classic: wait without a limit) waits
#: this long between service actions; ``shutdown()`` never waits for it.
_LONGEST_POLL: Final = 3600.0
#: A zero or negative poll interval (classic: poll without waiting).
_SHORTEST_POLL: Final = 0.001

_state_lock: Final = threading.Lock()


class _State:
    """What one classic server keeps besides its public attributes."""

    __slots__ = ("children", "driver", "loop", "threads", "workers")

    def __init__(self, server: BaseServer) -> None:
        self.driver = _Driver(server)
        self.loop = ServeLoop(self.driver)
        # The mix-ins' workers, made at the first request and reconfigured
        # from the class attributes at every one.
        self.workers: ThreadWorkers | None = None
        self.children: ChildWorkers | None = None
        # Request threads of ThreadingMixIn while their job runs.
        self.threads: set[threading.Thread] = set()


def _state(server: BaseServer) -> _State:
    state: _State | None = server.__dict__.get("_servekit_state")
    if state is None:
        with _state_lock:
            state = server.__dict__.get("_servekit_state")
            if state is None:
                state = server.__dict__["_servekit_state"] = _State(server)
    return state


def _describe(server: BaseServer) -> str:
    return f"{type(server).__name__} on {getattr(server, 'server_address', '?')!r}"


class _Driver:
    """The serve loop's driver and the dispatchers' host for one classic server.

    A separate object, so the server's own namespace holds only the classic
    names (a subclass may define anything else without clashing).
    """

    __slots__ = ("_server",)

    def __init__(self, server: BaseServer) -> None:
        self._server = server

    def fileno(self) -> int:
        """The server's ``fileno()``, or ``-1`` when its socket is closed."""
        fileno: Callable[[], int] = getattr(self._server, "fileno")
        try:
            return fileno()
        except (OSError, ValueError):
            return -1

    # -- servekit._loop.Driver --------------------------------------------

    def loop_hooks(self) -> Hooks:
        # The hooks are the server's own methods, looked up once per run (as
        # the standard library registers the server once per serve_forever).
        server = self._server
        return Hooks(
            self.fileno(),
            server._handle_request_noblock,
            server.service_actions,
            server._servekit_capacity(),
        )

    # -- servekit.dispatchers.WorkerHost ----------------------------------

    def close_inherited(self) -> None:
        # Classic forked children keep the listening socket, as the
        # standard library's do (a datagram child replies on it).
        pass

    def worker_failed(self, exc: BaseException, /) -> None:
        # Classic request threads let SystemExit & co. end the thread, where
        # threading.excepthook sees them; the server goes on serving.
        raise exc


# -- servers ------------------------------------------------------------------


class BaseServer:
    """The base of every classic server: the serve loop and the request hooks.

    ``RequestHandlerClass(request, client_address, server)`` is instantiated
    for each request.  A subclass provides ``fileno()`` and ``get_request()``.
    """

    timeout: float | None = None

    def __init__(self, server_address: Any, RequestHandlerClass: Callable[..., Any]) -> None:
        self.server_address = server_address
        self.RequestHandlerClass = RequestHandlerClass
        _state(self)

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
        _state(self).loop.serve_forever(interval)

    def shutdown(self) -> None:
        """Stop the :meth:`serve_forever` loop and wait until it has returned.

        Returns at once when the loop is waiting.  With no loop running it
        returns at once too, except that a thread already started with this
        server's ``serve_forever`` as its target stops as soon as it starts.
        """
        _state(self).loop.shutdown(self.serve_forever)

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
        if _state(self).loop.handle_request(timeout):
            return None
        if _state(self).driver.fileno() < 0:
            raise ValueError(f"{_describe(self)}: the server socket is closed")
        return self.handle_timeout()

    def _handle_request_noblock(self) -> None:
        """Take one request off the ready socket and process it (classic order)."""
        # get_request() is the subclass's: BaseServer, like the standard
        # library's, does not define it.
        get_request: Callable[[], tuple[Any, Any]] = getattr(self, "get_request")
        try:
            request, client_address = get_request()
        except OSError as exc:
            self._servekit_accept_failed(exc)
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
        """Handle the request in this thread, then shut it down."""
        self.finish_request(request, client_address)
        self.shutdown_request(request)

    def server_close(self) -> None:
        """Clean up; stops a ``serve_forever`` running in another thread."""
        _state(self).loop.stop()

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Instantiate ``RequestHandlerClass``, which handles the request."""
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
        """The serve loop's capacity hook (see servekit._loop.Hooks): none, never saturated."""
        return None

    def _servekit_accept_failed(self, exc: OSError) -> None:
        # Resource exhaustion backs off (the loop reports the episode once);
        # other errors are ignored, as the standard library does.
        _state(self).loop.back_off(accept_failed(exc, "get_request()", _describe(self), _LOGGER))


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
        _state(self).loop.stop()
        self.socket.close()

    def fileno(self) -> int:
        """The server socket's file descriptor."""
        return self.socket.fileno()

    def get_request(self) -> tuple[Any, Any]:
        """Accept a connection: ``(socket, client_address)``."""
        return self.socket.accept()

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


# The mix-ins are only ever used in front of a BaseServer: to the type
# checker they derive from it (so ``self`` has the server's methods), at run
# time from object (so the MRO is the standard library's).
if TYPE_CHECKING:
    _MixInBase = BaseServer
else:
    _MixInBase = object


# -- mix-ins ------------------------------------------------------------------


class ThreadingMixIn(_MixInBase):
    """Handle each request in a new thread (servekit's ``threaded()`` dispatcher)."""

    daemon_threads = False
    block_on_close = True

    @property
    def _threads(self) -> list[threading.Thread]:
        """The request threads running now (a snapshot)."""
        return [t for t in list(_state(self).threads) if t.is_alive()]

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Handle the request in the new thread; errors go to ``handle_error``."""
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start a thread for the request."""
        self._servekit_workers().dispatch(
            Job(partial(self._servekit_run, request, client_address), partial(self.close_request, request))
        )

    def _servekit_workers(self) -> ThreadWorkers:
        """The server's thread workers, configured from the class attributes now."""
        state = _state(self)
        daemon = bool(self.daemon_threads)
        block = bool(self.block_on_close)
        workers = state.workers
        if workers is None:
            workers = state.workers = ThreadWorkers(state.driver, daemon, block)
        else:
            workers.daemon = daemon
            workers.block_on_close = block
        return workers

    def _servekit_run(self, request: Any, client_address: Any) -> None:
        threads = _state(self).threads
        me = threading.current_thread()
        threads.add(me)
        try:
            self.process_request_thread(request, client_address)
        finally:
            threads.discard(me)

    def server_close(self) -> None:
        """Close the server, then wait for request threads as ``block_on_close`` says."""
        super().server_close()
        if _state(self).workers is not None:
            self._servekit_workers().close()


if hasattr(os, "fork"):

    class ForkingMixIn(_MixInBase):
        """Handle each request in a new process (servekit's ``forked()`` dispatcher)."""

        timeout: float | None = 300
        active_children: set[int] | None = None
        max_children = 40
        block_on_close = True

        def collect_children(self, *, blocking: bool = False) -> None:
            """Reap the children that have exited; with *blocking*, wait for all of them."""
            children = _state(self).children
            if children is not None:
                children.reap(block=blocking)

        def handle_timeout(self) -> None:
            """Reap children after ``timeout`` seconds without a request."""
            self.collect_children()

        def service_actions(self) -> None:
            """Reap children at every wake-up of the serve loop."""
            self.collect_children()

        def process_request(self, request: Any, client_address: Any) -> None:
            """Fork a child that handles the request; the parent closes its copy."""
            # The core's child workers fork, track, limit and reap; the request
            # itself runs here, in the classic order, with as few calls as the
            # standard library makes: after a fork every page either process
            # writes to is copied, so each extra call costs more than its time.
            children = self._servekit_children()
            if children.fork():
                active = self.active_children
                if active is not children.pids:
                    # The classic attribute is the workers' own live set of
                    # pids; a set the program put there itself is adopted.
                    if active is None:
                        self.active_children = children.pids
                    else:
                        active |= children.pids
                        children.pids = active
                self.close_request(request)
                return
            status = 1  # until the handler has returned
            try:
                try:
                    self.finish_request(request, client_address)
                    status = 0
                except Exception:
                    self.handle_error(request, client_address)
                finally:
                    self.shutdown_request(request)
            finally:
                os._exit(status)

        def _servekit_children(self) -> ChildWorkers:
            """The server's child workers, configured from the class attributes now."""
            state = _state(self)
            limit: int = self.max_children
            block = bool(self.block_on_close)
            children = state.children
            if children is None:
                _check_max_children(None, None, limit)
                # socketserver's children neither flush stdio nor freeze the
                # collector, and each costs page copies in every child.
                children = state.children = ChildWorkers(
                    state.driver, limit, block, flush_stdio=False, freeze_gc=False
                )
            else:
                if limit != children.max_children:
                    _check_max_children(None, None, limit)
                    children.max_children = limit
                children.block_on_close = block
            return children

        def _servekit_capacity(self) -> Callable[[], Sequence[int] | None] | None:
            # At max_children the loop waits for a child to exit instead of
            # accepting (and instead of blocking in waitpid(-1)).
            return self._servekit_children().capacity

        def server_close(self) -> None:
            """Close the server, then reap children (waiting, if ``block_on_close``)."""
            super().server_close()
            self.collect_children(blocking=bool(self.block_on_close))


# -- request handlers -----------------------------------------------------------


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
        reply = cast(io.BytesIO, self.wfile).getvalue()
        self.socket.sendto(reply, self.client_address)

