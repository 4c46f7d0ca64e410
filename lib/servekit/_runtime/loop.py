"""The one serve loop: wait on many sources, call them, run service actions, stop.

Everything that serves requests -- the composed server and every
``servekit.classic`` server -- runs this loop.  A *source* is an fd and the
callback to call when it is readable.  What the callback does (accept, admit,
dispatch) is the owner's business; the loop decides *when*:

* The owner hands the loop what one run serves (:class:`Run`): its *intake*
  sources (listeners, which bring new requests), its service actions and its
  workers' capacity.  A busy loop costs one ``poll()`` and the owner's own
  calls per request.  More sources may be watched during a run
  (:meth:`Loop.watch`): parked connections, for example.
* It waits on a wake-up socket too, so :meth:`Loop.shutdown` returns at once
  instead of after a poll interval.  The socketpair exists only while
  ``serve_forever`` runs, so a server that is never served holds no extra
  fds; when no fd is free for it, the loop serves without one (looking at a
  stop request every :data:`NO_WAKE_POLL` seconds) until it can make one.
* **Capacity**: while the workers report none (a forked dispatcher at
  ``max_children``), the intake sources are left out of the wait: new
  connections stay in the kernel backlog until a worker frees a slot.
* **Back-off**: an ``accept()`` failure that means "out of a resource"
  (``EMFILE``, ...) leaves the intake out of the wait for
  :data:`ACCEPT_BACKOFF` seconds, so the loop does not spin at 100 % CPU.  The
  loop keeps the *episode* -- from the first failure to the next request
  taken without one -- and reports its start and its end once each, however
  many attempts fail in between.
* Everything that runs while no fd is free needs none: reports never import
  :mod:`logging` (importing opens files).
"""

from __future__ import annotations

import collections
import errno
import heapq
import itertools
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final, NamedTuple, Protocol

__all__ = ("ACCEPT_BACKOFF", "Loop", "Owner", "Run", "report")

_POLLIN: Final = select.POLLIN
_POLLNVAL: Final = select.POLLNVAL

#: ``accept()`` errors that mean "out of a resource", not "bad connection":
#: retrying at once would spin, so the loop leaves the intake alone a while.
_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

#: Seconds to leave the intake alone after such an error.
ACCEPT_BACKOFF: Final = 0.1

#: How often workers at capacity that offer no fd to wait on are asked again.
SATURATED_POLL: Final = 0.01

#: How often a ``serve_forever`` without its wake-up socketpair (no fd was
#: free for it) looks at a stop request and tries to make the pair again.
NO_WAKE_POLL: Final = 0.1

# logging's levels, without importing it.
_DEBUG: Final = 10
_WARNING: Final = 30

Callback = Callable[[], object]


class Run(NamedTuple):
    """What one run of the loop serves, asked of the owner at its start.

    Attributes:
        intake: fd -> callback of the sources that bring new requests (the
            listeners).  A negative fd is left out; a run with no intake
            source ends at once, and so does one whose intake source is
            closed under it.
        service: periodic work, run after every wake-up of ``serve_forever``.
        capacity: ``None`` when the workers never run out.  Otherwise asked
            at the start of a run, after each callback and, while capacity is
            out, before every wait: ``None`` when another request may be
            taken now, or the fds that turn readable when capacity may have
            come back (pidfds of child processes); an empty sequence makes
            the loop ask again every :data:`SATURATED_POLL` seconds.
        watched: fd -> callback of sources that are not intake (a forked
            dispatcher's report pipe): watched for the whole run, whatever
            back-off, capacity or a drain does to the intake.
    """

    intake: Mapping[int, Callback]
    service: Callback
    capacity: Callable[[], Sequence[int] | None] | None
    watched: Mapping[int, Callback] = {}
    settled: Callable[[], bool] | None = None


class Owner(Protocol):
    """**Protocol:** the server a loop runs."""

    def loop_run(self) -> Run:
        """What the run that is starting serves (asked at every run)."""
        ...


