"""What a composed server's runtime is made of, described once.

:class:`Wiring` is everything of a server description the runtime needs
besides its listeners and its workers: the handler, the stages on both sides
of the route, the admission limits, where errors and events go.  The public
description (:class:`servekit.Server`) makes one at bind; the lifecycle and
the route read it.  Stdlib only, like the rest of ``_runtime``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Generic, NamedTuple, Protocol, TypeVar, final

from .._types import _AddrT_co
from ..abc import Acceptor, Gate, Listener, Request
from ..events import Event

__all__ = ("Admission", "Door", "Intake", "LoopStage", "Stage", "Wiring")

_ReqT = TypeVar("_ReqT", bound=Request[object])


class Admission(Protocol):
    """What the runtime reads of its admission limits: :class:`servekit.Admission`.

    A protocol, so that the runtime does not import the attrs class.
    """

    @property
    def max_connections(self) -> int | None: ...

    @property
    def per_peer(self) -> int | None: ...

    @property
    def busy(self) -> Callable[[socket.socket, object], object] | None: ...


class Stage(NamedTuple, Generic[_ReqT]):
    """A step in the worker, before the handler: ``apply`` returns the request the next step gets.

    A stage that raises ends the request before the handler runs; the
    connection is closed with *name* as its reason (``"deadlines"``, next
    ``"tls"``).
    """

    name: str
    apply: Callable[[_ReqT], _ReqT]


class LoopStage(NamedTuple):
    """A step on the loop's side that holds a stream connection until its bytes are there.

    The connection waits on the loop -- in no worker -- until *gate* says
    enough has arrived, and is closed with *name* as its reason if the
    client leaves or the gate's timeout passes first.  A stage with
    *before_admission* runs before the admission limits judge the client
    (where a PROXY header must be read); the others after (the first-request
    gate).

    A stage with *take* reads a header off the stream instead of only
    peeking: *take* is called with the bytes of the header so far and the
    request, and returns ``None`` while the header is incomplete (the bytes
    are taken off the socket: they are all header), or the header's length
    once it is complete (exactly that much is taken; the client's own bytes
    stay in the socket), having done what the header says to the request;
    a ``ValueError`` refuses the connection, reported with *name* as the
    reason (``Rejected``, before admission).  *gate* gives its timeout.
    """

    name: str
    gate: Gate
    before_admission: bool = False
    take: Callable[[bytes, object], int | None] | None = None


class Intake(NamedTuple, Generic[_ReqT, _AddrT_co]):
    """One listener of a server and the acceptor that takes its requests."""

    listener: Listener[_AddrT_co]
    acceptor: Acceptor[_ReqT]


class Wiring(NamedTuple, Generic[_ReqT]):
    """A composed server, as its runtime needs it.

    Attributes:
        handler: called with each request, after the stages.
        stages: the worker's steps before the handler, in order.
        loop_stages: the loop's steps before dispatch, in order.
        verify: called with each client address; ``False`` refuses it.
        report: a handler's (or ``verify``'s ...) ``Exception``: ``on_error`` or the log.
        emit: where events go (never raises).
        routine: whether the routine events (accepted, started, finished,
            closed) are made at all.
        admission: the limits, or ``None`` when none is set.
        timeout: how long ``handle_request`` waits.
        service_actions: the user's, after every wake-up of the loop.
        answer: a datagram server's message function (the reactor's
            ``datagrams()``), answered on the loop: *handler* does the same
            through the route, this lets it take a batch per wake-up.
    """

    handler: Callable[[_ReqT], object]
    stages: tuple[Stage[_ReqT], ...]
    loop_stages: tuple[LoopStage, ...]
    verify: Callable[[object], bool] | None
    report: Callable[[_ReqT, Exception], None]
    emit: Callable[[Event], None]
    routine: bool
    admission: Admission | None
    timeout: float | None
    service_actions: Callable[[], object] | None
    answer: Callable[[bytes], bytes | None] | None = None


@final
class Door(Generic[_ReqT]):
    """One listener as the route uses it: its socket, its name, its acceptor's calls (made from an :class:`Intake`)."""

    __slots__ = ("accept", "discard", "name", "release", "sock")

    def __init__(self, intake: Intake[_ReqT, object]) -> None:
        self.sock = intake.listener.socket
        self.name = intake.listener.name
        self.accept = intake.acceptor.accept
        self.release = intake.acceptor.release
        self.discard = intake.acceptor.discard
