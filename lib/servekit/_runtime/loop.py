"""The one serve loop: wait on many sources, call them, run timers and service actions, stop.

Everything that serves requests -- the composed server and every
``servekit.classic`` server -- runs this loop, and both ways of running it
(``serve_forever`` and ``handle_request``) go through one wait path,
:meth:`Loop._run`.  A *source* is an fd with a callback for when it is
readable (or has an error or a hang-up), one for when it is writable, or
both.  What a callback does (accept, admit, dispatch, write) is the owner's
business; the loop decides *when*:

* The owner hands the loop what one run serves (:class:`Run`): its *intake*
  sources (listeners, which bring new requests), its service actions, its
  workers' capacity, and when a ``handle_request`` is done.  A busy loop
  costs one wait system call per wake-up and the owner's own calls per
  request.
* Other sources (parked connections, say) are watched with
  :meth:`Loop.watch`, in a table the loop keeps between runs: a source
  watched while no run is in progress is served by the next one, and a
  source a run leaves watched is served by the next one too.
* The wait: a run starts with ``poll`` and moves to ``epoll``, where the
  platform has it, once it waits on more than 8 fds (a
  reactor's thousands of connections: each is registered once, and a wait
  costs the same however many are watched).  For a handful of fds ``poll`` is
  the cheaper wait: in CPython a call of ``epoll.poll`` runs about 800 more
  instructions than one of ``poll.poll``, 3-4 % of a whole UDP request.  The
  poller exists only while a run does, so a server that is not running holds
  no extra fd, and a small run (every ``handle_request`` of a plain server)
  makes none at all.
* ``serve_forever`` waits on a wake-up socket too, so :meth:`Loop.shutdown`
  returns at once instead of after a poll interval.  The socketpair exists
  only while ``serve_forever`` runs; when no fd is free for it, the loop
  serves without one (looking at a stop request every :data:`NO_WAKE_POLL`
  seconds) until it can make one.  ``handle_request`` makes none: like the
  standard library's, it is not stopped by ``shutdown()``.
* **Capacity**: while the workers report none (a forked dispatcher at
  ``max_children``), the intake sources are left out of the wait: new
  connections stay in the kernel backlog until a worker frees a slot.
* **Back-off**: an ``accept()`` failure that means "out of a resource"
  (``EMFILE``, ...) leaves the intake out of the wait for
  :data:`ACCEPT_BACKOFF` seconds, so the loop does not spin at 100 % CPU.  The
  loop keeps the *episode* -- from the first failure to the next request
  taken without one -- and reports its start and its end once each, however
  many attempts fail in between.
* A closed intake ends a run: ``poll`` reports a closed fd (``POLLNVAL``);
  ``epoll`` forgets it without a word, so the intake's files are looked at
  again on every wake-up that brought no event.
* Everything that runs while no fd is free needs none: reports never import
  :mod:`logging` (importing opens files), and a run stays with ``poll`` when
  ``epoll`` cannot have an fd.
"""

from __future__ import annotations

import collections
import itertools
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from .._lite import TYPE_CHECKING, NamedTuple
from .waiter import HAVE_EPOLL, Callback, IntakeClosed, Waiter, capacity_errnos, nothing

if TYPE_CHECKING:
    from typing import Final, Protocol

__all__ = ("ACCEPT_BACKOFF", "Loop", "Run", "report")

# A source's read callback is called when it is readable, or has an error or
# a hang-up (its read tells which); its write callback when it is writable --
# or has an error or a hang-up and no read callback.
_READABLE: Final = select.POLLIN | select.POLLERR | select.POLLHUP
#: poll() only: the fd is not open.
_CLOSED: Final = select.POLLNVAL
#: What the common path (a read callback, nothing else) leaves aside.
_UNUSUAL: Final = select.POLLOUT | select.POLLNVAL

#: Seconds to leave the intake alone after an ``accept()`` error that means
#: "out of a resource" (``capacity_errnos``), not "bad connection": retrying
#: at once would spin.
ACCEPT_BACKOFF: Final = 0.1

#: How often workers at capacity that offer no fd to wait on are asked again.
SATURATED_POLL: Final = 0.01

