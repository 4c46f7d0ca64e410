"""The one serve loop: wait, take a request, service actions, stop.

Everything that serves requests -- the composed :class:`~servekit.server.Bound`
handle and every ``servekit.classic`` server -- runs this loop.  What happens
with a ready listener is the *driver's* business (accept, admit, dispatch); the
loop only decides *when*: it waits on the listener and on a wake-up socket, so
:meth:`ServeLoop.shutdown` returns at once instead of after a poll interval.

Strategy:

* The wake-up socketpair exists only while ``serve_forever`` runs, so a server
  that is never served (or whose owner forgets to close it) holds no extra fds.
* While the driver reports no capacity (a forked dispatcher at
  ``max_children``), the listener is left out of the wait: pending
  connections stay in the kernel backlog until a worker frees a slot.
* After an ``accept()`` failure that signals resource exhaustion the driver
  asks for a back-off; the listener is left out of the wait until it passes,
  so the loop does not spin at 100 % CPU on ``EMFILE``.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import threading
import time
from collections.abc import Sequence
from typing import Final, Protocol

__all__ = ("ACCEPT_BACKOFF", "Driver", "ServeLoop", "accept_failed")

_READY: Final = 1
_IDLE: Final = 0
_GONE: Final = -1

_POLLIN: Final = select.POLLIN
_POLLNVAL: Final = select.POLLNVAL

#: ``accept()`` errors that mean "out of a resource", not "bad connection":
#: retrying at once would spin, so the loop leaves the listener alone a while.
_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

#: Seconds to leave the listener alone after such an error.
ACCEPT_BACKOFF: Final = 0.1

#: How often a saturated driver that offers no fd to wait on is asked again.
SATURATED_POLL: Final = 0.01


class Driver(Protocol):
    """**Protocol:** what the loop asks of the server it runs.

    All methods are called from the thread running the loop.
    """

    def loop_fileno(self) -> int:
        """The listening socket's fd, or ``-1`` once it is closed (the loop then stops)."""
        ...

    def loop_ready(self) -> float:
        """Take one request off the ready listener and dispatch it.

        Returns the number of seconds to leave the listener alone (``0.0``
        normally; more after an ``accept()`` failure that asks for a back-off).
        """
        ...

    def loop_service(self) -> None:
        """Periodic work: run after every wake-up of ``serve_forever``."""
        ...

    def loop_capacity(self) -> Sequence[int] | None:
        """``None`` when another request may be taken now.

        Otherwise the fds that become readable when capacity may have come back
        (for example pidfds of child processes); an empty sequence makes the loop
        re-ask every :data:`SATURATED_POLL` seconds.
        """
        ...


def accept_failed(exc: OSError, call: str, where: str, log: logging.Logger) -> float:
    """The back-off policy for a failed ``accept()``, shared by every driver.

    Resource exhaustion is logged as a warning and answered with
    :data:`ACCEPT_BACKOFF` seconds of leaving the listener alone; any other
    error (a connection that died in the backlog, ...) is logged at debug
    level and skipped.  Returns the back-off for :meth:`Driver.loop_ready`.
    """
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
        driver = self._driver
        waiter = _Waiter(wake[0])
        try:
            # The stop flag is checked after each wait: a stop asked for while
            # the loop waited wins over a request that came in meanwhile.
            while not self._stop:
                state = self._wait(poll_interval, waiter)
                if self._stopping() or state == _GONE:
                    break
                if state == _READY:
                    delay = driver.loop_ready()
                    if delay > 0:
                        self._backoff_until = time.monotonic() + delay
                driver.loop_service()
        finally:
            with self._lock:
                self._serving = None
                self._wake = None
                self._stop = False
                self._idle.set()
            for sock in wake:
                sock.close()

    def handle_request(self, timeout: float | None) -> bool:
        """Wait up to *timeout* seconds (``None``: no limit) and handle one request.

        Returns ``False`` when the time ran out (or the listener is closed).
        The listener is polled at least once, even with a timeout of 0.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        remaining = timeout
        waiter = _Waiter(None)
        while True:
            state = self._wait(remaining, waiter)
            if state == _READY:
                delay = self._driver.loop_ready()
                if delay > 0:
                    self._backoff_until = time.monotonic() + delay
                return True
            if state == _GONE:
                return False
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False

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

    def _stopping(self) -> bool:
        return self._stop

    def _poke(self) -> None:
        # Called with the lock held.
        if self._wake is not None:
            try:
                self._wake[1].send(b"\0")
            except OSError:  # the buffer is full: a wake-up is already pending
                pass

    def _wait(self, timeout: float | None, waiter: _Waiter) -> int:
        driver = self._driver
        capacity = driver.loop_capacity()
        if self._backoff_until:
            left = self._backoff_until - time.monotonic()
            if left > 0:
                capacity = ()
                timeout = left if timeout is None else min(timeout, left)
            else:
                self._backoff_until = 0.0
        if capacity is None:
            listener = driver.loop_fileno()
            if listener < 0:
                return _GONE
            if listener != waiter.listener or waiter.extra:
                waiter.watch(listener, ())
        else:
            listener = -1
            waiter.watch(-1, capacity)
            if not capacity:
                timeout = SATURATED_POLL if timeout is None else min(timeout, SATURATED_POLL)
        state = _IDLE
        # poll() takes float milliseconds and rounds them up; None waits forever.
        for fd, events in waiter.poller.poll(None if timeout is None else max(0.0, timeout * 1000)):
            if fd == listener:
                if events & _POLLNVAL:
                    return _GONE
                state = _READY
            elif fd == waiter.wake_fd:
                waiter.drain()
        return state


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
