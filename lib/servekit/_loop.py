"""The one serve loop: wait, take a request, service actions, stop.

Everything that serves requests -- the composed :class:`~servekit.server.Bound`
handle and every ``servekit.classic`` server -- runs this loop.  What happens
with a ready listener is the *driver's* business (accept, admit, dispatch); the
loop only decides *when*: it waits on the listener and on a wake-up socket, so
:meth:`ServeLoop.shutdown` returns at once instead of after a poll interval.

Strategy:

* The driver hands the loop its hooks once per run (:class:`Hooks`), so a busy
  loop costs one ``poll()`` and the driver's own two calls per request.
* The wake-up socketpair exists only while ``serve_forever`` runs, so a server
  that is never served (or whose owner forgets to close it) holds no extra fds.
* While the driver reports no capacity (a forked dispatcher at
  ``max_children``), the listener is left out of the wait: pending
  connections stay in the kernel backlog until a worker frees a slot.
* After an ``accept()`` failure that signals resource exhaustion the driver
  asks for a back-off (:meth:`ServeLoop.back_off`); the listener is left out of
  the wait until it passes, so the loop does not spin at 100 % CPU on
  ``EMFILE``.  The loop keeps the *episode* -- from the first failure to the
  next ``accept()`` that succeeds -- and reports its start and its end, once
  each, however many attempts fail in between.
* Everything that runs while no fd is free needs none: reports never import
  :mod:`logging` (importing opens files), and a ``serve_forever`` that cannot
  make its wake-up socketpair serves without one until it can.
"""

from __future__ import annotations

import errno
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple, Protocol

__all__ = ("ACCEPT_BACKOFF", "AcceptFailure", "Driver", "Hooks", "ServeLoop", "accept_failed")

_POLLIN: Final = select.POLLIN
_POLLNVAL: Final = select.POLLNVAL

#: ``accept()`` errors that mean "out of a resource", not "bad connection":
#: retrying at once would spin, so the loop leaves the listener alone a while.
_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

#: Seconds to leave the listener alone after such an error.
ACCEPT_BACKOFF: Final = 0.1

#: How often a saturated driver that offers no fd to wait on is asked again.
SATURATED_POLL: Final = 0.01

#: How often a ``serve_forever`` without its wake-up socketpair (no fd was
#: free for it) looks at a stop request and tries to make the pair again.
NO_WAKE_POLL: Final = 0.1

# logging's levels, without importing it.
_DEBUG: Final = 10
_WARNING: Final = 30


class Hooks(NamedTuple):
    """What one run of the loop calls, all from the thread running it.

    Attributes:
        fileno: the listening socket's fd; negative when it is closed (the
            run then ends at once).
        ready: takes one request off the ready listener and dispatches it.
        service: periodic work, run after every wake-up of ``serve_forever``.
        capacity: ``None`` when the driver never runs out of capacity.
            Otherwise asked at the start of a run, after each dispatch and,
            while capacity is out, before every wait: it returns ``None``
            when another request may be taken now, or the fds that become
            readable when capacity may have come back (for example pidfds of
            child processes); an empty sequence makes the loop ask again
            every :data:`SATURATED_POLL` seconds.
    """

    fileno: int
    ready: Callable[[], object]
    service: Callable[[], object]
    capacity: Callable[[], Sequence[int] | None] | None


class Driver(Protocol):
    """**Protocol:** the server a loop runs."""

    def loop_hooks(self) -> Hooks:
        """The hooks of the run that is starting (asked at every run)."""
        ...


class AcceptFailure(NamedTuple):
    """A failed ``accept()``, as :func:`accept_failed` classifies it for :meth:`ServeLoop.back_off`.

    Attributes:
        seconds: how long to leave the listener alone; ``0`` for a failure
            that is not resource exhaustion (the loop goes on at once).
        exc: the error.
        call: what failed, for the report (``"accept()"``).
        where: the listener, for the report.
        logger: the name of the logger the loop reports on.
    """

    seconds: float
    exc: OSError
    call: str
    where: str
    logger: str


def accept_failed(exc: OSError, call: str, where: str, logger: str) -> AcceptFailure:
    """The back-off policy for a failed ``accept()``, shared by every driver.

    Resource exhaustion (``EMFILE``, ``ENFILE``, ``ENOBUFS``, ``ENOMEM``) is
    answered with :data:`ACCEPT_BACKOFF` seconds of leaving the listener
    alone; the loop reports the episode it starts (or continues) on the
    logger named *logger*, once at its start and once at its end.  Any other
    error (a connection that died in the backlog, ...) is logged at debug
    level and skipped.  Pass the result to :meth:`ServeLoop.back_off`.
    """
    if exc.errno in _CAPACITY_ERRNOS:
        return AcceptFailure(ACCEPT_BACKOFF, exc, call, where, logger)
    _report(logger, _DEBUG, "%s on %s failed: %s", call, where, exc)
    return AcceptFailure(0.0, exc, call, where, logger)


