"""Admission control: how many connections a server holds at most, in all and per peer.

``server(..., admission=Admission(max_connections=1000, per_peer=20))``.
A connection over a limit never reaches a handler:

- over ``max_connections``, with no *busy* callback, the server stops
  accepting until one of its connections ends -- new clients wait in the
  kernel's listen backlog, as behind Go's ``LimitListener``;
- over ``max_connections`` with a *busy* callback, or over ``per_peer``
  (always), the connection is accepted, *busy* (if given) is called with its
  socket and peer -- to write a short "busy" answer -- and it is closed.

Every refusal is counted (``stats().rejected_by_reason``) and reported as a
:class:`~servekit.events.Rejected` event.  A connection counts from its
accept until it is released, at the gate or with a worker.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import final

import attrs

from ._validate import optional_int_in_range

__all__ = ("Admission", "BusyCallback")

BusyCallback = Callable[[socket.socket, object], object]
"""Called with a refused connection's socket and peer address, on the serving thread, before it is closed."""


@final
@attrs.frozen(kw_only=True)
class Admission:
    """The admission limits of a server (``None``: no limit).

    Attributes:
        max_connections: at most this many connections (or datagrams) held
            at a time, at the gate and with workers.  At the limit the server
            pauses accepting, unless *busy* is given.
        per_peer: at most this many from one peer (an IP peer's host; a Unix
            peer's whole address -- every unnamed Unix client counts as one
            peer, ``""``).  Over it a connection is refused at once.
        busy: called with a refused connection's socket and peer before it is
            closed -- on the serving thread, so it must not block: a short
            ``sock.send(b"busy\\r\\n")`` fits.  Its exceptions are reported
            as a handler's are.  With it, ``max_connections`` refuses instead
            of pausing.
    """

    max_connections: int | None = attrs.field(default=None, validator=optional_int_in_range("max_connections", 1))
    per_peer: int | None = attrs.field(default=None, validator=optional_int_in_range("per_peer", 1))
    busy: BusyCallback | None = attrs.field(default=None, eq=False)

    def __attrs_post_init__(self) -> None:
        if self.busy is not None and not callable(self.busy):
            raise TypeError(f"busy must be callable or None, not {type(self.busy).__name__}: {self.busy!r}")
