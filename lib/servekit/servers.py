"""The server: a frozen description (:class:`Server`) and its bound handle (:class:`Bound`)."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Final, Generic, TypeVar, cast, final

import attrs
from typing_extensions import Self

from ._runtime.lifecycle import Runtime
from ._types import IPAddress, Predicate, _AddrT
from ._validate import check_seconds, seconds
from .abc import Dispatcher, Handler, Request, Transport
from .dispatchers import Inline
from .handlers import check_handler

__all__ = ("Bound", "ErrorHandler", "Server", "server")

log: Final = logging.getLogger("servekit.server")

_ReqT = TypeVar("_ReqT", bound=Request[object])

ErrorHandler = Callable[[_ReqT, Exception], object]
"""Called with the request and the exception when a handler raises."""

@final
@attrs.frozen
class Server(Generic[_ReqT, _AddrT]):
    """A server description: what to listen on, what to run on each request, and where.

    ``server(transport, handler, *, dispatcher=inline(), verify=None,
    on_error=None, timeout=None, service_actions=None)`` makes one
    (:func:`server` is this class).  Making one does no I/O; :meth:`bind`
    does.  Variants are made with :func:`attrs.evolve`.

    The transport decides the request type *R* and the address type *A*; the
    handler, *verify* and *on_error* are checked against them, so a datagram
    handler on a stream transport is a type error and a ``lambda`` handler's
    parameter is inferred.

    Attributes:
        transport: the listening socket, such as ``tcp("127.0.0.1", 0)``.
        handler: called with each request; a plain function.  An ``async
            def`` function is refused with :class:`TypeError` (its coroutine
            would never run; a type checker cannot tell it from a plain
            function, whose return value is ignored).
        dispatcher: where handlers run: ``inline()`` (default), ``threaded()``,
            ``forked()`` or your own :class:`~servekit.abc.Dispatcher`.
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

    transport: Transport[_ReqT, _AddrT]
    handler: Handler[_ReqT] = attrs.field(eq=False, validator=check_handler)
    dispatcher: Dispatcher = attrs.field(factory=Inline, kw_only=True)
    verify: Predicate[_AddrT] | None = attrs.field(default=None, eq=False, kw_only=True)
    on_error: ErrorHandler[_ReqT] | None = attrs.field(default=None, eq=False, kw_only=True)
    timeout: float | None = attrs.field(default=None, validator=seconds("timeout"), kw_only=True)
    service_actions: Callable[[], object] | None = attrs.field(default=None, eq=False, kw_only=True)

    def bind(self) -> Bound[_ReqT, _AddrT]:
        """Create, bind and listen; return the handle that serves.

        Raises:
            servekit.BindError: the socket could not be created, bound or
                listened on; the message names the transport and the address.
        """
        return Bound(self)


server = Server
"""Describe a server: ``server(transport, handler, *, dispatcher=..., ...)``; see :class:`Server`."""


def _reporter(spec: Server[_ReqT, _AddrT], where: str) -> Callable[[_ReqT, Exception], None]:
    """The pipeline's report of a handler's exception: *on_error*, or the log."""
    on_error = spec.on_error
    if on_error is None:

        def report(request: _ReqT, exc: Exception) -> None:
            log.error("error handling a request from %r on %s", request.client_address, where, exc_info=exc)

        return report

    def report_to(request: _ReqT, exc: Exception) -> None:
        try:
            on_error(request, exc)
        except Exception:
            log.exception("on_error failed for a request from %r on %s", request.client_address, where)

    return report_to


class _Handle(Generic[_ReqT, _AddrT]):
    """What a :class:`Bound` handle stands for: its description and its running state."""

    __slots__ = ("runtime", "spec")

    def __init__(self, spec: Server[_ReqT, _AddrT], runtime: Runtime[_ReqT, _AddrT]) -> None:
        self.spec = spec
        self.runtime = runtime


#: Each handle's description and running state.  The handle keeps nothing of
#: its own, so that only its documented members can be reached from it.
_handles: Final[weakref.WeakKeyDictionary[object, _Handle[Request[object], object]]] = weakref.WeakKeyDictionary()


