"""The server: a frozen description (:class:`Server`, made by :func:`server`) and its bound handle (:class:`Bound`)."""

from __future__ import annotations

import logging
import socket
import sys
import threading
import weakref
from collections.abc import Callable, Set as AbstractSet
from types import TracebackType
from typing import TYPE_CHECKING, Final, Generic, Never, TypeAlias, TypedDict, TypeVar, Unpack, cast, final, overload

import attrs
from typing_extensions import Self

from ._runtime.lifecycle import Runtime
from ._runtime.wiring import Intake, LoopStage, Stage, Wiring
from ._types import IPAddress, Predicate, _AddrT
from ._validate import check_seconds, seconds
from .abc import Dispatcher, Gate, Handler, Listener, Request, Transport, WorkerHost, Workers
from .admission import Admission
from .connections import Datagram, StreamConnection, _timed
from .deadlines import Deadlines
from .dispatchers import Inline, Pooled
from .events import (
    Connection,
    ConnectionClosed,
    DrainReport,
    Event,
    EventSink,
    HandlerFinished,
    Rejected,
    StageFailed,
    Stats,
)
from .handlers import check_handler
from .protocols import Evented
from .proxy import ProxyProtocol
from .transports import transport_kind

if TYPE_CHECKING:
    from .tls import TLSTransport

__all__ = ("Bound", "ErrorHandler", "Listeners", "Server", "server")

log: Final = logging.getLogger("servekit.server")
events_log: Final = logging.getLogger("servekit.events")

_ReqT = TypeVar("_ReqT", bound=Request[object])
_T = TypeVar("_T")

ErrorHandler = Callable[[_ReqT, Exception], object]
"""Called with the request and the exception when a handler raises."""

Listeners: TypeAlias = Transport[_ReqT, _AddrT] | tuple[Transport[_ReqT, _AddrT], ...]
"""What a server listens on: one transport, or a tuple of them that yield the same kind of request."""


def _check_transports(_inst: object, _attr: object, value: _T) -> None:
    """Accept a transport, or a non-empty tuple of transports (an attrs validator)."""
    items = value if isinstance(value, tuple) else (value,)
    if not items:
        raise ValueError("transport must be a transport or a non-empty tuple of transports, got ()")
    for item in items:
        if not (callable(getattr(item, "listen", None)) and callable(getattr(item, "acceptor", None))):
            raise TypeError(
                f"transport must be a transport (with listen() and acceptor()) or a tuple of them, "
                f"got {type(item).__name__} {item!r}"
            )


def _check_handler(inst: object, attr: object, value: _T) -> None:
    """A blocking handler (a plain callable), or what a reactor serves (:class:`~servekit.protocols.Evented`)."""
    if not isinstance(value, Evented):
        check_handler(inst, attr, value)


def _check_deadlines(_inst: object, _attr: object, value: _T) -> None:
    if value is not None and not isinstance(value, Deadlines):
        raise TypeError(f"deadlines must be a Deadlines or None, got {type(value).__name__} {value!r}")


def _check_admission(_inst: object, _attr: object, value: _T) -> None:
    if value is not None and not isinstance(value, Admission):
        raise TypeError(f"admission must be an Admission or None, got {type(value).__name__} {value!r}")


def _check_proxy(_inst: object, _attr: object, value: _T) -> None:
    if value is not None and not isinstance(value, ProxyProtocol):
        raise TypeError(f"proxy must be a servekit.proxy.ProxyProtocol or None, got {type(value).__name__} {value!r}")


def _check_gate(_inst: object, _attr: object, value: _T) -> None:
    if value is not None and not callable(getattr(value, "wanted", None)):
        raise TypeError(f"gate must be a gate (first_line(), any_byte(), at_least(n)) or None, got {value!r}")