#: How often a ``serve_forever`` without its wake-up socketpair (no fd was
#: free for it) looks at a stop request and tries to make the pair again.
NO_WAKE_POLL: Final = 0.1

# logging's levels, without importing it.
_DEBUG: Final = 10
_WARNING: Final = 30



class Run(NamedTuple):
    """What one run of the loop serves, asked of the owner at its start.

    Attributes:
        intake: fd -> callback of the sources that bring new requests (the
            listeners), called when the fd is readable.  A negative fd is
            left out; a run with no intake source ends at once, and so does
            one whose intake source is closed under it.
        service: periodic work, run after every wake-up of ``serve_forever``
            (not of ``handle_request``).
        capacity: ``None`` when the workers never run out.  Otherwise asked
            at the start of a run, after each read callback and, while
            capacity is out, before every wait: ``None`` when another request
            may be taken now, or the fds that turn readable when capacity may
            have come back (pidfds of child processes); an empty sequence
            makes the loop ask again every :data:`SATURATED_POLL` seconds.
        settled: for ``handle_request``, asked after every wake-up once an
            intake callback has run: whether what it took is settled on the
            loop's side (a connection it parked has left the gate), so that
            ``handle_request`` may return.  ``None``: at once.
    """

    intake: Mapping[int, Callback]
    service: Callback
    capacity: Callable[[], Sequence[int] | None] | None
    settled: Callable[[], bool] | None = None


if TYPE_CHECKING:

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
        if exc.errno in capacity_errnos:
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


def _shorter(a: float | None, b: float) -> float:
    return b if a is None or b < a else a


def _identity(fd: int) -> tuple[int, int] | None:
    """Which open file *fd* is (device, inode), or ``None`` when it is not open."""
    try:
        stat = os.fstat(fd)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _intact(intake: Mapping[int, Callback], known: Mapping[int, tuple[int, int] | None]) -> bool:
    """Whether every fd of *intake* is still the file it was when the run started."""
    return all(_identity(fd) == known[fd] for fd in intake)


class _Episode(NamedTuple):
    """An open accept-failure episode: what failed first, where, and since when."""

    exc: OSError
    call: str
    where: str
    logger: str
    since: float


#: A timer: when, a number (equal times run in the order they were set), the callback.
_Timer = tuple[float, int, Callback]


