"""Deadlines of a stream connection: how long a client may take, and where it is cut.

:class:`Deadlines` is a frozen description; its :meth:`~Deadlines.clock`
makes the private clock of one connection, which
:class:`~servekit.connections.StreamConnection` takes as ``deadlines=`` and
which bounds each read of its ``rfile`` and write of its ``wfile``.  A
deadline that passes raises :exc:`~servekit.errors.DeadlineExceeded`
(a ``TimeoutError``) naming it, and the connection is no longer usable.
"""

from __future__ import annotations

from typing import final

import attrs

from ._deadline_io import _DeadlineClock
from ._validate import seconds
from .errors import DeadlineExceeded

__all__ = ("DeadlineExceeded", "Deadlines")


@final
@attrs.frozen(kw_only=True)
class Deadlines:
    """Per-connection time limits, in seconds, for any protocol over a stream transport.

    Each limit is ``None`` (no limit) or a number of seconds > 0.  Time is
    ``time.monotonic()``, and the connection's start is when its clock is
    made (:meth:`clock`).  The limits bound what the handler does through
    ``rfile`` and ``wfile``: a handler busy between a read and a write is
    never interrupted (time it spends there counts only against
    ``lifetime``, at its next read or write).  On a socket with no ``idle``
    limit, ``rfile``'s reads wait in the kernel under ``SO_RCVTIMEO``;
    taking ``conn.socket`` clears it, so direct reads block as documented
    (only a raw read of the descriptor, ``os.read(rfile.fileno(), ...)``,
    could see that timeout as ``BlockingIOError``).

    Attributes:
        first_byte: from the connection's start to the client's first byte
            (met at once when the connection has a prefix, bytes the server
            read already).
        idle: the longest a single read or write may wait, however long
            the connection.  The socket's own timeout is set to it too, so
            a handler that uses ``conn.socket`` directly is bounded by it
            (with a plain ``TimeoutError``).
        request: the time the client has to deliver what the handler reads,
            counted from the connection's start and restarted after each
            write through ``wfile`` (each response): a client trickling one
            byte a second without completing a request is cut, although no
            single read waits long enough for ``idle`` to.
        lifetime: the connection's whole life: no read or write goes past
            it.
    """

    first_byte: float | None = attrs.field(default=None, validator=seconds("first_byte", positive=True))
    idle: float | None = attrs.field(default=None, validator=seconds("idle", positive=True))
    request: float | None = attrs.field(default=None, validator=seconds("request", positive=True))
    lifetime: float | None = attrs.field(default=None, validator=seconds("lifetime", positive=True))

    def clock(self, start: float | None = None) -> _DeadlineClock:
        """The clock of one connection, to pass as ``StreamConnection(..., deadlines=clock)``.

        Cheap (one small object): make one per connection, when it is
        accepted.  *start* is the connection's start in ``time.monotonic()``
        time (default: now).  The clock is the connection's own: it is not
        shared, and not reused.
        """
        return _DeadlineClock(self.first_byte, self.idle, self.request, self.lifetime, start)