@final
@attrs.frozen
class Server(Generic[_ReqT, _AddrT]):
    """A server description: what to listen on, what to run on each request, and where.

    Made by :func:`server`::

        server(transport, handler, *, dispatcher=inline(), verify=None, on_error=None,
               timeout=None, service_actions=None, deadlines=None, gate=None,
               admission=None, on_event=None)

    Making one does no I/O; :meth:`bind` does.  Variants are made with
    :func:`attrs.evolve` (``attrs.evolve(spec, transport=unix_stream(path))``).

    The transport decides the request type *R* and the address type *A*; the
    handler, *verify* and *on_error* are checked against them, so a datagram
    handler on a stream transport is a type error and a ``lambda`` handler's
    parameter is inferred.

    Attributes:
        transport: the listening socket, such as ``tcp("127.0.0.1", 0)``, or a
            tuple of them -- ``(tcp("0.0.0.0", 8000), tcp("::", 8000),
            unix_stream(path))`` -- served by one loop and one set of workers,
            with one lifecycle, drain and ``stats()``.  Together they must
            yield one kind of request: stream and datagram transports do not
            mix (a type error, and a :class:`TypeError` here for servekit's
            own transports, at :meth:`bind` for any).
        handler: called with each request; a plain function.  An ``async
            def`` function is refused with :class:`TypeError` (its coroutine
            would never run; a type checker cannot tell it from a plain
            function, whose return value is ignored).
        dispatcher: where handlers run: ``inline()`` (default), ``threaded()``,
            ``pooled()``, ``forked()`` or your own :class:`~servekit.abc.Dispatcher`.
        verify: called with each client address before dispatch; a request it
            returns ``False`` for is released unhandled.
        on_error: called with the request and the exception when the handler
            (or *verify*) raises an ``Exception``; by default the error is
            logged on the ``servekit.server`` logger.  Either way the request
            is released and the server goes on serving.
        timeout: how long :meth:`Bound.handle_request` waits (``None``: no limit).
        service_actions: called after every wake-up of ``serve_forever`` (at
            least every ``poll_interval`` seconds), in the serving thread.
        deadlines: time limits for each stream connection's reads and writes
            (:class:`~servekit.Deadlines`: ``first_byte``, ``idle``,
            ``request``, ``lifetime``), counted from when a worker takes it
            up; a read or write past one raises
            :exc:`~servekit.DeadlineExceeded` in the handler, and the
            connection is closed.  Stream transports only.
        proxy: read a PROXY protocol header (v1, v2) at the start of each
            stream connection, on the loop, before admission, and take the
            client's address from it (:class:`~servekit.proxy.ProxyProtocol`:
            versions, trusted networks, a header deadline); a connection
            without a valid header is refused (reason ``"proxy"``).  Stream
            transports only.
        gate: hold each new stream connection on the loop -- costing no worker
            and no thread -- until its first request is there
            (:mod:`servekit.gates`: ``first_line()``, ``any_byte()``,
            ``at_least(n)``), and close it if it does not come within the
            gate's timeout.  Stream transports only.
        admission: limits on the connections held at a time, in all and per
            peer (:class:`~servekit.Admission`); refusals are counted and
            reported as events.
        on_event: called with every lifecycle event (:mod:`servekit.events`:
            accepted, rejected, accept failed, handler started and finished,
            stage failed, connection closed, drain started and finished),
            frozen values, on the thread where it happens; it must be quick
            and thread-safe.  Its exceptions are logged and otherwise ignored.
            Without it, events are logged on the ``servekit.events`` logger:
            rejections at INFO, the rest at DEBUG -- the routine ones
            (accepted, started, finished, closed) only if that logger was
            enabled for DEBUG when the server was bound.

    Raises:
        TypeError, ValueError: an option is of the wrong type or value, or
            does not fit the transports (a gate on a datagram transport).
    """

    transport: Listeners[_ReqT, _AddrT] = attrs.field(validator=_check_transports)
    handler: Handler[_ReqT] | Evented[_ReqT] = attrs.field(eq=False, validator=_check_handler)
    dispatcher: Dispatcher = attrs.field(factory=Inline, kw_only=True)
    verify: Predicate[_AddrT] | None = attrs.field(default=None, eq=False, kw_only=True)
    on_error: ErrorHandler[_ReqT] | None = attrs.field(default=None, eq=False, kw_only=True)
    timeout: float | None = attrs.field(default=None, validator=seconds("timeout"), kw_only=True)
    service_actions: Callable[[], object] | None = attrs.field(default=None, eq=False, kw_only=True)
    deadlines: Deadlines | None = attrs.field(default=None, validator=_check_deadlines, kw_only=True)
    gate: Gate | None = attrs.field(default=None, validator=_check_gate, kw_only=True)
    admission: Admission | None = attrs.field(default=None, validator=_check_admission, kw_only=True)
    on_event: EventSink | None = attrs.field(default=None, eq=False, kw_only=True)
    proxy: ProxyProtocol | None = attrs.field(default=None, validator=_check_proxy, kw_only=True)

    def __attrs_post_init__(self) -> None:
        kinds = {transport_kind(transport) for transport in self.transports} - {None}
        if len(kinds) > 1:
            raise TypeError(
                f"the transports of one server must yield one kind of request, "
                f"got stream and datagram transports together: {self.transport!r}"
            )
        if kinds == {"datagram"}:
            _stream_only(self, ", ".join(repr(t) for t in self.transports))
        handler = self.handler
        if isinstance(handler, Evented):
            _check_evented(self, handler, kinds)
        if _tls(self.transports):
            _check_tls(self)

    @property
    def transports(self) -> tuple[Transport[_ReqT, _AddrT], ...]:
        """The transports, as a tuple (one or more)."""
        transport = self.transport
        return transport if isinstance(transport, tuple) else (transport,)

    def bind(self) -> Bound[_ReqT, _AddrT]:
        """Create, bind and listen on every transport; return the handle that serves.

        Raises:
            servekit.BindError: a socket could not be created, bound or
                listened on; the message names the transport and the address
                (the listeners made before it are closed again).
            TypeError: the listeners do not yield one kind of request, or a
                gate or deadlines were given for datagram listeners.
        """
        return Bound(self)