class Loop:
    """The serve loop of one server.  Thread-safe; not re-entrant.

    One run at a time: ``serve_forever`` or ``handle_request``, in one thread.
    ``shutdown`` and ``stop`` may be called from any thread (``shutdown``
    from inside the loop's own thread only asks the loop to stop and
    returns).  ``accept_failed``, ``call_at``, ``drop_intake``, ``watch`` and
    ``unwatch`` are for the loop's own thread -- or, while no run is in
    progress, the thread that owns the server.

    Args:
        owner: the server the loop runs.
        epoll: which poller the runs wait with: ``None`` (the default) for
            ``poll``, moving to ``epoll`` where the platform has it once a
            run waits on more than 8 fds; ``True`` for
            ``epoll`` from the start, ``False`` for ``poll`` throughout (so
            that tests run the same cases on both).

    Raises:
        ValueError: *epoll* is ``True`` on a platform without it.
    """

    __slots__ = (
        "_backoff_until",
        "_episode",
        "_epoll",
        "_failures",
        "_heap",
        "_idle",
        "_lock",
        "_owner",
        "_pending",
        "_running",
        "_serving",
        "_soon",
        "_readers",
        "_stop",
        "_timers",
        "_wake",
        "_waiter",
        "_writers",
    )

    def __init__(self, owner: Owner, *, epoll: bool | None = None) -> None:
        if epoll and not HAVE_EPOLL:
            raise ValueError(f"epoll={epoll!r}: this platform has no select.epoll")
        self._owner = owner
        self._epoll = epoll
        self._lock = threading.Lock()
        # The thread of the run in progress (either kind), and of serve_forever.
        self._running: threading.Thread | None = None
        self._serving: threading.Thread | None = None
        self._pending: threading.Thread | None = None
        self._stop = False
        self._idle = threading.Event()
        self._idle.set()
        self._wake: tuple[socket.socket, socket.socket] | None = None
        # What the run in progress waits with, and on.
        self._waiter: Waiter | None = None
        # fd -> read callback, fd -> write callback: the sources watched with
        # watch(), kept between runs.  A run waits on them with its own
        # intake, wake-up socket and capacity fds added (and takes those out
        # again when it ends): one table, looked up once per event.
        self._readers: dict[int, Callback] = {}
        self._writers: dict[int, Callback] = {}
        # While an accept-failure episode is open: the end of the current
        # back-off (which may have passed), the episode, the failures so far.
        self._backoff_until = 0.0
        self._episode: _Episode | None = None
        self._failures = 0
        # (when, sequence, callback) of the timers, earliest first.
        self._timers: list[_Timer] = []
        # heapq's push and pop, once there is a timer.
        self._heap: tuple[Callable[[list[_Timer], _Timer], None], Callable[[list[_Timer]], _Timer]] | None = None
        # Callbacks other threads asked the loop's thread to run.
        self._soon: collections.deque[Callback] = collections.deque()

    @property
    def serving(self) -> bool:
        """Whether ``serve_forever`` is running now."""
        return self._serving is not None

    # -- running ------------------------------------------------------------

    def serve_forever(self, poll_interval: float) -> None:
        """Serve until :meth:`shutdown` (or the intake closes).

        Service actions run after every wake-up, at least every
        *poll_interval* seconds.

        Raises:
            RuntimeError: a run is in progress already (in another thread, or
                this thread is inside one).
        """
        me = threading.current_thread()
        wake = _wake_pair()
        with self._lock:
            if self._running is not None:
                _close_pair(wake)
                raise RuntimeError(self._busy())
            self._running = self._serving = me
            self._wake = wake
            self._stop = self._pending is me
            self._pending = None
            self._idle.clear()
        try:
            if not self._stop:
                self._waiter = self._new_waiter(None if wake is None else wake[0], self._woken)
                self._run(self._waiter, False, poll_interval * 1000, None)
        finally:
            with self._lock:
                wake, waiter = self._wake, self._waiter
                self._running = self._serving = None
                self._wake = None
                self._waiter = None
                self._stop = False
                self._idle.set()
            _close_pair(wake)
            if waiter is not None:
                waiter.end()

    def handle_request(self, timeout: float | None) -> bool:
        """Wait up to *timeout* seconds (``None``: no limit) for an intake source to fire.

        Meanwhile the watched sources and the timers are served, under
        back-off and capacity as ``serve_forever`` serves them (service
        actions are not run).  Once an intake callback has run, this goes on
        (within the timeout) until the run's :attr:`Run.settled` says the
        loop's side is settled.  The intake is polled at least once, even
        with a timeout of 0.  No wake-up socketpair is made (no fd at all,
        unless the run waits on many), and :meth:`shutdown` does not stop it.

        Returns:
            ``True`` once an intake callback has run and is settled;
            ``False`` when the time ran out first, or there is no open intake.

        Raises:
            RuntimeError: a run is in progress already (``serve_forever`` in
                another thread, or this thread is inside one).
        """
        me = threading.current_thread()
        with self._lock:
            if self._running is not None:
                raise RuntimeError(self._busy())
            self._running = me
        waiter = None
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            waiter = self._waiter = self._new_waiter(None, nothing)
            return self._run(waiter, True, None, deadline)
        finally:
            with self._lock:
                self._running = None
                self._waiter = None
            if waiter is not None:
                waiter.end()

    def _new_waiter(self, wake: socket.socket | None, woken: Callback) -> Waiter:
        """What a run starting now waits with: a new poller, on the sources watched so far."""
        return Waiter(self._epoll, wake, woken, self._readers, self._writers)

    def _busy(self) -> str:
        # Called with the lock held, while a run is in progress.
        what = "serve_forever()" if self._serving is not None else "handle_request()"
        name = "?" if self._running is None else self._running.name
        return f"{what} is already running in {name}"

    def _run(self, waiter: Waiter, once: bool, interval_ms: float | None, deadline: float | None) -> bool:
        """The one wait path: ``serve_forever``'s (*once* false) and ``handle_request``'s.

        Waits at most *interval_ms* milliseconds at a time (``None``: no
        limit), and not past *deadline* (a ``time.monotonic()`` value).
        Returns ``True`` when *once* and an intake callback has run and is
        settled; ``False`` when stopped, past the deadline, or the intake is
        gone (closed, or dropped during a ``handle_request``).
        """
        run = self._owner.loop_run()
        intake = {fd: callback for fd, callback in run.intake.items() if fd >= 0}
        # The intake's files, looked at again on every wake-up that brought
        # no event: epoll forgets a closed fd without a word.
        known = {fd: _identity(fd) for fd in intake}
        if not intake or None in known.values():
            return False
        service = nothing if once else run.service
        capacity, settled = run.capacity, run.settled
        poller, readers, writers = waiter.poller, waiter.readers, waiter.writers
        timers = self._timers
        try:
            waiter.open_intake(intake)
            # serve_forever without its wake-up socket tries to make it again.
            rewake = not once and waiter.wake_fd < 0
            # What a wait is for is looked at again before it only while
            # something limits the loop.  Capacity can only run out when a
            # callback dispatches: it is asked after each read callback, and
            # re-asked before every wait while it is out.  A handle_request
            # looks every time.
            limited = once or capacity is not None or rewake
            fired = False
            events: list[tuple[int, int]] | None = None
            while True:
                timeout = interval_ms
                if limited or self._backoff_until:
                    if once and events is not None:  # (the intake is polled at least once)
                        fired = fired or any(fd in intake for fd, _ in events)
                        if fired and (settled is None or settled()):
                            return True
                        if not intake or (deadline is not None and time.monotonic() >= deadline):
                            return False
                    if deadline is not None:
                        timeout = max(0.0, (deadline - time.monotonic()) * 1000)
                    if rewake:
                        rewake = not self._rewake(waiter)
                    timeout = self._limits(intake, capacity, timeout, waiter)
                    limited = once or rewake or not waiter.intake_open
                    if rewake:
                        timeout = _shorter(timeout, NO_WAKE_POLL * 1000)
                if timers:
                    timeout = _shorter(timeout, max(0.0, (timers[0][0] - time.monotonic()) * 1000))
                wait = poller.wait  # (poll's own, until the run waits on many fds)
                events = wait(timeout)
                # A stop asked for while the loop waited wins over a request
                # that came in meanwhile.
                if self._stop:
                    return False
                if timers:
                    self._run_timers()
                if not events and poller.fileno >= 0 and not _intact(intake, known):  # (epoll's: poll says NVAL)
                    return False
                for fd, flags in events:
                    if flags & _UNUSUAL:  # writable, or (poll) closed: off the common path
                        if flags & _CLOSED:  # the source was closed under us
                            if fd in intake:
                                return False
                            self.unwatch(fd)
                            continue
                        if flags & _READABLE:
                            read = readers.get(fd)
                            if read is not None:
                                read()
                                if capacity is not None and capacity() is not None:
                                    limited = True
                        # Looked up now: the read callback may have unwatched
                        # the fd, or watched it again.
                        write = writers.get(fd)
                        if write is not None:
                            write()
                        continue
                    try:
                        callback = readers[fd]
                    except KeyError:
                        # Unwatched by an earlier callback of this wait; or
                        # watched for writing only, and this is an error or a
                        # hang-up (its write tells which).
                        write = writers.get(fd)
                        if write is not None:
                            write()
                        continue
                    if self._backoff_until and fd in intake:
                        self._probe(callback)
                    else:
                        callback()
                    if capacity is not None and capacity() is not None:
                        limited = True
                service()
        except IntakeClosed:
            return False

    def _woken(self) -> None:
        """The wake-up socket is readable: empty it, run what other threads asked for."""
        waiter = self._waiter
        if waiter is not None:
            waiter.drain()
        soon = self._soon
        while soon:
            soon.popleft()()

    # -- timers ---------------------------------------------------------------

    def call_at(self, when: float, callback: Callback) -> None:
        """Call *callback* at ``time.monotonic()`` *when* or soon after (from the loop's thread).

        Timers run in either kind of run, after its wait; a timer set while
        no run is in progress runs in the next one.
        """
        heap = self._heap
        if heap is None:
            # heapq is imported at the first timer: servekit.classic sets none, and loads none.
            from heapq import heappop, heappush

            heap = self._heap = (heappush, heappop)
        heap[0](self._timers, (when, next(_timer_numbers), callback))

    def _run_timers(self) -> None:
        timers = self._timers
        now = time.monotonic()
        if timers and timers[0][0] <= now:
            heap = self._heap
            assert heap is not None  # (set with the first timer)
            heappop = heap[1]
            while timers and timers[0][0] <= now:
                heappop(timers)[2]()

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

        ``serve_forever`` goes on serving the other sources and the timers
        until it is stopped; ``handle_request`` returns.
        """
        waiter = self._waiter
        if waiter is not None and waiter.intake is not None:
            waiter.close_intake(waiter.intake, ())
            waiter.intake.clear()

    # -- more sources ---------------------------------------------------------

    def watch(self, fd: int, on_read: Callback | None, on_write: Callback | None = None) -> None:
        """Watch *fd* from now on, in this run and the next ones.

        *on_read* is called when *fd* is readable (or has an error or a
        hang-up), *on_write* when it is writable (or, with no *on_read*, has
        an error or a hang-up); either may be ``None``, not both.  Watching a watched fd again replaces its callbacks and what it
        is watched for (so write interest is turned on and off).  A callback
        may find its fd not ready after all (another callback of the same
        wake-up may have changed things): the fd should be non-blocking.

        Unwatch an fd before closing it: epoll keeps a registration as long
        as the open file lives, and a forked child may hold it.  An fd found
        closed is forgotten.

        From the loop's thread, or while no run is in progress from the
        thread that owns the server; a run in progress waits on it at once,
        the next run when it starts.

        Raises:
            TypeError: *fd* is not an int.
            ValueError: *fd* is negative, or both callbacks are ``None``.
        """
        if fd < 0 or on_read is None and on_write is None:  # (a str fd: TypeError here)
            _bad_watch(fd, on_read, on_write)
        waiter = self._waiter
        if waiter is not None:
            waiter.watch(fd, on_read, on_write)
            return
        if on_read is None:
            self._readers.pop(fd, None)
        else:
            self._readers[fd] = on_read
        if on_write is None:
            self._writers.pop(fd, None)
        else:
            self._writers[fd] = on_write

    def unwatch(self, fd: int) -> None:
        """Stop watching *fd* (as :meth:`watch`, from the loop's thread).  Unknown fds are ignored."""
        waiter = self._waiter
        if waiter is not None:
            waiter.unwatch(fd)
        else:
            self._readers.pop(fd, None)
            self._writers.pop(fd, None)

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
        if exc.errno not in capacity_errnos:
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

    def _rewake(self, waiter: Waiter) -> bool:
        """Try again to make the wake-up socketpair; whether it was made."""
        wake = _wake_pair()
        if wake is None:
            return False
        with self._lock:
            self._wake = wake
        waiter.wake_with(wake[0], self._woken)
        return True

    def _limits(
        self,
        intake: dict[int, Callback],
        capacity: Callable[[], Sequence[int] | None] | None,
        timeout: float | None,
        waiter: Waiter,
    ) -> float | None:
        """Open or close the intake for the next wait, under a back-off or a capacity limit.

        Returns the wait's timeout in milliseconds (``None``: none).
        """
        if self._backoff_until:
            left = self._backoff_until - time.monotonic()
            if left > 0:
                waiter.close_intake(intake, ())
                return _shorter(timeout, left * 1000)
            # Passed: the intake is watched again, and the episode lasts
            # until a request is taken without a failure.
        if capacity is not None:
            waiting_for = capacity()
            if waiting_for is not None:
                waiter.close_intake(intake, waiting_for)
                return timeout if waiting_for else _shorter(timeout, SATURATED_POLL * 1000)
        waiter.open_intake(intake)
        return timeout


def _bad_watch(fd: int, on_read: Callback | None, on_write: Callback | None) -> None:
    """Raise the error :meth:`Loop.watch`'s arguments deserve."""
    if not isinstance(fd, int):
        raise TypeError(f"watch(): fd must be an int, not {fd!r}")
    if fd < 0:
        raise ValueError(f"watch({fd!r}): not a file descriptor")
    raise ValueError(f"watch({fd!r}): no callback (on_read and on_write are both None; unwatch() stops watching)")
