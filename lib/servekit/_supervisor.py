"""Pre-forked workers: listen once, fork N processes that each serve the listeners, keep N alive.

:class:`Supervisor` is what ``python -m servekit --workers N`` runs.  The
parent binds the listeners and never accepts on them; each worker is a
child process that adopts the inherited listening sockets
(:func:`servekit.adopt`), builds its server and serves it with
:func:`servekit.run` until SIGTERM, then drains.

The listeners come in *slots*: one slot shared by every worker (the kernel
hands each new connection to one of the workers waiting on the shared
socket: whichever wakes first), or one slot per worker (``--reuse-port``:
each worker its own ``SO_REUSEPORT`` socket on the same address, and the
kernel spreads connections over the sockets by a hash of their addresses).
The parent keeps every slot's sockets open, so a worker that replaces
another -- after a crash, ``max_requests`` or SIGHUP -- takes over its slot
and what waits in that slot's backlog.

The parent:

* restarts a worker that exits while the supervisor is not stopping (one
  that exits within a second of its start five times in a row is not
  restarted: the supervisor stops, exit status 1);
* on SIGTERM or SIGINT sends every worker SIGTERM -- each drains: what it
  holds is served, what waits in the shared backlog is taken by a worker
  still draining -- waits for them, closes the listeners (a Unix socket
  file is removed) and returns 0;
* on SIGHUP reloads: starts N new workers (which import the handler's
  module again), then sends the old ones SIGTERM, so that the listeners
  never stop being served and no connection is refused;
* answers for the workers' counters: each worker answers a request on a
  socketpair with its ``stats()``, and :meth:`Supervisor.stats` adds them up.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import Final, Generic, NoReturn, TypeVar, final

from .abc import Listener, Request
from .events import Stats
from .metrics import combined
from ._signals import SignalWait
from .runner import run
from .servers import Bound

__all__ = ("Supervisor",)

log: Final = logging.getLogger("servekit.supervisor")

#: A worker that exits this soon after its start counts as failing to start.
EARLY_EXIT: Final = 1.0
#: After this many early exits in a row the supervisor gives up.
EARLY_EXITS: Final = 5
#: At most this many seconds between two calls of :meth:`Supervisor.run`'s *tick*.
TICK: Final = 0.5
#: Seconds a worker has to answer a request for its counters.
STATS_TIMEOUT: Final = 2.0
#: What the supervisor handles.
_SIGNALS: Final = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}

_ReqT = TypeVar("_ReqT", bound=Request[object])
_AddrT = TypeVar("_AddrT")


@final
class _Worker:
    __slots__ = ("channel", "generation", "lock", "pid", "slot", "started")

    def __init__(self, pid: int, channel: socket.socket, generation: int, slot: int) -> None:
        self.pid = pid
        self.channel = channel
        self.generation = generation
        self.slot = slot
        self.started = time.monotonic()
        self.lock = threading.Lock()


@final
class Supervisor(Generic[_ReqT, _AddrT]):
    """N worker processes over slots of listeners (see the module's docstring).

    Args:
        listeners: the slots: each a sequence of bound, listening sockets, made by
            the caller (closed by :meth:`run` at the end); worker *i* serves slot
            ``i % len(listeners)``.  A listener may be in several slots (shared).
        make: in a worker, makes its bound server from its slot's fd numbers.
        workers: how many worker processes.
        drain_seconds: each worker's drain on SIGTERM.
        reload: called in a new worker of a later generation (after SIGHUP), before *make*.
    """

    def __init__(
        self,
        listeners: Sequence[Sequence[Listener[object]]],
        make: Callable[[Sequence[int]], Bound[_ReqT, _AddrT]],
        workers: int,
        drain_seconds: float,
        *,
        reload: Callable[[], object] | None = None,
    ) -> None:
        self.slots = tuple(tuple(slot) for slot in listeners)
        self.listeners = tuple({id(listener): listener for slot in self.slots for listener in slot}.values())
        self.make = make
        self.count = workers
        self.drain_seconds = drain_seconds
        self.reload = reload
        self.workers: dict[int, _Worker] = {}
        self.generation = 0
        self.stopping = False
        self.failed = False
        self._early = 0
        self._stopping: Callable[[], object] | None = None

    # -- the parent -------------------------------------------------------------------------

    def run(
        self,
        ready: Callable[[], object] | None = None,
        *,
        stopping: Callable[[], object] | None = None,
        tick: Callable[[], object] | None = None,
    ) -> int:
        """Start the workers and keep them until SIGTERM/SIGINT; the exit status (0, or 1 if they could not start).

        *ready* is called once the first workers are started, *stopping* when
        a SIGTERM or SIGINT begins the stop, *tick* (a service manager's
        watchdog, say) at least every :data:`TICK` seconds until the end.
        """
        self._stopping = stopping
        self._signals = SignalWait(_SIGNALS)
        try:
            with self._signals:
                for index in range(self.count):
                    self._spawn(index % len(self.slots))
                if ready is not None:
                    ready()
                while self._reap():
                    if tick is not None:
                        tick()
                    for sig in self._signals.wait(None if tick is None else TICK):
                        if sig == signal.SIGHUP:
                            self._reload()
                        elif sig != signal.SIGCHLD:
                            self._stop(sig)
        finally:
            for worker in self.workers.values():
                worker.channel.close()
            for listener in self.listeners:
                listener.close()
        return 1 if self.failed else 0

    def _reap(self) -> bool:
        """Book every worker that has exited, without waiting; whether any is left to wait for."""
        while self.workers:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:  # (none left: nothing more will exit)
                return False
            if pid == 0:
                return True
            self._exited(pid, status)
        return False

    def _exited(self, pid: int, status: int) -> None:
        worker = self.workers.pop(pid, None)
        if worker is None:
            return
        worker.channel.close()
        code = os.waitstatus_to_exitcode(status)
        if self.stopping or worker.generation < self.generation:
            return
        if time.monotonic() - worker.started < EARLY_EXIT:
            self._early += 1
            if self._early >= EARLY_EXITS:
                log.error("workers exit as soon as they start (status %d): stopping", code)
                self.failed = True
                self._stop_all()
                return
        else:
            self._early = 0
        log.warning("worker %d exited (status %d); starting another", pid, code)
        self._spawn(worker.slot)

    def _stop(self, sig: signal.Signals) -> None:
        if not self.stopping:
            log.info("%s: stopping %d workers", sig.name, len(self.workers))
            if self._stopping is not None:
                self._stopping()
            self._stop_all()

    def _stop_all(self) -> None:
        self.stopping = True
        # The parent's copies go first: the sockets close when the last
        # worker, draining, has taken what waits in their backlogs and closed
        # its own -- no connection is left queued where nobody will take it.
        for listener in self.listeners:
            listener.close()
        for pid in list(self.workers):
            _kill(pid, signal.SIGTERM)

    def _reload(self) -> None:
        if self.stopping:
            return
        old = list(self.workers)
        self.generation += 1
        log.info("SIGHUP: starting %d new workers, then stopping the %d old ones", self.count, len(old))
        for index in range(self.count):
            self._spawn(index % len(self.slots))
        for pid in old:
            _kill(pid, signal.SIGTERM)

    def _spawn(self, slot: int) -> None:
        parent_end, child_end = socket.socketpair()
        # The signals wait while the worker is made: in the worker, one must
        # not reach the parent's wake-up socket before the worker lets go of it.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            with warnings.catch_warnings():
                # (3.12+ warns of a fork in a process with threads; the parent's
                # only other threads -- a metrics server's -- hold no lock a
                # worker needs, and the worker never returns into them.)
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
            if pid == 0:  # the worker
                signal.set_wakeup_fd(-1)
                self._signals.forget()
                parent_end.close()
                for worker in self.workers.values():
                    worker.channel.close()
                self._work(child_end, blocked, slot)
            child_end.close()
            self.workers[pid] = _Worker(pid, parent_end, self.generation, slot)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def stats(self) -> Stats:
        """The workers' counters, added up (a worker that does not answer in time counts nothing)."""
        return combined(filter(None, (_ask(worker) for worker in list(self.workers.values()))))

    # -- in a worker ------------------------------------------------------------------------

    def _work(self, channel: socket.socket, mask: set[int | signal.Signals], slot: int) -> NoReturn:
        """The worker's whole life: never returns.  (Forked with the signals blocked; *mask*: the mask before.)"""
        code = 0
        try:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            if self.generation and self.reload is not None:
                self.reload()
            bound = self.make([listener.socket.fileno() for listener in self.slots[slot]])
            # The server holds duplicates (adopt): the inherited copies go, or
            # they would keep the sockets open -- connections queueing where
            # nobody takes them -- from the drain until this process ends.
            for listener in self.listeners:
                listener.socket.close()
            threading.Thread(target=_answer_stats, args=(channel, bound), name="servekit stats", daemon=True).start()
            run(bound, drain_seconds=self.drain_seconds)
        except BaseException:  # noqa: BLE001 - a worker reports and exits
            traceback.print_exc()
            code = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _ask(worker: _Worker) -> Stats | None:
    """A worker's counters, asked over its socketpair; ``None`` if it does not answer."""
    with worker.lock:
        channel = worker.channel
        try:
            channel.settimeout(STATS_TIMEOUT)
            channel.sendall(b"?")
            data = b""
            while not data.endswith(b"\n"):
                chunk = channel.recv(65536)
                if not chunk:
                    return None
                data += chunk
        except OSError:
            return None
    fields = json.loads(data)
    return Stats(**fields)


def _answer_stats(channel: socket.socket, bound: Bound[_ReqT, _AddrT]) -> None:
    """In a worker's thread: answer each request on *channel* with the server's counters, as JSON."""
    with channel:
        try:
            while channel.recv(16):
                channel.sendall(json.dumps(bound.stats()._asdict()).encode() + b"\n")
        except OSError:
            pass
