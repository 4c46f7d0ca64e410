"""What servekit reports about its connections: frozen values, standard library only.

:class:`DrainReport` is what :meth:`servekit.Bound.drain` returns: how many
connections finished during the drain, and which were cut at its deadline.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ("Connection", "DrainReport")


class Connection(NamedTuple):
    """One live connection (or datagram) the server holds.

    Attributes:
        peer: the client's address.
        age: seconds since it was accepted.
        state: ``"parked"`` (waiting on the loop for its first request, in
            no worker) or ``"running"`` (with a worker).
    """

    peer: object
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
    cut_connections: tuple[Connection, ...]

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