def _check_evented(spec: Server[_ReqT, _AddrT], evented: Evented[_ReqT], kinds: AbstractSet[str | None]) -> None:
    """Refuse what a reactor cannot serve: the other kind of transport, another dispatcher, a gate."""
    other = "datagram" if evented.kind == "stream" else "stream"
    if other in kinds:
        raise TypeError(f"{evented!r} serves {evented.kind} connections, but the transports yield {other}s: {spec.transport!r}")
    if not isinstance(spec.dispatcher, Inline):
        raise TypeError(
            f"{evented!r} runs on the server's reactor: leave dispatcher= out "
            f"(its blocking work goes to a pool with offload=), got dispatcher={spec.dispatcher!r}"
        )
    if spec.gate is not None:
        raise TypeError(
            f"gate= does not apply to {evented!r}: the reactor holds every connection on the loop already "
            "(bound the wait for a first message with deadlines=Deadlines(first_byte=...))"
        )


def _check_tls(spec: Server[_ReqT, _AddrT]) -> None:
    """Refuse what does not work over TLS yet."""
    if isinstance(spec.handler, Evented):
        raise TypeError("TLS on the reactor is not available yet: serve TLS with a blocking handler")
    if spec.gate is not None:
        raise TypeError(
            "gate= cannot be used with a TLS transport: a gate peeks at the connection's first bytes, "
            "which are the TLS handshake's, not a request (bound the handshake with tls(..., handshake_timeout=))"
        )
    if spec.deadlines is not None:
        raise TypeError("deadlines= with a TLS transport is not available yet")


def _stream_only(spec: Server[_ReqT, _AddrT], where: str) -> None:
    """Refuse a gate or deadlines for datagram listeners: they would never apply."""
    for name in ("gate", "deadlines", "proxy"):
        if getattr(spec, name) is not None:
            raise TypeError(f"{name}= applies to stream connections only; {where} yields datagrams")


class _Options(TypedDict, Generic[_ReqT, _AddrT], total=False):
    """The keyword options of :func:`server` for any transport."""

    dispatcher: Dispatcher
    verify: Predicate[_AddrT] | None
    on_error: ErrorHandler[_ReqT] | None
    timeout: float | None
    service_actions: Callable[[], object] | None
    admission: Admission | None
    on_event: EventSink | None


class _EventedOptions(TypedDict, Generic[_ReqT, _AddrT], total=False):
    """The keyword options of :func:`server` with a reactor's handler (no dispatcher, no gate)."""

    verify: Predicate[_AddrT] | None
    on_error: ErrorHandler[_ReqT] | None
    timeout: float | None
    service_actions: Callable[[], object] | None
    admission: Admission | None
    on_event: EventSink | None


class _EventedStreamOptions(_EventedOptions[_ReqT, _AddrT], total=False):
    """The keyword options of :func:`server` with a reactor's stream handler: and its time limits."""

    deadlines: Deadlines | None
    proxy: ProxyProtocol | None