def report(logger: str, level: int, message: str, *args: object) -> None:
    """Log *message* % *args* on the logger named *logger*, without importing :mod:`logging`.

    This runs when no fd may be free, and an import opens files: a lazy
    ``import logging`` failed with ``EMFILE`` and ended ``serve_forever``
    (``servekit.classic`` does not load logging).  If the program has not
    loaded logging, nothing can have configured it either, and logging would
    hand the record to its last-resort handler, which writes the bare message
    to ``sys.stderr`` for warnings and above: that is done here directly.
    """
    if sys.modules.get("logging") is not None:
        import logging  # noqa: PLC0415 - loaded already: opens no file

        logging.getLogger(logger).log(level, message, *args)
        return
    stderr = sys.stderr
    if level < _WARNING or stderr is None:
        return
    try:
        stderr.write(message % args + "\n")
        stderr.flush()
    except Exception:  # noqa: BLE001 - as logging's handlers, never fail the caller
        pass


def _wake_pair() -> tuple[socket.socket, socket.socket] | None:
    """The loop's wake-up socketpair, or ``None`` when no fd is free for it."""
    try:
        pair = socket.socketpair()
    except OSError as exc:
        if exc.errno in _CAPACITY_ERRNOS:
            return None
        raise
    for sock in pair:
        sock.setblocking(False)
    return pair


def _close_pair(pair: tuple[socket.socket, socket.socket] | None) -> None:
    if pair is not None:
        for sock in pair:
            sock.close()


def _about_to_run(target: object) -> threading.Thread | None:
    """A live thread, other than this one, whose target is *target* (not yet serving)."""
    if target is None:
        return None
    me = threading.current_thread()
    for thread in threading.enumerate():
        # Thread keeps its target in ``_target`` until ``run()`` returns; there
        # is no public accessor.  A missing attribute simply means "no match".
        if thread is not me and getattr(thread, "_target", None) == target:
            return thread
    return None


_timer_numbers: Final = itertools.count()


def _nothing() -> None:
    pass


def _shorter(a: float | None, b: float) -> float:
    return b if a is None or b < a else a


class _Episode(NamedTuple):
    """An open accept-failure episode: what failed first, where, and since when."""

    exc: OSError
    call: str
    where: str
    logger: str
    since: float


