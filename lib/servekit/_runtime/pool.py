"""A bounded pool of worker threads: a fixed number of threads and a bounded hand-off queue.

:class:`PoolWorkers` starts its threads up front.  :meth:`~PoolWorkers.dispatch`
puts the request on a queue (it never blocks: the loop dispatches only when
:meth:`~PoolWorkers.capacity` said there is room) and an idle worker takes it
off and calls the host's ``run``.  When ``limit`` requests wait on the queue
the pool is full: ``capacity()`` returns one fd, which the first worker to
take a request off the full queue makes readable, and the loop leaves the
listener alone until then -- new clients wait in the kernel's listen backlog.

The fd (an eventfd, or a pipe where there is none) is made the first time
the pool is full and kept until :meth:`~PoolWorkers.close`.  While the pool
is not full, neither ``dispatch`` nor ``capacity`` makes a system call for
it: the worker writes to the fd only after ``capacity()`` reported the pool
full, and ``capacity()`` empties it (seen by a flag) before it reports room
again, so a stale signal never makes the loop spin.
"""

from __future__ import annotations

import enum
import itertools
import os
import queue
import threading
from collections.abc import Sequence
from typing import Final, Generic, TypeVar, final

from ..abc import WorkerHost, WorkerTraits

__all__ = ("PoolWorkers",)

_ReqT = TypeVar("_ReqT")

_thread_numbers: Final = itertools.count(1)


class _Stop(enum.Enum):
    """What a worker takes off the queue to leave (one per worker, after what is queued)."""

    STOP = 0


_STOP: Final = _Stop.STOP


class _Signal:
    """An fd that :meth:`set` makes readable and :meth:`clear` empties (an eventfd, else a pipe)."""

    __slots__ = ("fd", "fds", "_write_fd")

    def __init__(self) -> None:
        if hasattr(os, "eventfd"):
            self.fd = self._write_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # pragma: no cover - not Linux
            self.fd, self._write_fd = os.pipe()
            try:
                os.set_blocking(self.fd, False)
                os.set_blocking(self._write_fd, False)
            except BaseException:
                os.close(self.fd)
                os.close(self._write_fd)
                raise
        self.fds = (self.fd,)

    def set(self) -> None:
        try:
            if self.fd == self._write_fd:
                os.eventfd_write(self.fd, 1)
            else:  # pragma: no cover - not Linux
                os.write(self._write_fd, b"\0")
        except BlockingIOError:  # full: it is readable already
            pass

    def clear(self) -> None:
        try:
            if self.fd == self._write_fd:
                os.eventfd_read(self.fd)
            else:  # pragma: no cover - not Linux
                while os.read(self.fd, 512):
                    pass
        except BlockingIOError:  # empty now
            pass

    def close(self) -> None:
        os.close(self.fd)
        if self._write_fd != self.fd:  # pragma: no cover - not Linux
            os.close(self._write_fd)


