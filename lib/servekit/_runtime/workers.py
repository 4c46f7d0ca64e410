"""The workers: where a dispatched request is handled.

Each kind takes the request itself (:meth:`dispatch`) and hands it to the
host's route in the worker (:meth:`~servekit.abc.WorkerHost.run`): at once
(:class:`InlineWorkers`), in a new thread (:class:`ThreadWorkers`) or in a
new child process (:class:`ChildWorkers`).  The composed server and
``servekit.classic`` use the same classes, through this one API.
"""

from __future__ import annotations

import gc
import itertools
import os
import sys
import threading
from collections.abc import Sequence

from .._lite import TYPE_CHECKING, Generic, TypeVar, final
from .._traits import WorkerTraits

if TYPE_CHECKING:
    from typing import Final, NoReturn

    from ..abc import WorkerHost

__all__ = ("ChildWorkers", "InlineWorkers", "ThreadWorkers")

_ReqT = TypeVar("_ReqT")

_thread_numbers: Final = itertools.count(1)


@final
class InlineWorkers(Generic[_ReqT]):
    """Handle each request at once, in the thread that dispatches it."""

    __slots__ = ("_run",)

    #: On the loop's thread; never full; nothing to service.
    traits: Final = WorkerTraits("loop", capacity=False, service=False)

    def __init__(self, host: WorkerHost[_ReqT]) -> None:
        self._run = host.run

    def dispatch(self, request: _ReqT, /) -> None:
        self._run(request)

    def capacity(self) -> None:
        return None

    def service_actions(self) -> None:
        pass

    def close(self) -> None:
        pass


@final
class ThreadWorkers(Generic[_ReqT]):
    """A new thread per request.

    ``daemon`` and ``block_on_close`` may be changed while the workers run
    (``servekit.classic`` sets them from its class attributes at each
    request): :meth:`close` joins the threads started while the workers
    blocked on close with non-daemon threads, if they still do.  A
    ``BaseException`` that leaves the host's route (``SystemExit``,
    ``KeyboardInterrupt``) goes to the host's ``worker_failed``.
    """

    __slots__ = ("_host", "_live", "_run", "block_on_close", "daemon")

    #: In threads; never full; nothing to service.
    traits: Final = WorkerTraits("threads", capacity=False, service=False)

    def __init__(self, host: WorkerHost[_ReqT], daemon: bool, block_on_close: bool) -> None:
        self._host = host
        self._run = host.run
        self.daemon = daemon
        self.block_on_close = block_on_close
        # The threads close() must join, while they run.
        self._live: set[threading.Thread] = set()

    def dispatch(self, request: _ReqT, /) -> None:
        daemon = self.daemon
        thread = threading.Thread(
            target=self._work, args=(request,), name=f"servekit-worker-{next(_thread_numbers)}", daemon=daemon
        )
        if daemon or not self.block_on_close:
            thread.start()
            return
        live = self._live
        live.add(thread)
        try:
            thread.start()
        except BaseException:
            live.discard(thread)
            raise

    def _work(self, request: _ReqT) -> None:
        try:
            self._run(request)
        except BaseException as exc:
            self._host.worker_failed(exc)
        finally:
            self._live.discard(threading.current_thread())

    def capacity(self) -> None:
        return None

    def service_actions(self) -> None:
        pass

    def running(self) -> list[threading.Thread]:
        """The request threads still running that :meth:`close` would join (a snapshot)."""
        return [t for t in list(self._live) if t.is_alive()]

    def close(self) -> None:
        if not self.block_on_close:
            return
        live = self._live
        me = threading.current_thread()
        while live:
            for thread in list(live):
                if thread is not me:
                    thread.join()
                live.discard(thread)


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:  # noqa: BLE001 - nothing can be reported from here
            pass


