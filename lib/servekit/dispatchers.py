"""Dispatchers: where and when the handler of each request runs.

A dispatcher is a frozen description; its ``start(host)`` makes the mutable
:class:`~servekit.abc.Workers` of one bound server.  The protocol is shaped
by the demanding case, a process per request: the request handed to the
worker (``dispatch``), the host's route run there (``host.run``), a
parent-side release (``host.discard``), periodic service actions (reaping
children), capacity (the loop asks before it accepts) and a close that
waits -- or not -- for the work in flight.
"""

from __future__ import annotations

import os
from typing import TypeVar, final

import attrs

from ._runtime.pool import PoolWorkers
from ._runtime.workers import ChildWorkers, InlineWorkers, ThreadWorkers
from ._validate import flag, int_in_range, optional_int_in_range
from .abc import Dispatcher, WorkerHost, Workers

_ReqT = TypeVar("_ReqT")

__all__ = (
    "Dispatcher",
    "Forked",
    "Inline",
    "Pooled",
    "Threaded",
    "WorkerHost",
    "Workers",
    "forked",
    "inline",
    "pooled",
    "threaded",
)


# -- descriptions ------------------------------------------------------------


@final
@attrs.frozen
class Inline:
    """Handle each request in the serving thread, one at a time."""

    def start(self, host: WorkerHost[_ReqT], /) -> Workers[_ReqT]:
        return InlineWorkers(host)


@final
@attrs.frozen(kw_only=True)
class Threaded:
    """A new thread for each request.

    Attributes:
        daemon: make the threads daemon threads (they do not keep the
            interpreter alive and ``close()`` does not wait for them).
        block_on_close: ``close()`` waits for every running handler.
    """

    daemon: bool = attrs.field(default=False, validator=flag("daemon"))
    block_on_close: bool = attrs.field(default=True, validator=flag("block_on_close"))

    def start(self, host: WorkerHost[_ReqT], /) -> Workers[_ReqT]:
        return ThreadWorkers(host, self.daemon, self.block_on_close)


@final
@attrs.frozen(kw_only=True)
class Pooled:
    """A fixed pool of worker threads, started when the server is bound, and a bounded queue.

    Each request goes on a hand-off queue that an idle worker takes it off.
    When the queue holds ``queue`` requests the server stops accepting:
    new clients wait in the kernel's listen backlog (as Go's
    ``netutil.LimitListener`` does) instead of getting threads, and the
    server accepts again as soon as a worker takes a request off the queue.
    At most ``workers + queue`` requests are accepted and not finished.

    A blocking per-connection handler (one that reads until the client
    closes) holds a worker for the connection's whole life, so size the pool
    for the connections you want served at once: with every worker busy and
    the queue full, the next clients are not served -- and do not get an
    error -- until a connection ends.

    A handler's ``SystemExit`` or ``KeyboardInterrupt`` stops the server as
    with :class:`Threaded`; a new thread takes the failed worker's place.
    The workers are daemon threads (an idle pool does not keep the
    interpreter alive); ``close()`` is what waits for them.

    Attributes:
        workers: the number of worker threads (at least 1).
        queue: how many accepted requests may wait for a worker; ``None``:
            as many as ``workers``.
        block_on_close: ``close()`` waits until the workers have handled
            every request queued or running, and joins them.  Without it,
            queued requests no worker has started are dropped (a stream
            connection is closed unanswered) and running handlers are not
            waited for.
    """

    workers: int = attrs.field(default=16, validator=int_in_range("workers", 1))
    queue: int | None = attrs.field(default=None, validator=optional_int_in_range("queue", 1))
    block_on_close: bool = attrs.field(default=True, validator=flag("block_on_close"))

    def start(self, host: WorkerHost[_ReqT], /) -> Workers[_ReqT]:
        limit = self.workers if self.queue is None else self.queue
        return PoolWorkers(host, self.workers, limit, self.block_on_close)


@final
@attrs.frozen(kw_only=True)
class Forked:
    """A new child process for each request.

    The child closes the server's listening socket, runs the handler, releases
    the request and leaves with ``os._exit`` (status 0, or 1 if the handler
    failed); the parent closes its copy of the request at once.  A child ends
    on ``SIGTERM`` (the server resets it to its default action in every
    child, whatever handler the parent installed), so a drain can stop it.

    Attributes:
        max_children: at most this many children at a time; when there are
            that many, the server stops accepting until one exits.
        block_on_close: ``close()`` waits for every child to exit.
    """

    max_children: int = attrs.field(default=40, validator=int_in_range("max_children", 1))
    block_on_close: bool = attrs.field(default=True, validator=flag("block_on_close"))

    def start(self, host: WorkerHost[_ReqT], /) -> Workers[_ReqT]:
        if not hasattr(os, "fork"):
            raise RuntimeError("the forked dispatcher needs os.fork(), which this platform lacks")
        return ChildWorkers(host, self.max_children, self.block_on_close)


inline = Inline
"""Handle requests one at a time in the thread that serves (the classic ``TCPServer``)."""

threaded = Threaded
"""A thread per request (the classic ``ThreadingMixIn``): ``threaded(*, daemon=False, block_on_close=True)``."""

pooled = Pooled
"""A fixed pool of worker threads and a bounded queue: ``pooled(*, workers=16, queue=None, block_on_close=True)``."""

forked = Forked
"""A child process per request (the classic ``ForkingMixIn``): ``forked(*, max_children=40, block_on_close=True)``."""