def _report(logger: str, level: int, message: str, *args: object) -> None:
    """Log *message* % *args* on the logger named *logger*, without importing :mod:`logging`.

    This runs when no fd may be free, and an import opens files: a lazy
    ``import logging`` here failed with ``EMFILE`` and ended ``serve_forever``
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


def _shorter(a: float | None, b: float) -> float:
    return b if a is None or b < a else a


class ServeLoop:
    """The serve loop of one server.  Thread-safe; not re-entrant.

    ``serve_forever`` runs in one thread at a time; ``shutdown`` may be called
    from any thread (including from inside the loop's own thread, where it
    only asks the loop to stop and returns).
    """

    __slots__ = (
        "_backoff_until",
        "_driver",
        "_episode",
        "_failures",
        "_idle",
        "_lock",
        "_pending",
        "_serving",
        "_stop",
        "_wake",
    )

    def __init__(self, driver: Driver) -> None:
        self._driver = driver
        self._lock = threading.Lock()
        self._serving: threading.Thread | None = None
        self._pending: threading.Thread | None = None
        self._stop = False
        self._idle = threading.Event()
        self._idle.set()
        self._wake: tuple[socket.socket, socket.socket] | None = None
        # The accept-failure episode: non-zero while one is open (the end of
        # the current back-off, which may have passed), with the failure that
        # started it, its time, and the failed attempts so far.
        self._backoff_until = 0.0
        self._episode: tuple[AcceptFailure, float] | None = None
        self._failures = 0

    @property
    def serving(self) -> bool:
        """Whether ``serve_forever`` is running now."""
        return self._serving is not None

    def serve_forever(self, poll_interval: float) -> None:
        """Serve until :meth:`shutdown` (or the listener closes)."""
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
                self._run(self._driver.loop_hooks(), poll_interval * 1000, _Waiter(None if wake is None else wake[0]))
        finally:
            with self._lock:
                wake = self._wake
                self._serving = None
                self._wake = None
                self._stop = False
                self._idle.set()
            _close_pair(wake)

    def _run(self, hooks: Hooks, interval_ms: float, waiter: _Waiter) -> None:
        listener, ready, service, capacity = hooks
        if listener < 0:
            return
        waiter.watch(listener, ())
        poll = waiter.poller.poll
        wake_fd = waiter.wake_fd
        # The listener while an accept-failure episode is open and its
        # back-off has passed: the next accept() tells whether it is over.
        probe = -1
        # Capacity can only run out when a request is dispatched: it is asked
        # after each dispatch, and re-asked before every wait while it is out.
        # A loop without its wake-up socket takes this path too.
        limited = capacity is not None or wake_fd < 0
        while True:
            watching = listener
            timeout_ms: float | None = interval_ms
            if limited or self._backoff_until:
                if wake_fd < 0:
                    wake_fd = self._rewake(waiter)
                watching, timeout_ms = self._limits(listener, capacity, timeout_ms, waiter)
                limited = watching < 0 or wake_fd < 0
                if wake_fd < 0:
                    timeout_ms = _shorter(timeout_ms, NO_WAKE_POLL * 1000)
                probe = -1
                if self._backoff_until and watching >= 0:
                    probe, watching = watching, -1
            events = poll(timeout_ms)
            # A stop asked for while the loop waited wins over a request
            # that came in meanwhile.
            if self._stop:
                return
            for fd, flags in events:
                if fd == watching:
                    if flags & _POLLNVAL:  # the listener was closed under us
                        return
                    ready()
                    if capacity is not None and capacity() is not None:
                        limited = True
                elif fd == wake_fd:
                    waiter.drain()
                elif fd == probe:
                    if flags & _POLLNVAL:
                        return
                    self._probe(ready)
                    if capacity is not None and capacity() is not None:
                        limited = True
            service()

    def _rewake(self, waiter: _Waiter) -> int:
        """Try again to make the wake-up socketpair; its fd to wait on, or ``-1``."""
        wake = _wake_pair()
        if wake is None:
            return -1
        with self._lock:
            self._wake = wake
        waiter.wake_with(wake[0])
        return waiter.wake_fd

    def handle_request(self, timeout: float | None) -> bool:
        """Wait up to *timeout* seconds (``None``: no limit) and handle one request.

        Returns ``False`` when the time ran out (or the listener is closed).
        The listener is polled at least once, even with a timeout of 0.
        """
        listener, ready, _, capacity = self._driver.loop_hooks()
        if listener < 0:
            return False
        deadline = None if timeout is None else time.monotonic() + timeout
        waiter = _Waiter(None)
        waiter.watch(listener, ())
        remaining_ms = None if timeout is None else max(0.0, timeout * 1000)
        while True:
            watching, timeout_ms = self._limits(listener, capacity, remaining_ms, waiter)
            for fd, flags in waiter.poller.poll(timeout_ms):
                if fd == watching:
                    if flags & _POLLNVAL:
                        return False
                    if self._backoff_until:
                        self._probe(ready)
                    else:
                        ready()
                    return True
            if deadline is not None:
                remaining_ms = (deadline - time.monotonic()) * 1000
                if remaining_ms <= 0:
                    return False

    def back_off(self, failure: AcceptFailure) -> None:
        """Take a failed ``accept()`` into account (from the loop's thread).

        A failure with a back-off starts an episode, reported once on the
        failure's logger, unless one is open already; the listener is left
        out of the wait for ``failure.seconds``.  While an episode is open
        every failure counts, and the first ``accept()`` that does not fail
        ends it, reported with the count and the duration.
        """
        if not self._backoff_until:
            if failure.seconds <= 0:
                return
            now = time.monotonic()
            self._episode = (failure, now)
            self._failures = 0
            self._backoff_until = now
            _report(
                failure.logger,
                _WARNING,
                "%s on %s failed (%s); retrying every %.1f s, reported again when it succeeds",
                failure.call,
                failure.where,
                failure.exc,
                failure.seconds,
            )
        self._failures += 1
        if failure.seconds > 0:
            self._backoff_until = time.monotonic() + failure.seconds

    def _probe(self, ready: Callable[[], object]) -> None:
        """Call *ready* while an episode is open; end the episode if it does not fail."""
        failures = self._failures
        at = time.monotonic()
        ready()
        episode = self._episode
        if self._failures != failures or episode is None:
            return
        failure, since = episode
        self._backoff_until = 0.0
        self._episode = None
        _report(
            failure.logger,
            _WARNING,
            "%s on %s succeeded again after %d failed attempts over %.1f s",
            failure.call,
            failure.where,
            failures,
            at - since,
        )

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

    def _limits(
        self,
        listener: int,
        capacity: Callable[[], Sequence[int] | None] | None,
        timeout_ms: float | None,
        waiter: _Waiter,
    ) -> tuple[int, float | None]:
        """What to wait on, and how long, under a back-off or a capacity limit.

        Returns the fd to treat as the listener (``-1``: the listener is not
        watched this time) and the timeout in milliseconds (``None``: none).
        """
        if self._backoff_until:
            left = self._backoff_until - time.monotonic()
            if left > 0:
                waiter.watch(-1, ())
                return -1, _shorter(timeout_ms, left * 1000)
            # Passed: the listener is watched again, and the episode lasts
            # until an accept() succeeds.
        if capacity is not None:
            waiting_for = capacity()
            if waiting_for is not None:
                waiter.watch(-1, waiting_for)
                if not waiting_for:
                    timeout_ms = _shorter(timeout_ms, SATURATED_POLL * 1000)
                return -1, timeout_ms
        waiter.watch(listener, ())
        return listener, timeout_ms


class _Waiter:
    """One ``select.poll()`` object for one run of the loop.

    Registrations change only when what the loop waits for changes (the
    listener, or a saturated driver's fds), so a busy loop pays for one
    ``poll()`` system call per request and nothing more.
    """

    __slots__ = ("extra", "listener", "poller", "wake", "wake_fd")

    def __init__(self, wake: socket.socket | None) -> None:
        self.poller = select.poll()
        self.wake: socket.socket | None = None
        self.wake_fd = -1
        if wake is not None:
            self.wake_with(wake)
        self.listener = -1
        self.extra: tuple[int, ...] = ()

    def wake_with(self, wake: socket.socket) -> None:
        """Wait on *wake*, the loop's wake-up socket, from now on."""
        self.wake = wake
        self.wake_fd = wake.fileno()
        self.poller.register(self.wake_fd, _POLLIN)

    def watch(self, listener: int, extra: Sequence[int]) -> None:
        """Wait on *listener* (``-1``: none) and on *extra* from now on."""
        poller = self.poller
        if listener != self.listener:
            if self.listener >= 0:
                poller.unregister(self.listener)
            if listener >= 0:
                poller.register(listener, _POLLIN)
            self.listener = listener
        if extra or self.extra:
            extra = tuple(extra)
            if extra != self.extra:
                for fd in self.extra:
                    poller.unregister(fd)
                for fd in extra:
                    poller.register(fd, _POLLIN)
                self.extra = extra

    def drain(self) -> None:
        """Empty the wake-up socket."""
        assert self.wake is not None
        try:
            while self.wake.recv(4096):
                pass
        except OSError:
            pass