class Loop:
    """The serve loop of one server.  Thread-safe; not re-entrant.

    ``serve_forever`` runs in one thread at a time; ``shutdown`` and ``stop``
    may be called from any thread (``shutdown`` from inside the loop's own
    thread only asks the loop to stop and returns).  ``accept_failed``,
    ``watch`` and ``unwatch`` are for the loop's own thread.
    """

    __slots__ = (
        "_backoff_until",
        "_episode",
        "_soon",
        "_sources",
        "_timers",
        "_failures",
        "_idle",
        "_lock",
        "_owner",
        "_pending",
        "_serving",
        "_stop",
        "_wake",
        "_waiter",
    )

    def __init__(self, owner: Owner) -> None:
        self._owner = owner
        self._lock = threading.Lock()
        self._serving: threading.Thread | None = None
        self._pending: threading.Thread | None = None
        self._stop = False
        self._idle = threading.Event()
        self._idle.set()
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._waiter: _Waiter | None = None
        # While an accept-failure episode is open: the end of the current
        # back-off (which may have passed), the episode, the failures so far.
        self._backoff_until = 0.0
        self._episode: _Episode | None = None
        self._failures = 0
        # (when, sequence, callback) of the timers, earliest first.
        self._timers: list[tuple[float, int, Callback]] = []
        # Callbacks other threads asked the loop's thread to run.
        self._soon: collections.deque[Callback] = collections.deque()
        self._sources: dict[int, Callback] = {}

    @property
    def serving(self) -> bool:
        """Whether ``serve_forever`` is running now."""
        return self._serving is not None

    # -- serving ------------------------------------------------------------

    def serve_forever(self, poll_interval: float) -> None:
        """Serve until :meth:`shutdown` (or the intake closes)."""
        me = threading.current_thread()
        wake = _wake_pair()
        with self._lock:
            if self._serving is not None:
                _close_pair(wake)
                raise RuntimeError(f"serve_forever() is already running in {self._serving.name}")
            self._serving = me
            self._wake = wake
            self._stop = self._pending is me
            self._pending = None
            self._idle.clear()
        try:
            if not self._stop:
                waiter = self._waiter = _Waiter(None if wake is None else wake[0], self._woken)
                self._serve(self._owner.loop_run(), poll_interval * 1000, waiter)
        finally:
            with self._lock:
                wake = self._wake
                self._serving = None
                self._wake = None
                self._waiter = None
                self._stop = False
                self._idle.set()
            _close_pair(wake)

    def _serve(self, run: Run, interval_ms: float, waiter: _Waiter) -> None:
        intake = {fd: callback for fd, callback in run.intake.items() if fd >= 0}
        if not intake:
            return
        service, capacity = run.service, run.capacity
        waiter.open(intake)
        for fd, callback in run.watched.items():
            waiter.watch(fd, callback)
        for fd, callback in self._sources.items():
            waiter.watch(fd, callback)
        poll = waiter.poller.poll
        callbacks = waiter.callbacks
        timers = self._timers
        # Capacity can only run out when a callback dispatches: it is asked
        # after each one, and re-asked before every wait while it is out.  A
        # loop without its wake-up socket takes this path too.
        limited = capacity is not None or waiter.wake_fd < 0
        while True:
            timeout_ms: float | None = interval_ms
            if limited or self._backoff_until:
                if waiter.wake_fd < 0:
                    self._rewake(waiter)
                timeout_ms = self._limits(intake, capacity, timeout_ms, waiter)
                limited = not waiter.intake_open or waiter.wake_fd < 0
                if waiter.wake_fd < 0:
                    timeout_ms = _shorter(timeout_ms, NO_WAKE_POLL * 1000)
            if timers:
                timeout_ms = _shorter(timeout_ms, max(0.0, (timers[0][0] - time.monotonic()) * 1000))
            events = poll(timeout_ms)
            # A stop asked for while the loop waited wins over a request
            # that came in meanwhile.
            if self._stop:
                return
            if timers:
                self._run_timers()
            for fd, flags in events:
                try:
                    callback = callbacks[fd]
                except KeyError:  # unwatched by an earlier callback of this wait
                    continue
                if flags & _POLLNVAL:  # the source was closed under us
                    if fd in intake:
                        return
                    waiter.unwatch(fd)
                    continue
                if self._backoff_until and fd in intake:
                    self._probe(callback)
                else:
                    callback()
                if capacity is not None and capacity() is not None:
                    limited = True
            service()

    def _woken(self) -> None:
        """The wake-up socket is readable: empty it, run what other threads asked for."""
        waiter = self._waiter
        if waiter is not None:
            waiter.drain()
        soon = self._soon
        while soon:
            soon.popleft()()

    def handle_request(self, timeout: float | None) -> bool:
        """Wait up to *timeout* seconds (``None``: no limit) and take one request.

        Returns ``False`` when the time ran out (or the intake is closed).
        The intake is polled at least once, even with a timeout of 0.
        """
        run = self._owner.loop_run()
        intake = {fd: callback for fd, callback in run.intake.items() if fd >= 0}
        if not intake:
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter = _Waiter(None, _nothing)
        waiter.open(intake)
        remaining_ms = None if timeout is None else max(0.0, timeout * 1000)
        while True:
            timeout_ms = self._limits(intake, run.capacity, remaining_ms, waiter)
            for fd, flags in waiter.poller.poll(timeout_ms):
                callback = intake.get(fd)
                if callback is None:
                    continue
                if flags & _POLLNVAL:
                    return False
                if self._backoff_until:
                    self._probe(callback)
                else:
                    callback()
                return True
            if deadline is not None:
                remaining_ms = (deadline - time.monotonic()) * 1000
                if remaining_ms <= 0:
                    return False

    # -- timers ---------------------------------------------------------------

    def call_at(self, when: float, callback: Callback) -> None:
        """Call *callback* at ``time.monotonic()`` *when* or soon after (from the loop's thread).

        Timers run in the serving loop, after its wait; a timer set while the
        loop is not serving runs when it serves again.
        """
        heapq.heappush(self._timers, (when, next(_timer_numbers), callback))

    def _run_timers(self) -> None:
        timers = self._timers
        now = time.monotonic()
        while timers and timers[0][0] <= now:
            heapq.heappop(timers)[2]()

    def call_soon(self, callback: Callback) -> None:
        """Have the serving loop's thread call *callback* soon (from any thread).

        Raises:
            RuntimeError: the loop is not serving.
        """
        with self._lock:
            if self._serving is None or self._wake is None:
                raise RuntimeError("the loop is not serving (or has no wake-up socket)")
            self._soon.append(callback)
            self._poke()

    def drop_intake(self) -> None:
        """Take no more requests from the intake sources this run (from the loop's thread).

        The loop goes on serving the other sources and the timers until it
        is stopped.
        """
        waiter = self._waiter
        if waiter is not None and waiter.intake is not None:
            waiter.close(waiter.intake, ())
            waiter.intake.clear()

    # -- more sources ---------------------------------------------------------

    def watch(self, fd: int, callback: Callback) -> None:
        """Call *callback* whenever *fd* is readable, from now on (from the loop's thread)."""
        self._sources[fd] = callback
        waiter = self._waiter
        if waiter is not None:
            waiter.watch(fd, callback)

    def unwatch(self, fd: int) -> None:
        """Stop watching *fd* (from the loop's thread).  Unknown fds are ignored."""
        self._sources.pop(fd, None)
        waiter = self._waiter
        if waiter is not None:
            waiter.unwatch(fd)

    # -- accept failures ------------------------------------------------------

    def accept_failed(self, exc: OSError, call: str, where: str, logger: str) -> float:
        """Take a failed ``accept()`` into account (from the loop's thread).

        Resource exhaustion (``EMFILE``, ``ENFILE``, ``ENOBUFS``, ``ENOMEM``)
        leaves the intake alone for :data:`ACCEPT_BACKOFF` seconds.  The first
        such failure opens an episode, reported once on the logger named
        *logger*; while it is open every failure counts, and the first
        request taken without one ends it, reported with the count and the
        duration.  Any other error (a connection that died in the backlog,
        ...) is reported at debug level and skipped.

        Returns the back-off in seconds (``0.0``: none).
        """
        if exc.errno not in _CAPACITY_ERRNOS:
            report(logger, _DEBUG, "%s on %s failed: %s", call, where, exc)
            return 0.0
        now = time.monotonic()
        if self._episode is None:
            self._episode = _Episode(exc, call, where, logger, now)
            self._failures = 0
            report(
                logger,
                _WARNING,
                "%s on %s failed (%s); retrying every %.1f s, reported again when it succeeds",
                call,
                where,
                exc,
                ACCEPT_BACKOFF,
            )
        self._failures += 1
        self._backoff_until = now + ACCEPT_BACKOFF
        return ACCEPT_BACKOFF

    def _probe(self, callback: Callback) -> None:
        """Call an intake *callback* while an episode is open; end the episode if it does not fail."""
        failures = self._failures
        at = time.monotonic()
        callback()
        episode = self._episode
        if self._failures != failures or episode is None:
            return
        self._backoff_until = 0.0
        self._episode = None
        report(
            episode.logger,
            _WARNING,
            "%s on %s succeeded again after %d failed attempts over %.1f s",
            episode.call,
            episode.where,
            failures,
            at - episode.since,
        )

    # -- stopping -------------------------------------------------------------

    def shutdown(self, target: object = None) -> None:
        """Stop ``serve_forever`` and wait until it has returned.

        With no loop running this returns at once and leaves no stale request
        behind, with one exception: if a thread has been started with *target*
        (the server's own ``serve_forever``) and has not reached the loop yet,
        that thread's loop stops as soon as it starts.
        """
        with self._lock:
            serving = self._serving
            if serving is None:
                self._pending = _about_to_run(target)
                return
            self._stop = True
            self._poke()
        if serving is not threading.current_thread():
            self._idle.wait()

    def stop(self) -> None:
        """Ask a running loop to stop at once, without waiting for it."""
        with self._lock:
            if self._serving is not None:
                self._stop = True
                self._poke()

    def _poke(self) -> None:
        # Called with the lock held.
        if self._wake is not None:
            try:
                self._wake[1].send(b"\0")
            except OSError:  # the buffer is full: a wake-up is already pending
                pass

    def _rewake(self, waiter: _Waiter) -> None:
        """Try again to make the wake-up socketpair."""
        wake = _wake_pair()
        if wake is not None:
            with self._lock:
                self._wake = wake
            waiter.wake_with(wake[0], self._woken)

    def _limits(
        self,
        intake: dict[int, Callback],
        capacity: Callable[[], Sequence[int] | None] | None,
        timeout_ms: float | None,
        waiter: _Waiter,
    ) -> float | None:
        """Open or close the intake for the next wait, under a back-off or a capacity limit.

        Returns the wait's timeout in milliseconds (``None``: none).
        """
        if self._backoff_until:
            left = self._backoff_until - time.monotonic()
            if left > 0:
                waiter.close(intake, ())
                return _shorter(timeout_ms, left * 1000)
            # Passed: the intake is watched again, and the episode lasts
            # until a request is taken without a failure.
        if capacity is not None:
            waiting_for = capacity()
            if waiting_for is not None:
                waiter.close(intake, waiting_for)
                return timeout_ms if waiting_for else _shorter(timeout_ms, SATURATED_POLL * 1000)
        waiter.open(intake)
        return timeout_ms


