"""The running side of the dispatchers: the workers of one bound server.

:mod:`servekit.dispatchers` holds the frozen descriptions users compose;
this module holds what they start -- a job tuple, the protocols between a
server and its workers, and the inline, thread and child-process workers.
It imports nothing beyond the standard library, so ``servekit.classic``,
which drives these workers directly, loads neither attrs nor logging: a
forking server copies what the process holds, page by page, for every
request.
"""

from __future__ import annotations

import gc
import itertools
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Final, final

from .abc import Job, WorkerHost, Workers

__all__ = (
    "INLINE_WORKERS",
    "ChildWorkers",
    "InlineWorkers",
    "Job",
    "ThreadWorkers",
    "WorkerHost",
    "Workers",
)


# -- inline ------------------------------------------------------------------


@final
class InlineWorkers:
    __slots__ = ()

    def dispatch(self, job: Job, /) -> None:
        job.run()

    def capacity(self) -> None:
        return None

    def service_actions(self) -> None:
        pass

    def close(self) -> None:
        pass


INLINE_WORKERS: Final = InlineWorkers()


# -- threaded ----------------------------------------------------------------


_thread_numbers: Final = itertools.count(1)


@final
class ThreadWorkers:
    """A new thread per job.

    ``daemon`` and ``block_on_close`` may be changed while the workers run
    (``servekit.classic`` reads them from class attributes per request): a
    thread is joined by :meth:`close` if it was started while the workers
    blocked on close with non-daemon threads, and ``close`` joins only if
    they still do.
    """

    __slots__ = ("_host", "_live", "block_on_close", "daemon")

    def __init__(self, host: WorkerHost, daemon: bool, block_on_close: bool) -> None:
        self._host = host
        self.daemon = daemon
        self.block_on_close = block_on_close
        # The threads close() must join.
        self._live: set[threading.Thread] = set()

    def dispatch(self, job: Job, /) -> None:
        daemon = self.daemon
        thread = threading.Thread(
            target=self._work, args=(job,), name=f"servekit-worker-{next(_thread_numbers)}", daemon=daemon
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

    def _work(self, job: Job) -> None:
        try:
            job.run()
        except BaseException as exc:
            self._host.worker_failed(exc)
        finally:
            self._live.discard(threading.current_thread())

    def capacity(self) -> None:
        return None

    def service_actions(self) -> None:
        pass

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


# -- forked ------------------------------------------------------------------


def _flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:  # noqa: BLE001 - nothing can be reported from here
            pass


@final
class ChildWorkers:
    """A child process per job, at most ``max_children`` at a time.

    ``max_children`` and ``block_on_close`` may be changed while the workers
    run (``servekit.classic`` reads them from class attributes per request);
    ``pids`` is the live set of children not reaped yet.

    With *flush_stdio*, ``sys.stdout`` and ``sys.stderr`` are flushed before
    each fork (so a child does not inherit, and write again, what the parent
    has buffered) and before the child leaves with ``os._exit`` (which skips
    that clean-up), as :mod:`multiprocessing` does.  With *freeze_gc* the
    child moves the objects it inherited out of the collector's reach
    (``gc.freeze()``), so that a collection in a long-lived child does not
    touch, and copy, every page of the parent's heap.  Both cost page copies
    in every child; ``servekit.classic`` turns them off, as ``socketserver``
    does neither.
    """

    __slots__ = ("_flush", "_freeze", "_host", "_pidfds", "block_on_close", "max_children", "pids")

    def __init__(
        self,
        host: WorkerHost,
        max_children: int,
        block_on_close: bool,
        *,
        flush_stdio: bool = True,
        freeze_gc: bool = True,
    ) -> None:
        self._host = host
        self._flush = flush_stdio
        self._freeze = freeze_gc
        self.max_children = max_children
        self.block_on_close = block_on_close
        self.pids: set[int] = set()
        # pid -> pidfd, opened only while the workers are saturated.
        self._pidfds: dict[int, int] = {}

    def fork(self) -> int:
        """Start a child: returns ``0`` in the child, the child's pid in the parent.

        The child must leave with ``os._exit``; the parent's copy is tracked
        (``pids``) and reaped by :meth:`reap`.
        """
        if self._flush:
            _flush_stdio()
        pid = os.fork()
        if pid:
            self.pids.add(pid)
        elif self._freeze:
            gc.freeze()
        return pid

    def dispatch(self, job: Job, /) -> None:
        if self.fork() == 0:  # the child: handle the request, then leave without returning
            status = 1
            try:
                self._host.close_inherited()
                job.run()
                status = 0
            finally:
                if self._flush:
                    _flush_stdio()
                os._exit(status)
        job.discard()

    def capacity(self) -> Sequence[int] | None:
        if len(self.pids) < self.max_children:
            return None
        self.reap()
        if len(self.pids) < self.max_children:
            return None
        return self._watch()

    def _watch(self) -> list[int]:
        # A pidfd turns readable when its process exits: the loop can wait
        # on them instead of polling.
        if not hasattr(os, "pidfd_open"):
            return []
        for pid in self.pids:
            if pid not in self._pidfds:
                try:
                    self._pidfds[pid] = os.pidfd_open(pid)
                except OSError:  # gone already, or pidfds unsupported: poll instead
                    return []
        return list(self._pidfds.values())

    def service_actions(self) -> None:
        self.reap()

    def reap(self, *, block: bool = False) -> None:
        """Reap finished children; with *block*, wait until every child has exited."""
        # Only our own children, one by one: waitpid(-1) could reap a child
        # that some other part of the program is waiting for.
        for pid in list(self.pids):
            try:
                done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
            except ChildProcessError:  # reaped by someone else
                done = pid
            if done:
                self.pids.discard(pid)
                fd = self._pidfds.pop(pid, -1)
                if fd >= 0:
                    os.close(fd)

    def close(self) -> None:
        self.reap(block=self.block_on_close)
        # Children left running (block_on_close=False) are no longer watched.
        for fd in self._pidfds.values():
            os.close(fd)
        self._pidfds.clear()