@final
class ChildWorkers(Generic[_ReqT]):
    """A child process per request, at most ``max_children`` at a time.

    :meth:`dispatch` forks (:meth:`fork`); in the child the host's
    ``close_inherited`` runs first (unless *close_inherited* is false), then
    the route (``run``), and the child leaves with ``os._exit`` (:meth:`exit`):
    status 0, or 1 if an exception left the route.  In the parent the host's
    ``discard`` drops the parent's copy of the request at once.
    ``max_children`` and ``block_on_close`` may be changed while the workers
    run; ``pids`` is the live set of children not reaped yet.  Every child
    reaped here is reported (unless *report_exits* is false) to the host's
    ``child_exited(pid, status)``, in the thread that reaped it
    (:meth:`reap`, :meth:`close`), with the status
    :func:`os.waitstatus_to_exitcode` gives (``-N``: ended by signal N; a
    child another part of the program reaped first is reported with 0).

    With *flush_stdio*, ``sys.stdout`` and ``sys.stderr`` are flushed before
    each fork (so a child does not inherit, and write again, what the parent
    has buffered) and before the child leaves with ``os._exit`` (which skips
    that clean-up), as :mod:`multiprocessing` does.  With *freeze_gc* the
    child moves the objects it inherited out of the collector's reach
    (``gc.freeze()``), so that a collection in a long-lived child does not
    touch, and copy, every page of the parent's heap.  Both cost page copies
    in every child; ``servekit.classic`` turns them off, as ``socketserver``
    does neither.  Without *report_exits* ``child_exited`` is not called
    (for a host that does nothing with it: two calls fewer per request), and
    without *close_inherited* neither is ``close_inherited`` (for a host
    whose children keep all they inherit: one call, and the pages it
    touches, fewer in every child).

    With no *host* (then without *report_exits* and *close_inherited*) the
    workers only fork, track, limit and reap: the owner calls :meth:`fork`
    and handles the request in the child itself, as ``socketserver`` does
    (``servekit.classic``: a child that runs on in the frame that forked
    writes fewer pages than one that calls into a route).

    Raises:
        ValueError: no *host*, with *report_exits* or *close_inherited*.
    """

    __slots__ = (
        "_close_inherited",
        "_flush",
        "_freeze",
        "_host",
        "_pidfds",
        "_report",
        "block_on_close",
        "max_children",
        "pids",
    )

    #: In child processes; full at max_children; reaps in service_actions.
    traits: Final = WorkerTraits("processes")

    def __init__(
        self,
        host: WorkerHost[_ReqT] | None,
        max_children: int,
        block_on_close: bool,
        *,
        flush_stdio: bool = True,
        freeze_gc: bool = True,
        report_exits: bool = True,
        close_inherited: bool = True,
    ) -> None:
        if host is None and (report_exits or close_inherited):
            raise ValueError(
                f"ChildWorkers without a host: report_exits={report_exits!r} and "
                f"close_inherited={close_inherited!r} need one (pass False for both)"
            )
        self._host = host
        self._close_inherited = close_inherited
        self._report = report_exits
        self._flush = flush_stdio
        self._freeze = freeze_gc
        self.max_children = max_children
        self.block_on_close = block_on_close
        self.pids: set[int] = set()
        # pid -> pidfd, opened while the workers are saturated.
        self._pidfds: dict[int, int] = {}

    def dispatch(self, request: _ReqT, /) -> None:
        host = self._host
        if host is None:
            raise TypeError("dispatch(): these child workers have no host to run a request; fork() instead")
        # Looked up in the parent, at every request: the type cache then
        # holds the lookup when the child makes the call (a child that missed
        # it would write to, and so copy, a page of the cache and one of each
        # class it searched).
        run = host.run
        if not self.fork():
            host.discard(request)
            return
        status = 1
        try:
            run(request)
            status = 0
        finally:
            self.exit(status)

    def fork(self) -> bool:
        """Fork a child: ``False`` in the parent (the child is in :attr:`pids`), ``True`` in the child.

        The child has closed what it should not hold and, with a host and
        *close_inherited*, run its ``close_inherited``; it must leave with
        :meth:`exit` (or ``os._exit``), whatever happens: never return into
        the code that called the caller.
        """
        if self._flush:
            _flush_stdio()
        # What the child needs is read before the fork: reads made in the
        # child would touch (and copy) this object's page.
        pidfds, freeze, close_inherited, host = self._pidfds, self._freeze, self._close_inherited, self._host
        pid = os.fork()
        if pid:
            self.pids.add(pid)
            return False
        try:
            # The parent's pidfds are not the child's: held here, a pidfd the
            # parent closes while its loop still waits on it would stay in
            # the loop's epoll set (it lives as long as any process holds it).
            if pidfds:
                for fd in pidfds.values():
                    os.close(fd)
                pidfds.clear()
            if freeze:
                gc.freeze()
            if close_inherited and host is not None:
                host.close_inherited()
        except BaseException:
            self.exit(1)
        return True

    def exit(self, status: int) -> NoReturn:
        """In a child: leave with *status* (``os._exit``), flushing stdio first if the workers flush."""
        if self._flush:
            _flush_stdio()
        os._exit(status)

    def capacity(self) -> Sequence[int] | None:
        if len(self.pids) < self.max_children:
            return None
        self.reap()
        if len(self.pids) < self.max_children:
            return None
        return self._watch()

    def _watch(self) -> list[int]:
        # A pidfd turns readable when its process exits: the loop can wait
        # on them instead of polling.  Without a free fd (or without pidfds)
        # an empty list makes the loop poll.
        for pid in self.pids:
            if self._pidfd(pid) < 0:
                return []
        return list(self._pidfds.values())

    def service_actions(self) -> None:
        self.reap()

    def reap(self, *, block: bool = False) -> None:
        """Reap finished children; with *block*, wait until every child has exited."""
        # Only our own children, one by one: waitpid(-1) could reap a child
        # that some other part of the program is waiting for.
        flags = 0 if block else os.WNOHANG
        for pid in list(self.pids):
            try:
                done, status = os.waitpid(pid, flags)
            except ChildProcessError:  # reaped by someone else, who got its status
                done, status = pid, 0
            if not done:
                continue
            self.pids.discard(pid)
            if self._pidfds:
                fd = self._pidfds.pop(pid, -1)
                if fd >= 0:
                    os.close(fd)
            if self._report and self._host is not None:
                self._host.child_exited(pid, os.waitstatus_to_exitcode(status))

    def _pidfd(self, pid: int) -> int:
        """A pidfd of child *pid*, kept in ``_pidfds`` until it is reaped; -1 if it cannot have one now."""
        fd = self._pidfds.get(pid, -1)
        if fd < 0 and hasattr(os, "pidfd_open"):
            try:
                fd = self._pidfds[pid] = os.pidfd_open(pid)
            except OSError:  # gone already, out of fds, or unsupported: poll instead
                return -1
        return fd

    def close(self) -> None:
        self.reap(block=self.block_on_close)
        # Children left running (block_on_close=False) are no longer watched.
        for fd in self._pidfds.values():
            os.close(fd)
        self._pidfds.clear()
