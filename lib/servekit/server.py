"""The server: a frozen description (:class:`Server`) and its bound handle (:class:`Bound`)."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from functools import partial
from types import TracebackType
from typing import Final, Generic, TypeVar, cast, final

import attrs
from typing_extensions import Self

from ._loop import ACCEPT_BACKOFF, Hooks, ServeLoop, accept_failed
from ._types import IPAddress, Predicate, _AddrT
from ._validate import seconds
from .abc import BoundServer, Dispatcher, Handler, Job, Request, Transport, Workers
from .dispatchers import Inline
from .errors import ServerClosedError
from .handlers import check_handler

__all__ = ("ACCEPT_BACKOFF", "Bound", "BoundServer", "ErrorHandler", "Server", "server")

log: Final = logging.getLogger("servekit.server")

_ReqT = TypeVar("_ReqT", bound=Request[object])

ErrorHandler = Callable[[_ReqT, Exception], object]
"""Called with the request and the exception when a handler raises."""

_INLINE: Final = Inline()

_check_poll_interval_value = seconds("poll_interval", positive=True)


def _check_poll_interval(value: float) -> None:
    _check_poll_interval_value(None, None, value)


@final
@attrs.frozen(kw_only=True)
class Server(Generic[_ReqT, _AddrT]):
    """A server description: what to listen on (at an address of type *A*), what to run on each request *R*.

    Making one does no I/O; :meth:`bind` does.  Variants are made with
    :func:`attrs.evolve`.  See :func:`server` for the fields.
    """

    transport: Transport[_ReqT, _AddrT]
    handler: Handler[_ReqT] = attrs.field(eq=False, validator=check_handler)
    dispatcher: Dispatcher = _INLINE
    verify: Predicate[_AddrT] | None = attrs.field(default=None, eq=False)
    on_error: ErrorHandler[_ReqT] | None = attrs.field(default=None, eq=False)
    timeout: float | None = attrs.field(default=None, validator=seconds("timeout"))
    service_actions: Callable[[], object] | None = attrs.field(default=None, eq=False)

    def bind(self) -> Bound[_ReqT, _AddrT]:
        """Create, bind and listen; return the handle that serves.

        Raises:
            servekit.BindError: the socket could not be created, bound or
                listened on; the message names the transport and the address.
        """
        return Bound(self)


def server(
    transport: Transport[_ReqT, _AddrT],
    handler: Handler[_ReqT],
    *,
    dispatcher: Dispatcher = _INLINE,
    verify: Predicate[_AddrT] | None = None,
    on_error: ErrorHandler[_ReqT] | None = None,
    timeout: float | None = None,
    service_actions: Callable[[], object] | None = None,
) -> Server[_ReqT, _AddrT]:
    """Describe a server.

    The transport decides the request type *R* and the address type *A*; the
    handler, *verify* and *on_error* are checked against them, so a datagram
    handler on a stream transport is a type error and a ``lambda`` handler's
    parameter is inferred.

    Args:
        transport: the listening socket, such as ``tcp("127.0.0.1", 0)``.  It
            decides the request type (``StreamConnection`` or ``Datagram``)
            and the address type (``(host, port)`` or a Unix path) that the
            handler, *verify* and *on_error* are checked against; a mismatch
            is a type error.
        handler: called with each request; a plain function.  An ``async
            def`` function is refused with :class:`TypeError` (its coroutine
            would never run; a type checker cannot tell it from a plain
            function, whose return value is ignored).
        dispatcher: where handlers run: ``inline()`` (default), ``threaded()``,
            ``forked()`` or your own :class:`~servekit.Dispatcher`.
        verify: called with each client address before dispatch; a request it
            returns ``False`` for is released unhandled.
        on_error: called with the request and the exception when the handler
            (or *verify*) raises an ``Exception``; by default the error is
            logged on the ``servekit.server`` logger.  Either way the request
            is released and the server goes on serving.
        timeout: how long :meth:`Bound.handle_request` waits (``None``: no limit).
        service_actions: called after every wake-up of ``serve_forever`` (at
            least every ``poll_interval`` seconds), in the serving thread.

    Raises:
        TypeError, ValueError: an option is of the wrong type or value.
    """
    return Server(
        transport=transport,
        handler=handler,
        dispatcher=dispatcher,
        verify=verify,
        on_error=on_error,
        timeout=timeout,
        service_actions=service_actions,
    )


@final
class Bound(Generic[_ReqT, _AddrT]):
    """A bound, listening server at an address of type *A*: serves, shuts down, closes.

    Made by :meth:`Server.bind`.  A context manager: leaving the ``with``
    block closes it.

    Threading: ``serve_forever`` runs in one thread at a time; ``shutdown``
    and ``close`` may be called from any thread, including from a handler.
    """

    __slots__ = (
        "__weakref__",
        "_accept",
        "_close_lock",
        "_closed",
        "_discard",
        "_dispatch",
        "_fatal",
        "_handler",
        "_listener",
        "_loop",
        "_on_error",
        "_release",
        "_run",
        "_service",
        "_sock",
        "_stream",
        "_spec",
        "_verify",
        "_workers",
    )

    def __init__(self, spec: Server[_ReqT, _AddrT]) -> None:
        self._spec = spec
        acceptor = spec.transport.acceptor()
        self._listener = spec.transport.listen()
        self._sock = sock = self._listener.socket
        self._stream = sock.type == socket.SOCK_STREAM
        self._closed = False
        self._close_lock = threading.Lock()
        self._fatal: BaseException | None = None
        try:
            sock.setblocking(False)
            self._workers: Workers = spec.dispatcher.start(self)
        except BaseException:
            self._listener.close()
            raise
        # Hot-path callables, looked up once.
        self._accept = acceptor.accept
        self._release = acceptor.release
        self._discard = acceptor.discard
        self._dispatch = self._workers.dispatch
        self._handler = spec.handler
        # The transport gives requests from peers of its address type A: the
        # type checker cannot see that link between R and A.
        self._verify = cast("Predicate[object] | None", spec.verify)
        self._on_error = spec.on_error
        self._service = spec.service_actions
        self._run = self._handle
        self._loop = ServeLoop(self)

    # -- public ---------------------------------------------------------------

    @property
    def address(self) -> _AddrT:
        """The address the server is bound to (port 0 already resolved).

        ``(host, port)`` on IP transports, so ``host, port = bound.address``
        works; the path (or abstract name) on Unix ones.
        """
        return self._listener.address

    @property
    def host(self: Bound[_ReqT, IPAddress]) -> str:
        """The bound host of an IP server (an IPv6 scope, if any, as ``%scope_id``).

        Only IP servers have one: on a Unix server this is a type error, and
        a :class:`TypeError` at run time.
        """
        return self._ip_address()[0]

    @property
    def port(self: Bound[_ReqT, IPAddress]) -> int:
        """The bound port of an IP server (the real one when 0 was asked for).

        Only IP servers have one: on a Unix server this is a type error, and
        a :class:`TypeError` at run time.
        """
        return self._ip_address()[1]

    @property
    def server(self) -> Server[_ReqT, _AddrT]:
        """The description this handle was bound from."""
        return self._spec

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def fileno(self) -> int:
        """The listening socket's file descriptor (``-1`` once closed)."""
        return self._sock.fileno()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve requests until :meth:`shutdown` or :meth:`close`.

        *poll_interval* bounds how long the loop sleeps before running service
        actions; :meth:`shutdown` does not wait for it.

        Error handling: a handler's ``Exception`` never gets here.  A
        ``SystemExit`` or ``KeyboardInterrupt`` raised by a handler -- in the
        serving thread (``inline``) or in a worker thread (``threaded``) --
        stops the loop, closes the server (nothing stays listening unserved)
        and is re-raised here.  The same holds for any exception that leaves
        the loop, such as ``KeyboardInterrupt`` from Ctrl-C.  In a forked child
        such an exception only ends that child (exit status 1).

        Raises:
            servekit.ServerClosedError: the server is closed.
            RuntimeError: ``serve_forever`` is already running in another thread.
        """
        self._check_open()
        _check_poll_interval(poll_interval)
        try:
            self._loop.serve_forever(poll_interval)
        except BaseException:
            self.close()
            raise
        self._raise_fatal()

    def handle_request(self) -> bool:
        """Wait for one request (up to the server's ``timeout``) and handle it.

        Returns ``True`` if a request was handled, ``False`` if the timeout
        passed first.  Exceptions propagate as for :meth:`serve_forever`.
        """
        self._check_open()
        try:
            handled = self._loop.handle_request(self._spec.timeout)
        except BaseException:
            self.close()
            raise
        self._raise_fatal()
        return handled

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` and wait until it has returned.

        Returns at once: it wakes the loop rather than waiting for a poll
        interval.  With nothing serving it does nothing -- the next
        ``serve_forever`` serves normally -- except that a thread already
        started with this server's ``serve_forever`` as its target, which has
        not reached the loop yet, stops as soon as it does.  Called from a
        handler in the serving thread it only asks the loop to stop.
        """
        self._loop.shutdown(self.serve_forever)

    def close(self) -> None:
        """Stop serving, close the socket, release the workers.  Idempotent.

        A running ``serve_forever`` (in another thread) is stopped first.  A
        Unix socket file the server created is removed.  Running handlers are
        waited for as the dispatcher's ``block_on_close`` says.
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._loop.shutdown()
        self._listener.close()
        self._workers.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "serving" if self._loop.serving else "idle"
        return f"<servekit.Bound {self._listener.name} {state}>"

    # -- the serve loop's driver (see servekit._loop.Driver) ------------------

    def loop_hooks(self) -> Hooks:
        return Hooks(self._sock.fileno(), self._on_ready, self._on_wake, self._workers.capacity)

    def _on_ready(self) -> None:
        try:
            request = self._accept(self._sock)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._loop.back_off(accept_failed(exc, "accept()", self._listener.name, log.name))
            return
        verify = self._verify
        if verify is not None:
            try:
                admitted = verify(request.client_address)
            except Exception as exc:
                self._report(request, exc)
                admitted = False
            if not admitted:
                self._release(request)
                return
        self._dispatch(Job(partial(self._run, request), partial(self._discard, request)))

    def _on_wake(self) -> None:
        self._workers.service_actions()
        if self._service is not None:
            self._service()
        if self._fatal is not None:
            self._loop.stop()

    # -- the workers' host (see servekit.dispatchers.WorkerHost) --------------

    def close_inherited(self) -> None:
        # Only stream listeners: a datagram's replies go out on the listener.
        if self._stream:
            self._sock.close()

    def worker_failed(self, exc: BaseException, /) -> None:
        if self._fatal is None:
            self._fatal = exc
        self._loop.stop()

    # -- private --------------------------------------------------------------

    def _handle(self, request: _ReqT) -> None:
        try:
            self._handler(request)
        except Exception as exc:
            self._report(request, exc)
        finally:
            try:
                self._release(request)
            except Exception as exc:
                self._report(request, exc)

    def _report(self, request: _ReqT, exc: Exception) -> None:
        on_error = self._on_error
        if on_error is not None:
            try:
                on_error(request, exc)
            except Exception:
                log.exception("on_error failed for a request from %r on %s", request.client_address, self._listener.name)
            return
        log.error(
            "error handling a request from %r on %s", request.client_address, self._listener.name, exc_info=exc
        )

    def _ip_address(self) -> IPAddress:
        address: object = self._listener.address
        if not isinstance(address, tuple):
            raise TypeError(f"{self._listener.name} is not on an IP address: it has no host or port")
        return address

    def _check_open(self) -> None:
        if self._closed:
            raise ServerClosedError(f"the server on {self._listener.name} is closed")

    def _raise_fatal(self) -> None:
        exc = self._fatal
        if exc is not None:
            self._fatal = None
            self.close()
            raise exc
