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
  ``EMFILE``.
"""

from __future__ import annotations

import errno
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple, Protocol

__all__ = ("ACCEPT_BACKOFF", "Driver", "Hooks", "ServeLoop", "accept_failed")

_POLLIN: Final = select.POLLIN
_POLLNVAL: Final = select.POLLNVAL

#: ``accept()`` errors that mean "out of a resource", not "bad connection":
#: retrying at once would spin, so the loop leaves the listener alone a while.
_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

#: Seconds to leave the listener alone after such an error.
ACCEPT_BACKOFF: Final = 0.1

#: How often a saturated driver that offers no fd to wait on is asked again.
SATURATED_POLL: Final = 0.01


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


def accept_failed(exc: OSError, call: str, where: str, logger: str) -> float:
    """The back-off policy for a failed ``accept()``, shared by every driver.

    The failure is reported on the logger named *logger* (imported only now:
    ``servekit.classic`` does not load :mod:`logging` until it logs).
    Resource exhaustion is logged as a warning and answered with
    :data:`ACCEPT_BACKOFF` seconds of leaving the listener alone; any other
    error (a connection that died in the backlog, ...) is logged at debug
    level and skipped.  Returns the back-off for :meth:`ServeLoop.back_off`.
    """
    import logging  # noqa: PLC0415 - see above

    log = logging.getLogger(logger)
    if exc.errno in _CAPACITY_ERRNOS:
        log.warning("%s on %s failed (%s); pausing %.1f s before accepting again", call, where, exc, ACCEPT_BACKOFF)
        return ACCEPT_BACKOFF
    log.debug("%s on %s failed: %s", call, where, exc)
    return 0.0


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

    __slots__ = ("_backoff_until", "_driver", "_idle", "_lock", "_pending", "_serving", "_stop", "_wake")

    def __init__(self, driver: Driver) -> None:
        self._driver = driver
        self._lock = threading.Lock()
        self._serving: threading.Thread | None = None
        self._pending: threading.Thread | None = None
        self._stop = False
        self._idle = threading.Event()
        self._idle.set()
        self._wake: tuple[socket.socket, socket.socket] | None = None
        self._backoff_until = 0.0

    @property
    def serving(self) -> bool:
        """Whether ``serve_forever`` is running now."""
        return self._serving is not None

    def serve_forever(self, poll_interval: float) -> None:
        """Serve until :meth:`shutdown` (or the listener closes)."""
        me = threading.current_thread()
        wake = socket.socketpair()
        for sock in wake:
            sock.setblocking(False)
        with self._lock:
            if self._serving is not None:
                for sock in wake:
                    sock.close()
                raise RuntimeError(f"serve_forever() is already running in {self._serving.name}")
            self._serving = me
            self._wake = wake
            self._stop = self._pending is me
            self._pending = None
            self._idle.clear()
        try:
            if not self._stop:
                self._run(self._driver.loop_hooks(), poll_interval * 1000, _Waiter(wake[0]))
        finally:
            with self._lock:
                self._serving = None
                self._wake = None
                self._stop = False
                self._idle.set()
            for sock in wake:
                sock.close()

    def _run(self, hooks: Hooks, interval_ms: float, waiter: _Waiter) -> None:
        listener, ready, service, capacity = hooks
        if listener < 0:
            return
        waiter.watch(listener, ())
        poll = waiter.poller.poll
        wake_fd = waiter.wake_fd
        # Capacity can only run out when a request is dispatched: it is asked
        # after each dispatch, and re-asked before every wait while it is out.
        limited = capacity is not None
        while True:
            watching = listener
            timeout_ms: float | None = interval_ms
            if limited or self._backoff_until:
                watching, timeout_ms = self._limits(listener, capacity, timeout_ms, waiter)
                limited = watching < 0
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
            service()

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
                    ready()
                    return True
            if deadline is not None:
                remaining_ms = (deadline - time.monotonic()) * 1000
                if remaining_ms <= 0:
                    return False

    def back_off(self, seconds: float) -> None:
        """Leave the listener out of the wait for *seconds* (from the loop's thread)."""
        if seconds > 0:
            self._backoff_until = time.monotonic() + seconds

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
        waiting_for: Sequence[int] | None = None
        if self._backoff_until:
            left = self._backoff_until - time.monotonic()
            if left > 0:
                waiting_for = ()
                timeout_ms = _shorter(timeout_ms, left * 1000)
            else:
                self._backoff_until = 0.0
        if waiting_for is None and capacity is not None:
            waiting_for = capacity()
        if waiting_for is None:
            waiter.watch(listener, ())
            return listener, timeout_ms
        waiter.watch(-1, waiting_for)
        if not waiting_for:
            timeout_ms = _shorter(timeout_ms, SATURATED_POLL * 1000)
        return -1, timeout_ms


class _Waiter:
    """One ``select.poll()`` object for one run of the loop.

    Registrations change only when what the loop waits for changes (the
    listener, or a saturated driver's fds), so a busy loop pays for one
    ``poll()`` system call per request and nothing more.
    """

    __slots__ = ("extra", "listener", "poller", "wake", "wake_fd")

    def __init__(self, wake: socket.socket | None) -> None:
        self.poller = select.poll()
        self.wake = wake
        self.wake_fd = -1 if wake is None else wake.fileno()
        if wake is not None:
            self.poller.register(self.wake_fd, _POLLIN)
        self.listener = -1
        self.extra: tuple[int, ...] = ()

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