class _StreamOptions(_Options[_ReqT, _AddrT], total=False):
    """The keyword options of :func:`server` for stream transports: those of any, and the stream-only ones."""

    deadlines: Deadlines | None
    gate: Gate | None
    proxy: ProxyProtocol | None


# Any transport first, so that a mistake in a handler (a lambda's body, say) is
# reported against the transport's own request type; the stream-only options
# second.  mypy sees the two overlap: for a stream transport without those
# options both give the same Server type, so the overlap is harmless.
@overload
def server(  # type: ignore[overload-overlap]
    transport: Listeners[_ReqT, _AddrT],
    handler: Handler[_ReqT],
    **options: Unpack[_Options[_ReqT, _AddrT]],
) -> Server[_ReqT, _AddrT]: ...
@overload
def server(
    transport: Listeners[StreamConnection[_AddrT], _AddrT],
    handler: Handler[StreamConnection[_AddrT]],
    **options: Unpack[_StreamOptions[StreamConnection[_AddrT], _AddrT]],
) -> Server[StreamConnection[_AddrT], _AddrT]: ...
@overload
def server(
    transport: Listeners[StreamConnection[_AddrT], _AddrT],
    handler: Evented[StreamConnection[_AddrT]],
    **options: Unpack[_EventedStreamOptions[StreamConnection[_AddrT], _AddrT]],
) -> Server[StreamConnection[_AddrT], _AddrT]: ...
@overload
def server(
    transport: Listeners[Datagram[_AddrT], _AddrT],
    handler: Evented[Datagram[_AddrT]],
    **options: Unpack[_EventedOptions[Datagram[_AddrT], _AddrT]],
) -> Server[Datagram[_AddrT], _AddrT]: ...
def server(
    transport: Listeners[_ReqT, _AddrT],
    handler: Handler[_ReqT] | Evented[_ReqT],
    **options: Unpack[_StreamOptions[_ReqT, _AddrT]],
) -> Server[_ReqT, _AddrT]:
    """Describe a server: ``server(transport, handler, *, dispatcher=..., ...)``; see :class:`Server`.

    The checked way to make a :class:`Server`: the transport (or tuple of
    transports) decides the request type the handler must take, and
    ``gate=`` and ``deadlines=`` are accepted for stream connections only --
    on a datagram transport they are a type error (and a :class:`TypeError`
    at run time).

    In place of a blocking handler, *handler* may be what the server's
    reactor serves (:mod:`servekit.protocols`, :mod:`servekit.framing`):
    ``server(tcp(host, port), lines(answer))``.  Then there is no
    ``dispatcher=`` (the reactor holds the connections; blocking work goes to
    a pool with ``offload=``) and no ``gate=``; ``deadlines=`` are the
    reactor's time limits.
    """
    return Server(transport, handler, **options)


def _tls(transports: tuple[object, ...]) -> list[TLSTransport[object]]:
    """The TLS transports among *transports*.

    :mod:`servekit.tls` loads :mod:`ssl`, a fifth of what ``import
    servekit`` would cost: it is imported by a program that makes a TLS
    transport, not here, and until it is no transport can be one.
    """
    if "servekit.tls" not in sys.modules:
        return []
    from .tls import TLSTransport  # noqa: PLC0415 - already loaded

    return [transport for transport in transports if isinstance(transport, TLSTransport)]


def _stages(spec: Server[_ReqT, _AddrT]) -> tuple[Stage[_ReqT], ...]:
    """The worker's steps before the handler, in order: composed here, in one place."""
    stages: list[Stage[_ReqT]] = []
    timeouts = [transport.handshake_timeout for transport in _tls(spec.transports)]
    if timeouts:  # the handshake first, in the worker
        from .tls import handshake_stage  # noqa: PLC0415 - loaded with the first TLS transport (see _tls)

        stages.append(Stage("tls", handshake_stage(min(timeouts))))  # type: ignore[arg-type]  # (R: a stream connection)
    deadlines = spec.deadlines
    if deadlines is not None and not isinstance(spec.handler, Evented):  # (the reactor keeps its own)

        def with_deadlines(request: _ReqT) -> _ReqT:
            if not isinstance(request, StreamConnection):
                return request
            return _timed(request, deadlines.clock())  # type: ignore[return-value]  # (R is this StreamConnection)

        stages.append(Stage("deadlines", with_deadlines))
    return tuple(stages)