def _handle(bound: Bound[_ReqT, _AddrT]) -> _Handle[_ReqT, _AddrT]:
    return cast("_Handle[_ReqT, _AddrT]", _handles[bound])


@final
class Bound(Generic[_ReqT, _AddrT]):
    """A bound, listening server at an address of type *A*: serves, shuts down, closes.

    Made by :meth:`Server.bind`.  A context manager: leaving the ``with``
    block closes it.

    Threading: ``serve_forever`` runs in one thread at a time; ``shutdown``
    and ``close`` may be called from any thread, including from a handler.
    """

    __slots__ = ("__weakref__",)

    def __init__(self, spec: Server[_ReqT, _AddrT]) -> None:
        listener = spec.transport.listen()
        runtime = Runtime(
            listener,
            spec.transport.acceptor(),
            spec.dispatcher,
            spec.handler,
            # The transport gives requests from peers of its address type A:
            # the type checker cannot see that link between R and A.
            cast("Callable[[object], bool] | None", spec.verify),
            _reporter(spec, listener.name),
            spec.service_actions,
            spec.timeout,
        )
        _handles[self] = cast("_Handle[Request[object], object]", _Handle(spec, runtime))

    @property
    def address(self) -> _AddrT:
        """The address the server is bound to (port 0 already resolved).

        ``(host, port)`` on IP transports, so ``host, port = bound.address``
        works; the path (or abstract name) on Unix ones.
        """
        return _handle(self).runtime.listener.address

    @property
    def host(self: Bound[_ReqT, IPAddress]) -> str:
        """The bound host of an IP server (an IPv6 scope, if any, as ``%scope_id``).

        Only IP servers have one: on a Unix server this is a type error, and
        a :class:`TypeError` at run time.
        """
        return _ip_address(self)[0]

    @property
    def port(self: Bound[_ReqT, IPAddress]) -> int:
        """The bound port of an IP server (the real one when 0 was asked for).

        Only IP servers have one: on a Unix server this is a type error, and
        a :class:`TypeError` at run time.
        """
        return _ip_address(self)[1]

    @property
    def server(self) -> Server[_ReqT, _AddrT]:
        """The description this handle was bound from."""
        return _handle(self).spec

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return _handle(self).runtime.closed

    def fileno(self) -> int:
        """The listening socket's file descriptor (``-1`` once closed)."""
        return _handle(self).runtime.listener.socket.fileno()

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
        runtime = _handle(self).runtime
        runtime.check_open()
        check_seconds("poll_interval", poll_interval, positive=True)
        runtime.serve_forever(poll_interval)

    def handle_request(self) -> bool:
        """Wait for one request (up to the server's ``timeout``) and handle it.

        Returns ``True`` if a request was handled, ``False`` if the timeout
        passed first.  Exceptions propagate as for :meth:`serve_forever`.
        """
        return _handle(self).runtime.handle_request()

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` and wait until it has returned.

        Returns at once: it wakes the loop rather than waiting for a poll
        interval.  With nothing serving it does nothing -- the next
        ``serve_forever`` serves normally -- except that a thread already
        started with this server's ``serve_forever`` as its target, which has
        not reached the loop yet, stops as soon as it does.  Called from a
        handler in the serving thread it only asks the loop to stop.
        """
        _handle(self).runtime.shutdown(self.serve_forever)

    def close(self) -> None:
        """Stop serving, close the socket, release the workers.  Idempotent.

        A running ``serve_forever`` (in another thread) is stopped first.  A
        Unix socket file the server created is removed.  Running handlers are
        waited for as the dispatcher's ``block_on_close`` says.
        """
        _handle(self).runtime.close()

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
        runtime = _handle(self).runtime
        return f"<servekit.Bound {runtime.listener.name} {runtime.state()}>"


def _ip_address(bound: Bound[_ReqT, _AddrT]) -> IPAddress:
    runtime = _handle(bound).runtime
    address: object = runtime.listener.address
    if not isinstance(address, tuple):
        raise TypeError(f"{runtime.listener.name} is not on an IP address: it has no host or port")
    return address