@final
class PoolWorkers(Generic[_ReqT]):
    """``size`` worker threads started up front, and a hand-off queue of at most ``limit`` requests.

    A ``BaseException`` that leaves the host's route (``SystemExit``,
    ``KeyboardInterrupt``) goes to the host's ``worker_failed``, and a new
    thread takes the failed one's place, so the pool keeps ``size`` workers.

    :meth:`close` (idempotent): with ``block_on_close`` the workers finish
    every request queued or running, then leave and are joined, and the
    pool's fd is closed; nothing of the pool outlives it.  Without it, the
    queued requests no worker has started are dropped (the host's ``drop``:
    a stream connection is closed unanswered) and the running ones are not
    waited for.

    The threads are daemon threads either way: an idle pool of a server
    never closed does not keep the interpreter from exiting; ``close()`` (or
    leaving ``with bound:``) is what waits for the work in flight.
    """

    __slots__ = (
        "_closed",
        "_dropping",
        "_host",
        "_items",
        "_lock",
        "_qsize",
        "_run",
        "_signal",
        "_signalled",
        "_threads",
        "_waiting",
        "block_on_close",
        "limit",
        "size",
    )

    #: In threads; full when the queue is; nothing to service.
    traits: Final = WorkerTraits("threads", capacity=True, service=False)

    def __init__(self, host: WorkerHost[_ReqT], size: int, limit: int, block_on_close: bool) -> None:
        self._host = host
        self._run = host.run
        self.size = size
        self.limit = limit
        self.block_on_close = block_on_close
        self._items: queue.SimpleQueue[_ReqT | _Stop] = queue.SimpleQueue()
        self._qsize = self._items.qsize
        # The lock orders the hand-shake of a full queue (_waiting, _signalled,
        # _signal) and guards _threads and _closed.
        self._lock = threading.Lock()
        # capacity() reported the pool full and the loop waits on the signal.
        self._waiting = False
        # A worker has set the signal since: capacity() must clear it.
        self._signalled = False
        self._signal: _Signal | None = None
        self._closed = False
        self._dropping = False
        self._threads: set[threading.Thread] = set()
        try:
            with self._lock:
                for _ in range(size):
                    self._start_thread()
        except BaseException:
            # Leave no thread behind a pool that could not start.
            self.block_on_close = True
            self.close()
            raise

    # -- the loop's side ---------------------------------------------------------

    def dispatch(self, request: _ReqT, /) -> None:
        self._items.put(request)

    def capacity(self) -> Sequence[int] | None:
        if self._qsize() < self.limit and not self._signalled:
            return None
        return self._full()

    def _full(self) -> Sequence[int] | None:
        with self._lock:
            signal = self._signal
            if self._signalled:
                self._signalled = False
                if signal is not None:
                    signal.clear()
            if self._qsize() < self.limit:
                return None
            if signal is None:
                if self._closed:
                    return []
                try:
                    signal = self._signal = _Signal()
                except OSError:  # no fd free: the loop asks again shortly
                    return []
            self._waiting = True
            # A worker that took a request before _waiting was set did not
            # see it, so look again: either this sees the room it made, or
            # the worker sees _waiting and sets the signal.
            if self._qsize() < self.limit:
                self._waiting = False
                return None
            return signal.fds

    def service_actions(self) -> None:
        pass

    # -- the workers ---------------------------------------------------------------

    def _start_thread(self) -> None:
        # Called with the lock held, so close() sees every thread it must join.
        thread = threading.Thread(target=self._work, name=f"servekit-pool-{next(_thread_numbers)}", daemon=True)
        thread.start()
        self._threads.add(thread)

    def _work(self) -> None:
        get = self._items.get
        run = self._run
        while True:
            request = get()
            if request is _STOP:
                return
            if self._waiting:
                self._wake_loop()
            try:
                if self._dropping:
                    self._host.drop(request)
                else:
                    run(request)
            except BaseException as exc:
                self._replace(threading.current_thread())
                self._host.worker_failed(exc)
                return

    def _wake_loop(self) -> None:
        """A request left the full queue: make the signal readable for the loop."""
        with self._lock:
            if self._waiting:
                self._waiting = False
                if self._signal is not None:
                    # The flag first: whoever sees the fd readable sees the
                    # flag too, and capacity() empties the fd.
                    self._signalled = True
                    self._signal.set()

    def _replace(self, failed: threading.Thread) -> None:
        with self._lock:
            self._threads.discard(failed)
            try:
                self._start_thread()
            except RuntimeError:  # no thread can be started: the pool shrinks
                pass

    def threads(self) -> list[threading.Thread]:
        """The worker threads still running (a snapshot)."""
        with self._lock:
            return [t for t in self._threads if t.is_alive()]

    # -- closing ---------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            block = self.block_on_close
            self._dropping = not block
            workers = len(self._threads)
        try:
            if not block:
                self._drop_queued()
        finally:
            # Queued after every request: each worker takes one and leaves.
            for _ in range(workers):
                self._items.put(_STOP)
        try:
            if block:
                me = threading.current_thread()
                self._join(me)
                with self._lock:
                    mine = me in self._threads
                if mine:
                    return  # closed by a handler: its own worker still takes what is queued
                # Requests left by workers that failed without a successor.
                self._drop_queued()
        finally:
            with self._lock:
                signal, self._signal = self._signal, None
                self._waiting = self._signalled = False
                if block:
                    self._threads.clear()
            if signal is not None:
                signal.close()

    def _join(self, me: threading.Thread) -> None:
        # Until none is left: a worker that fails meanwhile has a successor,
        # started (and added) before the failed one ends.
        while True:
            with self._lock:
                alive = [t for t in self._threads if t is not me and t.is_alive()]
            if not alive:
                return
            for thread in alive:
                thread.join()

    def _drop_queued(self) -> None:
        while True:
            try:
                request = self._items.get_nowait()
            except queue.Empty:
                return
            if request is not _STOP:
                self._host.drop(request)