@final
class _HeaderTime:
    """The :class:`~servekit.abc.Gate` of a stage that takes a header (its time limit; it peeks at nothing)."""

    __slots__ = ("timeout",)

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    def wanted(self, data: bytes, /) -> int:
        return 0


def _loop_stages(spec: Server[_ReqT, _AddrT]) -> tuple[LoopStage, ...]:
    """The loop's steps before dispatch, in order: the PROXY header (before admission), the gate."""
    stages: list[LoopStage] = []
    if spec.proxy is not None:
        stages.append(LoopStage("proxy", _HeaderTime(spec.proxy.timeout), True, spec.proxy.take))
    if spec.gate is not None:
        stages.append(LoopStage("gate", spec.gate))
    return tuple(stages)


def _reporter(spec: Server[_ReqT, _AddrT], where: str) -> Callable[[_ReqT, Exception], None]:
    """The route's report of a handler's exception: *on_error*, or the log."""
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


def _log_event(event: Event) -> None:
    """The default event sink: the ``servekit.events`` logger."""
    if isinstance(event, Rejected):
        events_log.info("refused a connection from %r: %s", event.peer, event.reason)
    elif events_log.isEnabledFor(logging.DEBUG):
        if isinstance(event, HandlerFinished) and event.exception is not None:
            events_log.debug("handler for %r raised after %.3f s: %r", event.peer, event.seconds, event.exception)
        elif isinstance(event, StageFailed):
            events_log.debug("stage %s failed for %r: %r", event.stage, event.peer, event.exception)
        elif isinstance(event, ConnectionClosed):
            events_log.debug("connection from %r closed (%s) after %.3f s", event.peer, event.reason, event.seconds)
        else:
            events_log.debug("%r", event)


def _sink(spec: Server[_ReqT, _AddrT]) -> tuple[Callable[[Event], None], bool]:
    """The route's event sink, and whether it wants the routine events."""
    on_event = spec.on_event
    if on_event is None:
        return _log_event, events_log.isEnabledFor(logging.DEBUG)

    def emit(event: Event) -> None:
        try:
            on_event(event)
        except Exception:
            log.exception("on_event failed for %r", event)

    return emit, True


def _limits(admission: Admission | None) -> Admission | None:
    """*admission* if it sets a limit, else None (the route then keeps no admission books)."""
    if admission is None or (admission.max_connections is None and admission.per_peer is None):
        return None
    return admission


def _listen_all(spec: Server[_ReqT, _AddrT]) -> list[Intake[_ReqT, _AddrT]]:
    """Listen on every transport, in order; close what was opened if one fails or they do not fit together."""
    intakes: list[Intake[_ReqT, _AddrT]] = []
    listeners: list[Listener[_AddrT]] = []
    try:
        for transport in spec.transports:
            listener: Listener[_AddrT] = transport.listen()
            listeners.append(listener)
            intakes.append(Intake(listener, transport.acceptor()))
        types = {intake.listener.socket.type for intake in intakes}
        names = ", ".join(intake.listener.name for intake in intakes)
        if len(types) > 1:
            raise TypeError(f"the listeners of one server must be all stream or all datagram sockets: {names}")
        if types == {socket.SOCK_DGRAM}:
            _stream_only(spec, names)
    except BaseException:
        for listener in listeners:
            listener.close()
        raise
    return intakes


def _wiring(
    spec: Server[_ReqT, _AddrT],
    where: str,
    handler: Callable[[_ReqT], object],
    answer: Callable[[bytes], bytes | None] | None = None,
) -> Wiring[_ReqT]:
    emit, routine = _sink(spec)
    return Wiring(
        handler=handler,
        stages=_stages(spec),
        loop_stages=_loop_stages(spec),
        # The transport gives requests from peers of its address type A:
        # the type checker cannot see that link between R and A.
        verify=cast("Callable[[object], bool] | None", spec.verify),
        report=_reporter(spec, where),
        emit=emit,
        routine=routine,
        admission=_limits(spec.admission),
        timeout=spec.timeout,
        service_actions=spec.service_actions,
        answer=answer,
    )


