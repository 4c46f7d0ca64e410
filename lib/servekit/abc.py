"""The protocols of servekit's parts, to implement by structure.

A transport, acceptor, dispatcher or request type of your own fits servekit
without inheriting anything: it only needs the methods below.  Annotating
them names these types, so import them from here (this module loads nothing
beyond the standard library).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Literal, Protocol, TypeAlias

from ._traits import WorkerTraits
from ._types import _AddrT_co, _ReqT, _ReqT_co, _ReqT_contra

__all__ = (
    "Acceptor",
    "BoundServer",
    "Dispatcher",
    "Gate",
    "Handler",
    "Listener",
    "Request",
    "RunsIn",
    "Transport",
    "WorkerHost",
    "WorkerTraits",
    "Workers",
)


class Request(Protocol[_AddrT_co]):
    """**Protocol:** what every request value offers the server: where it came from."""

    @property
    def client_address(self) -> _AddrT_co:
        """The peer's address."""
        ...


Handler: TypeAlias = Callable[[_ReqT_contra], object]
"""A handler: any callable of one positional argument, the request; what it returns is ignored.

Called once per request by a worker of the server's dispatcher: in the
serving thread (``inline``), a thread of its own (``threaded``) or a child
process (``forked``).  When it returns the request is released (a stream
connection is shut down and closed).

Error handling: an :class:`Exception` goes to the server's ``on_error``
(by default logged on the ``servekit.server`` logger) and the server keeps
serving.  ``SystemExit`` and ``KeyboardInterrupt`` stop the server: see
:meth:`servekit.Bound.serve_forever`.

A handler is a plain function: an ``async def`` one is refused (its
coroutine would never run).
"""


# Typing compromise: an acceptor takes its own requests back (``release``,
# ``discard``), a parameter position, yet the protocol is declared covariant in
# the request type.  The server only ever hands a request back to the acceptor
# that made it, so a ``Transport[StreamConnection[IPAddress], ...]`` may safely
# stand where a ``Transport[StreamConnection[Address], ...]`` is asked for (a
# transport chosen at run time, several listeners of one server); with an
# invariant type variable it could not.
class Acceptor(Protocol[_ReqT_co]):  # type: ignore[misc]  # covariant, see above
    """**Protocol:** takes requests off a listening socket and releases them.

    Called by the serve loop's thread (``accept``, ``discard``) and by the
    worker that ran the handler (``release``).  The server makes one acceptor
    per listening socket (``Transport.acceptor()`` once per ``listen()``) and
    hands each request back only to the acceptor that took it.
    """

    def accept(self, listener: socket.socket, /) -> _ReqT_co:
        """Take one request off the non-blocking *listener*.

        Raises :class:`BlockingIOError` when nothing is waiting after all and
        other :class:`OSError` for failed accepts; the server handles both.
        """
        ...

    def release(self, request: _ReqT_co, /) -> None:  # type: ignore[misc]  # covariant, see above
        """The handler is done with *request*: finish and close it."""
        ...

    def discard(self, request: _ReqT_co, /) -> None:  # type: ignore[misc]  # covariant, see above
        """Drop this process's copy of *request*: another process handles it."""
        ...


class Listener(Protocol[_AddrT_co]):
    """**Protocol:** a bound (and, for streams, listening) server socket at an address of type *A*.

    Made by :meth:`Transport.listen`; owned and closed by the bound server.
    """

    @property
    def socket(self) -> socket.socket:
        """The server socket."""
        ...

    @property
    def address(self) -> _AddrT_co:
        """The address it is bound to (an ephemeral port already resolved)."""
        ...

    @property
    def name(self) -> str:
        """A label for messages and reprs, such as ``TCP 127.0.0.1:8080``."""
        ...

    def close(self) -> None:
        """Close the socket and remove what binding created (a Unix socket file).  Idempotent."""
        ...


class Transport(Protocol[_ReqT_co, _AddrT_co]):
    """**Protocol:** describes a listening socket, its address type *A* and the kind of request *R* it yields.

    A transport is a value: :meth:`listen` may be called any number of times
    (each :meth:`Server.bind <servekit.Server.bind>` calls it once), and
    :meth:`acceptor` once after each :meth:`listen`.  It is covariant in both
    types: a ``tcp()`` transport is also a
    ``Transport[StreamConnection[Address], Address]``, so a transport chosen at
    run time (``tcp(...) if ... else unix_stream(...)``) has one type.
    """

    def listen(self) -> Listener[_AddrT_co]:
        """Create, bind and (for streams) listen.  Raises :class:`~servekit.BindError`."""
        ...

    def acceptor(self) -> Acceptor[_ReqT_co]:
        """The acceptor that takes this transport's requests off its socket."""
        ...