class _Waiter:
    """One ``select.poll()`` object for one run of the loop.

    Registrations change only when what the loop waits for changes (the
    intake opens or closes, a source is watched), so a busy loop pays for one
    ``poll()`` system call per request and nothing more.
    """

    __slots__ = ("callbacks", "extra", "intake", "intake_open", "poller", "wake", "wake_fd")

    def __init__(self, wake: socket.socket | None, woken: Callback) -> None:
        self.poller = select.poll()
        # fd -> callback of every fd waited on now (the wake-up socket's
        # empties it; a capacity fd's does nothing: the wait is over).
        self.callbacks: dict[int, Callback] = {}
        self.wake: socket.socket | None = None
        self.wake_fd = -1
        if wake is not None:
            self.wake_with(wake, woken)
        self.intake_open = False
        # The run's intake (fd -> callback), once opened.
        self.intake: dict[int, Callback] | None = None
        # Capacity fds waited on while the intake is closed.
        self.extra: tuple[int, ...] = ()

    def wake_with(self, wake: socket.socket, woken: Callback) -> None:
        """Wait on *wake*, the loop's wake-up socket, from now on, and call *woken* when it is readable."""
        self.wake = wake
        self.wake_fd = wake.fileno()
        self.watch(self.wake_fd, woken)

    def watch(self, fd: int, callback: Callback) -> None:
        if fd not in self.callbacks:
            self.poller.register(fd, _POLLIN)
        self.callbacks[fd] = callback

    def unwatch(self, fd: int) -> None:
        if self.callbacks.pop(fd, None) is not None:
            self.poller.unregister(fd)

    def open(self, intake: dict[int, Callback]) -> None:
        """Wait on the intake (and no capacity fd) from now on."""
        self.intake = intake
        if not self.intake_open:
            self._extra(())
            for fd, callback in intake.items():
                self.watch(fd, callback)
            self.intake_open = True

    def close(self, intake: Mapping[int, Callback], extra: Sequence[int]) -> None:
        """Leave the intake out of the wait, and wait on *extra* instead."""
        if self.intake_open:
            for fd in intake:
                self.unwatch(fd)
            self.intake_open = False
        self._extra(extra)

    def _extra(self, extra: Sequence[int]) -> None:
        if extra or self.extra:
            extra = tuple(extra)
            if extra != self.extra:
                for fd in self.extra:
                    self.unwatch(fd)
                for fd in extra:
                    self.watch(fd, _nothing)
                self.extra = extra

    def drain(self) -> None:
        """Empty the wake-up socket."""
        assert self.wake is not None
        try:
            while self.wake.recv(4096):
                pass
        except OSError:
            pass