def _reactor_parts(
    spec: Server[_ReqT, _AddrT], evented: Evented[_ReqT], intakes: list[Intake[_ReqT, _AddrT]]
) -> tuple[Callable[[_ReqT], object], Dispatcher]:
    """The handler and dispatcher that serve *evented*: the reactor for streams; for datagrams, the
    message function inline, or on a pool of ``offload`` threads."""
    stream = intakes[0].listener.socket.type == socket.SOCK_STREAM
    if stream != (evented.kind == "stream"):
        names = ", ".join(intake.listener.name for intake in intakes)
        raise TypeError(f"{evented!r} serves {evented.kind} connections, but the listeners are not: {names}")
    if stream:
        return _never_called, _ReactorDispatcher(evented, spec.deadlines)
    answer = cast("Callable[[bytes], bytes | None]", evented.start)

    def reply(datagram: _ReqT) -> None:
        data = answer(datagram.data)  # type: ignore[attr-defined]  # (a datagram server's)
        if data is not None:
            datagram.reply(data)  # type: ignore[attr-defined]

    return reply, (Pooled(workers=evented.offload) if evented.offload else Inline())


def _never_called(request: object) -> None:
    raise RuntimeError(f"a reactor's connection reached a blocking handler: {request!r}")


@final
class _ReactorDispatcher:
    """Starts the reactor's workers for a bound server (its host is the route itself)."""

    __slots__ = ("deadlines", "evented")

    def __init__(self, evented: Evented[Never], deadlines: Deadlines | None) -> None:
        self.evented = evented
        self.deadlines = deadlines

    def start(self, host: WorkerHost[_T], /) -> Workers[_T]:
        from ._runtime.pipeline import Pipeline  # noqa: PLC0415 - (loaded already: the runtime's)
        from ._runtime.reactor import ReactorWorkers  # noqa: PLC0415 - only evented servers load it

        assert isinstance(host, Pipeline)
        return ReactorWorkers(host, self.evented, self.deadlines)


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
    """A bound, listening server at addresses of type *A*: serves, shuts down, closes.

    Made by :meth:`Server.bind`.  A context manager: leaving the ``with``
    block closes it.

    Threading: ``serve_forever`` runs in one thread at a time; ``shutdown``
    and ``close`` may be called from any thread, including from a handler.
    """

    __slots__ = ("__weakref__",)

    def __init__(self, spec: Server[_ReqT, _AddrT]) -> None:
        intakes = _listen_all(spec)
        where = ", ".join(intake.listener.name for intake in intakes)
        handler, dispatcher = spec.handler, spec.dispatcher
        answer = None
        if isinstance(handler, Evented):
            if handler.kind == "datagram" and not handler.offload:
                answer = cast("Callable[[bytes], bytes | None]", handler.start)
            try:
                handler, dispatcher = _reactor_parts(spec, handler, intakes)
            except BaseException:
                for intake in intakes:
                    intake.listener.close()
                raise
        runtime: Runtime[_ReqT, _AddrT] = Runtime(intakes, dispatcher, _wiring(spec, where, handler, answer))
        _handles[self] = cast("_Handle[Request[object], object]", _Handle(spec, runtime))

    @property
    def address(self) -> _AddrT:
        """The address the server is bound to (port 0 already resolved); the first one's, with several.

        ``(host, port)`` on IP transports, so ``host, port = bound.address``
        works; the path (or abstract name) on Unix ones.
        """
        return _handle(self).runtime.listeners[0].address

    @property
    def addresses(self) -> tuple[_AddrT, ...]:
        """The addresses of every listener, in the order of the server's transports."""
        return tuple(listener.address for listener in _handle(self).runtime.listeners)

    @property
    def host(self: Bound[_ReqT, IPAddress]) -> str:
        """The bound host of an IP server (an IPv6 scope, if any, as ``%scope_id``); the first listener's.

        Only IP servers have one: on a Unix server this is a type error, and
        a :class:`TypeError` at run time.
        """
        return _ip_address(self)[0]

    @property
    def port(self: Bound[_ReqT, IPAddress]) -> int:
        """The bound port of an IP server (the real one when 0 was asked for); the first listener's.

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
        """The (first) listening socket's file descriptor (``-1`` once closed)."""
        return _handle(self).runtime.listeners[0].socket.fileno()

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

        Returns ``True`` once a request has been taken and has left the loop
        -- handed to a worker (and, inline, handled), or refused or closed at
        the gate -- and ``False`` if the timeout passed first.  Connections
        held at a gate meanwhile stay held, and the next call (or
        ``serve_forever``) goes on with them.  Exceptions propagate as for
        :meth:`serve_forever`.
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

    def drain(self, seconds: float) -> DrainReport:
        """Drain gracefully: finish what is in flight, for at most *seconds*; return a report.

        From another thread than the one in ``serve_forever`` (a signal
        handler's thread, for example -- :func:`servekit.run` does it on
        SIGTERM).  The server stops accepting, but first takes every
        connection already waiting in its listen backlogs (none is reset),
        then closes its listeners.  Requests in flight (and those held at the
        gate) go on; :attr:`draining` is set so that handlers can end long
        sessions cleanly.  At the deadline every connection left is cut: its
        socket is shut down, so its handler's next read or write fails.  Then
        ``serve_forever`` returns.  :meth:`close` is still to be called; it
        waits for handlers as the dispatcher's ``block_on_close`` says (a
        handler that does not touch its socket -- sleeping, computing --
        is not interrupted by the cut).

        Requests handled by child processes are waited for too (each child
        reports its end to the parent); at the deadline the children left are
        sent SIGTERM, and SIGKILL after a grace of a second.
        """
        check_seconds("seconds", seconds)
        return _handle(self).runtime.drain(seconds)

    @property
    def draining(self) -> threading.Event:
        """Set when :meth:`drain` begins: a handler checks it to end a long session cleanly."""
        return _handle(self).runtime.draining

    def connections(self) -> list[Connection[_AddrT]]:
        """The connections (or datagrams) taken and not yet released: peer, age, state -- a snapshot.

        An ``inline()`` datagram server handles each datagram as it takes it,
        on the serving thread: its datagrams are not listed (nor counted in
        ``stats().connections_active``) unless ``on_event`` is given.
        """
        return cast("list[Connection[_AddrT]]", _handle(self).runtime.pipeline.clients.connections())

    def stats(self) -> Stats:
        """A snapshot of the server's counters (:class:`~servekit.events.Stats`; ``.prometheus()`` renders it)."""
        return _handle(self).runtime.stats()

    def close_clients(self, where: Callable[[Connection[_AddrT]], bool] | None = None) -> list[Connection[_AddrT]]:
        """Close live stream connections -- those *where* selects, or all -- from any thread.

        A connection with a worker has its socket shut down, so its handler's
        next read or write fails (a handler busy elsewhere is not interrupted)
        and the worker releases it; one held at the gate is closed at once.
        Each is reported closed with reason ``"closed"``.  The server goes on
        serving.  Connections held by child processes are not the parent's
        to close and are left alone; datagrams have nothing to close.  Returns
        the connections closed (a snapshot, as :meth:`connections` gives).
        To close one: ``bound.close_clients(lambda c: c.peer == peer)``.
        """
        chosen = _handle(self).runtime.pipeline.clients.close(cast("Callable[[Connection[object]], bool]", where), abort=False)
        return cast("list[Connection[_AddrT]]", chosen)

    def abort_clients(self, where: Callable[[Connection[_AddrT]], bool] | None = None) -> list[Connection[_AddrT]]:
        """As :meth:`close_clients`, but each connection is reset, not closed in order.

        Its socket is shut down for reading only (a blocked read in the
        handler ends) and, when it is released, closed with ``SO_LINGER`` 0:
        the client gets a reset, and no FIN before it.  Reported closed with
        reason ``"aborted"``.
        """
        chosen = _handle(self).runtime.pipeline.clients.close(cast("Callable[[Connection[object]], bool]", where), abort=True)
        return cast("list[Connection[_AddrT]]", chosen)

    def close(self) -> None:
        """Stop serving, close the sockets, release the workers.  Idempotent.

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
        return f"<servekit.Bound {runtime.name} {runtime.state()}>"


def _ip_address(bound: Bound[_ReqT, _AddrT]) -> IPAddress:
    runtime = _handle(bound).runtime
    address: object = runtime.listeners[0].address
    if not isinstance(address, tuple):
        raise TypeError(f"{runtime.listeners[0].name} is not on an IP address: it has no host or port")
    return address
