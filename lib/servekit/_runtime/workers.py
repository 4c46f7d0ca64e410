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
import math
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final, Generic, TypeVar, final

from ..abc import WorkerHost

__all__ = ("ChildWorkers", "InlineWorkers", "ThreadWorkers")

_ReqT = TypeVar("_ReqT")

_thread_numbers: Final = itertools.count(1)

#: How often terminate() checks on a child it has no pidfd for, in seconds.
_CHECK_INTERVAL: Final = 0.01


@final
class InlineWorkers(Generic[_ReqT]):
    """Handle each request at once, in the thread that dispatches it."""

    __slots__ = ("_run",)

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

    In the child the host's sockets that the child must not hold are closed
    (``close_inherited``), the route runs, and the child leaves with
    ``os._exit``: status 0, or 1 if an exception left the route.  In the
    parent the host's ``discard`` drops the parent's copy of the request at
    once.  ``max_children`` and ``block_on_close`` may be changed while the
    workers run; ``pids`` is the live set of children not reaped yet.

    With *flush_stdio*, ``sys.stdout`` and ``sys.stderr`` are flushed before
    each fork (so a child does not inherit, and write again, what the parent
    has buffered) and before the child leaves with ``os._exit`` (which skips
    that clean-up), as :mod:`multiprocessing` does.  With *freeze_gc* the
    child moves the objects it inherited out of the collector's reach
    (``gc.freeze()``), so that a collection in a long-lived child does not
    touch, and copy, every page of the parent's heap.  Both cost page copies
    in every child; ``servekit.classic`` turns them off, as ``socketserver``
    does neither.

    With *default_sigterm* the child puts ``SIGTERM`` back to its default
    action before anything else: a Python handler the parent installed is
    inherited across the fork, and would keep the child from ending when it
    is sent ``SIGTERM`` (by :meth:`terminate`, say).

    If the host has a ``child_exited(request, status)`` method, the parent
    calls it once for every child it reaps -- in :meth:`reap`, :meth:`close`
    or :meth:`terminate`, in the thread that called them -- with the request
    that child handled and its exit status as :func:`os.waitstatus_to_exitcode`
    gives it (``-N``: ended by signal N).  A child that another part of the
    program reaped first has lost its status to that reaper: it is reported
    with status 0.  A pid in ``pids`` that these workers did not fork is
    reaped without a call.  An exception from ``child_exited`` propagates;
    the children not reaped yet then are by the next reap.  The workers
    are not meant to be reaped from two threads at once.
    """

    __slots__ = (
        "_default_sigterm",
        "_exited",
        "_flush",
        "_freeze",
        "_host",
        "_pidfds",
        "_requests",
        "block_on_close",
        "max_children",
        "pids",
    )

    def __init__(
        self,
        host: WorkerHost[_ReqT],
        max_children: int,
        block_on_close: bool,
        *,
        flush_stdio: bool = True,
        freeze_gc: bool = True,
        default_sigterm: bool = False,
    ) -> None:
        self._host = host
        self._flush = flush_stdio
        self._freeze = freeze_gc
        self._default_sigterm = default_sigterm
        self.max_children = max_children
        self.block_on_close = block_on_close
        self.pids: set[int] = set()
        # pid -> pidfd, opened while the workers are saturated or terminating.
        self._pidfds: dict[int, int] = {}
        # The host's optional exit callback and, only if there is one, the
        # request each child not reaped yet is handling (pid -> request).
        exited: Callable[[_ReqT, int], object] | None = getattr(host, "child_exited", None)
        self._exited = exited
        self._requests: dict[int, _ReqT] = {}

    def dispatch(self, request: _ReqT, /) -> None:
        if self._flush:
            _flush_stdio()
        pid = os.fork()
        if pid:
            self.pids.add(pid)
            if self._exited is not None:
                self._requests[pid] = request
            self._host.discard(request)
            return
        # The child: handle the request, then leave without returning.
        status = 1
        try:
            if self._default_sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if self._freeze:
                gc.freeze()
            host = self._host
            host.close_inherited()
            host.run(request)
            status = 0
        finally:
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
            self._reap(pid, flags)

    def _reap(self, pid: int, flags: int) -> bool:
        """Reap child *pid* if it has exited (*flags* 0: once it has); ``True`` if it is gone now."""
        try:
            done, status = os.waitpid(pid, flags)
        except ChildProcessError:  # reaped by someone else, who got its status
            done, status = pid, 0
        if not done:
            return False
        self.pids.discard(pid)
        fd = self._pidfds.pop(pid, -1)
        if fd >= 0:
            os.close(fd)
        exited = self._exited
        if exited is not None:
            try:
                request = self._requests.pop(pid)
            except KeyError:  # not forked here (a pid set adopted by servekit.classic)
                return True
            exited(request, os.waitstatus_to_exitcode(status))
        return True

    def terminate(self, grace: float) -> list[int]:
        """End every child: ``SIGTERM`` now, ``SIGKILL`` to those still running after *grace* seconds.

        Each child is reaped as it exits (and reported to the host's
        ``child_exited``); the call returns once all of them are, with the
        pids of the children that had to be killed.  The wait is on the
        children's pidfds; only for a child without one (no pidfds on this
        system, or no free fd) does it check every 10 ms.  With no child
        running it returns ``[]`` at once.  Call it from the thread that
        reaps, or once the serving loop has stopped.
        """
        if not grace >= 0:  # also refuses NaN
            raise ValueError(f"grace must be a number of seconds >= 0, not {grace!r}")
        deadline = time.monotonic() + grace
        killed: list[int] = []
        try:
            # Children that are done are reaped, not signalled: only a pid
            # not reaped yet is sure to still be ours.
            self.reap()
            watched: dict[int, int] = {}  # pidfd -> pid
            unwatched: list[int] = []
            for pid in list(self.pids):
                fd = self._pidfd(pid)
                if fd >= 0:
                    watched[fd] = pid
                else:
                    unwatched.append(pid)
                self._signal(pid, signal.SIGTERM)
            self._await_exits(watched, unwatched, deadline)
        finally:
            # Whatever is left (after the grace, or after an exception) is
            # killed, and then waited for: that wait is bounded.
            for pid in list(self.pids):
                if self._signal(pid, signal.SIGKILL):
                    killed.append(pid)
            for pid in list(self.pids):
                self._reap(pid, 0)
        return killed

    def _pidfd(self, pid: int) -> int:
        """A pidfd of child *pid*, kept in ``_pidfds`` until it is reaped; -1 if it cannot have one now."""
        fd = self._pidfds.get(pid, -1)
        if fd < 0 and hasattr(os, "pidfd_open"):
            try:
                fd = self._pidfds[pid] = os.pidfd_open(pid)
            except OSError:  # gone already, out of fds, or unsupported: poll instead
                return -1
        return fd

    def _signal(self, pid: int, signum: int) -> bool:
        """Send *signum* to child *pid*, through its pidfd if it has one; ``False`` if it is gone."""
        fd = self._pidfds.get(pid, -1)
        try:
            if fd >= 0 and hasattr(signal, "pidfd_send_signal"):
                # Through the pidfd the signal cannot reach a process that
                # has taken over the pid of a child reaped elsewhere.
                signal.pidfd_send_signal(fd, signum)
            else:
                os.kill(pid, signum)
        except ProcessLookupError:
            return False
        return True

    def _await_exits(self, watched: dict[int, int], unwatched: list[int], deadline: float) -> None:
        """Reap the children as they exit, until all are reaped or ``time.monotonic()`` passes *deadline*.

        *watched* maps the pidfds of children to their pids; the children in
        *unwatched* have no pidfd and are checked every 10 ms.
        """
        poller = select.poll() if watched else None
        if poller is not None:
            for fd in watched:
                poller.register(fd, select.POLLIN)
        while watched or unwatched:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if unwatched:
                left = min(left, _CHECK_INTERVAL)
            if poller is not None and watched:
                for fd, _ in poller.poll(math.ceil(left * 1000)):
                    # Readable: that child has exited.  Unregistered before
                    # _reap closes the pidfd.
                    poller.unregister(fd)
                    pid = watched.pop(fd)
                    if not self._reap(pid, os.WNOHANG):
                        unwatched.append(pid)
            else:
                threading.Event().wait(left)
            unwatched[:] = [pid for pid in unwatched if not self._reap(pid, os.WNOHANG)]

    def close(self) -> None:
        self.reap(block=self.block_on_close)
        # Children left running (block_on_close=False) are no longer watched.
        for fd in self._pidfds.values():
            os.close(fd)
        self._pidfds.clear()