class WorkerHost(Protocol[_ReqT_contra]):
    """**Protocol:** the route a dispatcher's workers hand each request to.

    The server that starts the workers is their host.  For each request it
    was given, a dispatcher's workers make exactly one of these calls:

    - :meth:`run`, in the worker (this process, or a child process after
      :meth:`close_inherited`);
    - :meth:`discard`, in the parent, when a child process runs it;
    - :meth:`drop`, when no worker will ever run it (a queue dropped on close).

    A dispatcher written to these calls alone gets the books, events, drain
    and stats of the built-in one of its kind: a request handed to a child is
    followed by the server until the child reports its end or exits, and a
    drain's deadline stops such children (``SIGTERM``, then ``SIGKILL``).
    """

    def run(self, request: _ReqT_contra, /) -> None:
        """In the worker: handle *request*, release it and report what happened.

        A handler's ``Exception`` is dealt with inside; only
        ``SystemExit``/``KeyboardInterrupt`` (and the like) leave it.
        """
        ...

    def discard(self, request: _ReqT_contra, /) -> None:
        """In the parent, once a child process has been made to :meth:`run` *request*: drop this process's copy.

        Called from the workers' ``dispatch``, in the serving thread.  The
        request stays live in the server's books until the child reports its
        end (or exits without doing so).
        """
        ...

    def drop(self, request: _ReqT_contra, /) -> None:
        """No worker will run *request* (the workers are closing): release it unhandled.

        It is reported closed with the reason ``"dropped"``.
        """
        ...

    def close_inherited(self) -> None:
        """In a new child process, first: close what the child must not hold (the listeners) and
        make ``SIGTERM`` end it again (its default action), whatever handler the parent set."""
        ...

    def child_exited(self, pid: int, status: int, /) -> None:
        """In the parent, optional: child *pid* was reaped with *status* (as :func:`os.waitstatus_to_exitcode`).

        The server notices a child that exits without reporting anyway (on
        Linux, through a pidfd); a dispatcher that reaps its children can call
        this to give the exact status (``-9``: killed by ``SIGKILL``).  From
        the serving thread (the workers' ``capacity`` or ``service_actions``),
        or once the server's loop has stopped (their ``close``).
        """
        ...

    def worker_failed(self, exc: BaseException, /) -> None:
        """A worker thread's :meth:`run` raised ``SystemExit``/``KeyboardInterrupt``: stop the server.

        The serving thread re-raises *exc* from ``serve_forever``.
        """
        ...


RunsIn: TypeAlias = Literal["loop", "threads", "processes"]
"""Where a kind of workers runs the host's :meth:`~WorkerHost.run`: ``"loop"`` (in the
serving thread, within ``dispatch``), ``"threads"`` (other threads of this process) or
``"processes"`` (child processes)."""


class Workers(Protocol[_ReqT_contra]):
    """**Protocol:** the running side of a dispatcher, owned by one bound server.

    ``dispatch``, ``capacity`` and ``service_actions`` are called from the
    serving thread; ``close`` once, when the server closes.  A class may also
    declare what it is with a ``traits`` attribute (a :class:`WorkerTraits`,
    read once when the server is bound); that is optional, and only makes
    serving cheaper.
    """

    def dispatch(self, request: _ReqT_contra, /) -> None:
        """Have *request* handled: call the host's ``run`` with it, now or in another thread or process."""
        ...

    def capacity(self) -> Sequence[int] | None:
        """``None`` if another request may be dispatched now.

        Otherwise fds that turn readable when capacity may be back (an empty
        sequence: the loop asks again shortly).  While there is no capacity
        the server accepts nothing; clients wait in the listen backlog.
        """
        ...

    def service_actions(self) -> None:
        """Periodic housekeeping (reaping finished children); runs every loop wake-up."""
        ...

    def close(self) -> None:
        """Release the workers, waiting for requests in flight if so configured.  Idempotent."""
        ...


class Dispatcher(Protocol):
    """**Protocol:** a description of where handlers run; starts the workers of one server."""

    def start(self, host: WorkerHost[_ReqT], /) -> Workers[_ReqT]:
        """Make the workers of a newly bound server, which hand requests to *host*."""
        ...


class Gate(Protocol):
    """**Protocol:** a first-request gate (see :mod:`servekit.gates`)."""

    @property
    def timeout(self) -> float | None:
        """Seconds a connection may wait at the gate before it is closed (``None``: no limit)."""
        ...

    def wanted(self, data: bytes, /) -> int:
        """``0`` when *data*, what has arrived so far, lets the connection through; else how many bytes to wait for."""
        ...


class BoundServer(Protocol[_AddrT_co]):
    """**Protocol:** any bound server, whatever its requests: what its lifecycle needs.

    Every :class:`~servekit.Bound` fits, so a list or a helper can hold TCP
    and UDP servers alike: ``servers: list[BoundServer] = [tcp_bound,
    udp_bound]``.  ``BoundServer[IPAddress]`` narrows it to servers on IP
    addresses.
    """

    @property
    def address(self) -> _AddrT_co:
        """The address the server is bound to."""
        ...

    @property
    def closed(self) -> bool:
        """Whether it has been closed."""
        ...

    def fileno(self) -> int:
        """The listening socket's file descriptor (``-1`` once closed)."""
        ...

    def serve_forever(self, poll_interval: float = ...) -> None:
        """Serve until shut down or closed."""
        ...

    def handle_request(self) -> bool:
        """Handle one request, waiting up to the server's timeout."""
        ...

    def shutdown(self) -> None:
        """Stop ``serve_forever`` and wait until it has returned."""
        ...

    def close(self) -> None:
        """Stop serving and close.  Idempotent."""
        ...
