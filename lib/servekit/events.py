"""What servekit reports about its connections: frozen values, standard library only.

:class:`DrainReport` is what :meth:`servekit.Bound.drain` returns: how many
connections finished during the drain, and which were cut at its deadline.
The lifecycle events (:data:`Event`) are what a server's ``on_event``
callback receives, and :class:`Stats` is :meth:`servekit.Bound.stats`'s
snapshot of the counters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Generic, NamedTuple, TypeAlias

from ._types import _AddrT_co

__all__ = (
    "AcceptFailed",
    "Accepted",
    "ChildFailed",
    "Connection",
    "ConnectionClosed",
    "DrainFinished",
    "DrainReport",
    "DrainStarted",
    "Event",
    "EventSink",
    "HandlerFinished",
    "HandlerStarted",
    "Rejected",
    "StageFailed",
    "Stats",
)


class Connection(NamedTuple, Generic[_AddrT_co]):
    """One live connection (or datagram) the server holds, from a peer at an address of type *A*.

    Attributes:
        peer: the client's address.
        age: seconds since it was accepted.
        state: ``"parked"`` (waiting on the loop for its first request, in
            no worker) or ``"running"`` (with a worker).
    """

    peer: _AddrT_co
    age: float
    state: str


class DrainReport(NamedTuple):
    """The outcome of a graceful drain.

    Attributes:
        finished: requests (connections, datagrams) the server handled to
            their end over its life, up to the deadline -- those in flight or
            waiting in the backlog when the drain began included.  (Connections
            a gate closed are not counted.)
        cut: connections closed at the deadline.
        seconds: how long the drain took.
        cut_connections: the ones cut: peer, age and state at the deadline.
    """

    finished: int
    cut: int
    seconds: float
    cut_connections: tuple[Connection[object], ...]

    def summary(self) -> dict[str, object]:
        """The report as JSON-ready data: ``{"finished": .., "cut": .., "seconds": .., "cut_connections": [...]}``."""
        return {
            "finished": self.finished,
            "cut": self.cut,
            "seconds": round(self.seconds, 3),
            "cut_connections": [
                {"peer": repr(c.peer), "age": round(c.age, 3), "state": c.state} for c in self.cut_connections
            ],
        }


# -- lifecycle events --------------------------------------------------------
#
# A server built with ``on_event=`` calls it with each of these, frozen
# values, as things happen.  Events of the loop (accepted, rejected, accept
# failed) come from the serving thread; events of a handler (started,
# finished, closed) from the worker that ran it -- or, for the forked
# dispatcher, from the parent's serving thread once the child has reported
# back; drain events from the thread that called ``drain``.


class Accepted(NamedTuple):
    """A connection (or datagram) was taken off the listener and admitted."""

    peer: object
    listener: str


class Rejected(NamedTuple):
    """A connection was refused before any handler saw it.

    *reason* is ``"verify"`` (the server's ``verify`` said no or raised),
    ``"max_connections"`` (the server held its maximum) or ``"per_peer"``
    (this peer held its maximum).
    """

    peer: object
    reason: str


class AcceptFailed(NamedTuple):
    """``accept()`` (or ``recvfrom()``) failed: *errno*, its message, and the back-off.

    *backoff* is how long the server leaves the listener alone before trying
    again: a positive figure for resource exhaustion (``EMFILE``, ...), ``0.0``
    for errors that only cost the one connection.
    """

    errno: int
    message: str
    backoff: float


class HandlerStarted(NamedTuple):
    """A worker began handling a request."""

    peer: object


class HandlerFinished(NamedTuple):
    """A handler returned (*exception* ``None``) or raised *exception*, after *seconds*.

    For the forked dispatcher *exception* is a :class:`ChildFailed` naming the
    exception's type, or the child's exit status if it died without
    reporting (the exception itself stayed in the child).
    """

    peer: object
    seconds: float
    exception: BaseException | None


class ChildFailed(Exception):
    """A child process's handler (or a stage before it) raised, or the child died: what the parent knows of it."""


class StageFailed(NamedTuple):
    """A stage the server runs in the worker before the handler (``"deadlines"``, ...) raised.

    The handler did not run; the connection is closed with the stage's name
    as its reason, and counted in ``Stats.stage_errors_by_stage`` -- apart
    from handler errors.
    """

    peer: object
    stage: str
    exception: BaseException


class ConnectionClosed(NamedTuple):
    """The server let go of a connection (or datagram) it had admitted.

    *reason*: ``"finished"`` (its handler ended), ``"gate"`` (it left, or sent
    no first request in time, while held at the gate), ``"cut"`` (a drain's
    deadline), ``"closed"`` (``close_clients``), ``"aborted"`` (``abort_clients``),
    ``"dropped"`` (no worker took it before the server closed, or handing it
    to one failed), or the name of a stage that failed before the handler
    (see :class:`StageFailed`).  On the reactor (:mod:`servekit.protocols`)
    also: ``"deadline"`` (a time limit of the server's ``deadlines`` passed),
    ``"error"`` (its protocol or message handler raised), ``"reset"`` (the
    peer reset it), ``"too_long"`` (a message over its framing's limit), or
    the reason its protocol gave to ``close()``.
    *seconds* is its whole time with the server, from accept to release.
    *bytes_in*/*bytes_out* count what went through ``rfile``/``wfile`` of a
    connection with deadlines; ``None`` where they are not counted.
    """

    peer: object
    seconds: float
    reason: str
    bytes_in: int | None
    bytes_out: int | None


class DrainStarted(NamedTuple):
    """A drain began, with a deadline *seconds* away."""

    seconds: float


class DrainFinished(NamedTuple):
    """A drain ended, with this report."""

    report: DrainReport


Event: TypeAlias = (
    Accepted
    | Rejected
    | AcceptFailed
    | HandlerStarted
    | HandlerFinished
    | StageFailed
    | ConnectionClosed
    | DrainStarted
    | DrainFinished
)
"""Any lifecycle event: match on its type."""

EventSink: TypeAlias = Callable[[Event], object]
"""What ``server(..., on_event=)`` takes: called with each :data:`Event`."""


class Stats(NamedTuple):
    """A snapshot of a server's counters (:meth:`servekit.Bound.stats`).

    The names are those of Prometheus / OpenTelemetry conventions; a
    ``_total`` is a counter since the server was bound, the rest are gauges
    or a summary's parts.  Requests handled by forked children are counted
    in the parent once each child has reported back.

    Attributes:
        connections_accepted_total: connections (or datagrams) admitted.
        connections_rejected_total: connections refused, any reason.
        rejected_by_reason: the same, per reason (see :class:`Rejected`).
        connections_active: admitted and not yet released (at the gate or
            with a worker).
        connections_closed_total: admitted and released, any way.
        connections_gate_closed_total: of those, closed at the gate.
        connections_cut_total: connections cut at a drain's deadline (counted at the cut).
        accept_errors_total: failed ``accept()``/``recvfrom()`` calls.
        handler_duration_seconds_count: handlers that ended.
        handler_duration_seconds_sum: their total run time.
        handler_errors_total: of those, the ones that raised.
        stage_errors_total: connections closed because a stage before the
            handler failed (see :class:`StageFailed`).
        stage_errors_by_stage: the same, per stage name.
        closed_by_reason: connections closed for another reason than
            ``"finished"`` -- per reason (see :class:`ConnectionClosed`:
            ``"gate"``, ``"cut"``, ``"deadline"``, ``"too_long"``, ...).
    """

    connections_accepted_total: int
    connections_rejected_total: int
    rejected_by_reason: Mapping[str, int]
    connections_active: int
    connections_closed_total: int
    connections_gate_closed_total: int
    connections_cut_total: int
    accept_errors_total: int
    handler_duration_seconds_count: int
    handler_duration_seconds_sum: float
    handler_errors_total: int
    stage_errors_total: int = 0
    stage_errors_by_stage: Mapping[str, int] = {}
    closed_by_reason: Mapping[str, int] = {}

    def prometheus(self, prefix: str = "servekit_") -> str:
        """The snapshot in Prometheus' text exposition format, each name with *prefix*."""
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, object]]) -> None:
            lines.append(f"# HELP {prefix}{name} {help_text}")
            lines.append(f"# TYPE {prefix}{name} {kind}")
            lines.extend(f"{prefix}{sample} {value}" for sample, value in samples)

        metric("connections_accepted_total", "counter", "Connections admitted.",
               [("connections_accepted_total", self.connections_accepted_total)])
        metric("connections_rejected_total", "counter", "Connections refused before a handler.",
               [(f'connections_rejected_total{{reason="{reason}"}}', count)
                for reason, count in sorted(self.rejected_by_reason.items())]
               or [("connections_rejected_total", 0)])
        metric("connections_active", "gauge", "Connections admitted and not yet released.",
               [("connections_active", self.connections_active)])
        metric("connections_closed_total", "counter", "Connections released.",
               [("connections_closed_total", self.connections_closed_total)])
        metric("connections_gate_closed_total", "counter", "Connections closed at the gate.",
               [("connections_gate_closed_total", self.connections_gate_closed_total)])
        metric("connections_cut_total", "counter", "Connections cut at a drain's deadline.",
               [("connections_cut_total", self.connections_cut_total)])
        metric("accept_errors_total", "counter", "Failed accept() calls.",
               [("accept_errors_total", self.accept_errors_total)])
        metric("handler_duration_seconds", "summary", "Handler run time.",
               [("handler_duration_seconds_count", self.handler_duration_seconds_count),
                ("handler_duration_seconds_sum", repr(self.handler_duration_seconds_sum))])
        metric("handler_errors_total", "counter", "Handlers that raised.",
               [("handler_errors_total", self.handler_errors_total)])
        metric("stage_errors_total", "counter", "Connections closed because a stage before the handler failed.",
               [(f'stage_errors_total{{stage="{stage}"}}', count)
                for stage, count in sorted(self.stage_errors_by_stage.items())]
               or [("stage_errors_total", 0)])
        metric("connections_closed_by_reason_total", "counter", "Connections closed other than by finishing.",
               [(f'connections_closed_by_reason_total{{reason="{reason}"}}', count)
                for reason, count in sorted(self.closed_by_reason.items())]
               or [("connections_closed_by_reason_total", 0)])
        return "\n".join(lines) + "\n"
