"""What one run of the serve loop waits with and on: a poller, and the callbacks of its fds.

:class:`_Poller` is ``poll``, moving to ``epoll`` (where the platform has
it) once a run waits on more than :data:`_POLL_MOST` fds: for a handful of
fds ``poll`` is the cheaper call, for thousands ``epoll``.  :class:`Waiter`
is one run's registrations over the loop's tables of sources (fd -> read
callback, fd -> write callback), with the run's own fds -- its intake, the
wake-up socket, capacity fds -- added while it lasts.  Registrations change
only when what the loop waits for changes, so a busy loop pays for one wait
system call per wake-up and nothing more.  (Private to :mod:`.loop`.)
"""

from __future__ import annotations

import errno
import select
import socket
from collections.abc import Callable, Mapping, Sequence

from .._lite import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Final

__all__ = ("Callback", "IntakeClosed", "Waiter", "capacity_errnos", "nothing")

Callback = Callable[[], object]

# Interest in poll()'s bits; epoll's have the same values (Linux).
_READ: Final = select.POLLIN
_WRITE: Final = select.POLLOUT

#: Whether the platform has epoll.
HAVE_EPOLL: Final = hasattr(select, "epoll")

#: A run waits with poll on at most this many fds; on more, with epoll.  (On
#: loopback sockets the two waits take the same time at 6 to 8 fds; poll's
#: grows with each fd, epoll's does not.)
_POLL_MOST: Final = 8

#: Errors that mean "out of a resource" (no fd, no memory, ...).
capacity_errnos: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def nothing() -> None:
    pass


class IntakeClosed(Exception):
    """An intake fd turned out closed when it was registered again: the run ends."""


class _Poller:
    """What one run waits with: ``poll``, or ``epoll`` once the run waits on many fds.

    ``register(fd, mask)``, ``modify(fd, mask)``, ``unregister(fd)`` and
    ``wait(timeout_ms) -> [(fd, flags), ...]``, the same calls either way.
    Masks and flags are in ``poll``'s bits (``epoll``'s are the same numbers);
    timeouts in milliseconds, ``poll``'s unit: with ``poll`` the calls are its
    own methods, with nothing in between.

    Args:
        grows: whether it may move to ``epoll`` (:meth:`to_epoll`).
    """

    __slots__ = ("_epoll_poll", "_forget", "close", "fileno", "grows", "modify", "register", "unregister", "wait")

    def __init__(self, grows: bool) -> None:
        poll = select.poll()
        self.register: Callable[[int, int], None] = poll.register
        self.modify: Callable[[int, int], None] = poll.modify
        self.wait: Callable[[float | None], list[tuple[int, int]]] = poll.poll
        self._forget: Callable[[int], None] = poll.unregister
        self.unregister: Callable[[int], None] = poll.unregister  # (an fd registered, with poll)
        self._epoll_poll: Callable[[float | None], list[tuple[int, int]]] = poll.poll  # (epoll's, once moved)
        self.close: Callable[[], None] = nothing
        # The poller's own fd (poll has none).
        self.fileno = -1
        self.grows = grows

    def to_epoll(self, masks: Mapping[int, int]) -> bool:
        """Wait with ``epoll`` from now on, on *masks* (fd -> mask); ``False`` if no fd is free for it.

        An fd of *masks* that is closed already is left out (``poll`` would
        have reported it).
        """
        self.grows = False
        try:
            epoll = select.epoll()
        except OSError as exc:
            if exc.errno in capacity_errnos:
                return False
            raise
        for fd, mask in masks.items():
            try:
                epoll.register(fd, mask)
            except OSError as exc:
                # Closed already -- or closed, and the number is the epoll fd's now.
                if exc.errno != errno.EBADF and fd != epoll.fileno():
                    epoll.close()
                    raise
        self.register, self.modify, self._forget = epoll.register, epoll.modify, epoll.unregister
        self.unregister = self._unregister
        self._epoll_poll = epoll.poll
        self.wait = self._wait_seconds
        self.close = epoll.close
        self.fileno = epoll.fileno()
        return True

    def _wait_seconds(self, timeout: float | None) -> list[tuple[int, int]]:
        # epoll.poll takes seconds.
        return self._epoll_poll(None if timeout is None else timeout / 1000)

    def _unregister(self, fd: int) -> None:
        try:
            self._forget(fd)
        except OSError:  # (epoll) closed already, or the number is another file's now
            pass


class Waiter:
    """What one run waits on: its poller, and the callbacks of every fd it waits on.

    Registrations change only when what the loop waits for changes (the
    intake opens or closes, a source is watched, unwatched or watched
    differently), so a busy loop pays for one wait system call per wake-up
    and nothing more.

    Args:
        epoll: the loop's switch (see :class:`Loop`).
        wake: the loop's wake-up socket, if it has one.
        woken: what to call when it is readable.
        readers, writers: the loop's tables of watched sources (fd -> read
            callback, fd -> write callback), waited on from now on; the run
            adds its own fds to them, and :meth:`end` takes those out again.
    """

    __slots__ = ("extra", "intake", "intake_open", "poller", "readers", "wake", "wake_fd", "writers")

    def __init__(
        self,
        epoll: bool | None,
        wake: socket.socket | None,
        woken: Callback,
        readers: dict[int, Callback],
        writers: dict[int, Callback],
    ) -> None:
        self.poller = _Poller(grows=HAVE_EPOLL if epoll is None else epoll)
        # fd -> read callback, fd -> write callback, of every fd waited on
        # now (the wake-up socket's empties it; a capacity fd's does nothing:
        # the wait is over), and how many fds that is.
        self.readers = readers
        self.writers = writers
        if epoll:
            self.poller.to_epoll({})
        # The sources watched before this run.
        masks = dict.fromkeys(readers, _READ)
        for fd in writers:
            masks[fd] = masks.get(fd, 0) | _WRITE
        for fd, mask in masks.items():
            try:
                self.poller.register(fd, mask)
            except OSError as exc:  # closed since (its number maybe the epoll fd's now): forgotten
                if exc.errno != errno.EBADF and fd != self.poller.fileno:
                    self.poller.close()
                    raise
                readers.pop(fd, None)
                writers.pop(fd, None)
        if len(readers) + len(writers) > _POLL_MOST and self.poller.grows:
            self._grow()
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
        self.watch(self.wake_fd, woken, None)

    def watch(self, fd: int, on_read: Callback | None, on_write: Callback | None) -> bool:
        """Wait on *fd* for what its callbacks are for, from now on; ``False`` if it is closed (then it is not)."""
        readers, writers = self.readers, self.writers
        if on_write is None and fd not in readers and fd not in writers:  # the common case: a new reader
            try:
                self.poller.register(fd, _READ)
            except OSError as exc:
                return self._gone(fd, exc)
            readers[fd] = on_read  # type: ignore[assignment]  # (not None: Loop.watch says so)
            if len(readers) > _POLL_MOST and self.poller.grows:
                self._grow()
            return True
        was = (_READ if fd in readers else 0) | (_WRITE if fd in writers else 0)
        mask = (0 if on_read is None else _READ) | (0 if on_write is None else _WRITE)
        poller = self.poller
        try:
            if not was:
                poller.register(fd, mask)
            elif mask != was:
                try:
                    poller.modify(fd, mask)
                except FileNotFoundError:  # (epoll) closed and the number reused since: a new file
                    poller.register(fd, mask)
        except OSError as exc:
            return self._gone(fd, exc)
        if on_read is None:
            readers.pop(fd, None)
        else:
            readers[fd] = on_read
        if on_write is None:
            writers.pop(fd, None)
        else:
            writers[fd] = on_write
        if not was and len(readers) + len(writers) > _POLL_MOST and poller.grows:
            self._grow()
        return True

    def _gone(self, fd: int, exc: OSError) -> bool:
        """Registering *fd* failed with *exc*: (epoll) closed already -- or closed, and the number is
        the epoll fd's now: forgotten, as poll's POLLNVAL has it.  Anything else is raised."""
        if exc.errno != errno.EBADF and fd != self.poller.fileno:
            raise exc
        self.unwatch(fd)
        return False

    def _grow(self) -> None:
        """Wait with epoll from now on (the run waits on many fds)."""
        masks = dict.fromkeys(self.readers, _READ)
        for each in self.writers:
            masks[each] = masks.get(each, 0) | _WRITE
        self.poller.to_epoll(masks)

    def unwatch(self, fd: int) -> None:
        writers = self.writers
        if self.readers.pop(fd, None) is not None or writers and writers.pop(fd, None) is not None:
            writers.pop(fd, None)
            self.poller.unregister(fd)

    def open_intake(self, intake: dict[int, Callback]) -> None:
        """Wait on the intake (and no capacity fd) from now on.

        Raises:
            IntakeClosed: an intake fd is closed (epoll says so here).
        """
        self.intake = intake
        if not self.intake_open:
            self._extra(())
            for fd, callback in intake.items():
                if not self.watch(fd, callback, None):
                    raise IntakeClosed(fd)
            self.intake_open = True

    def close_intake(self, intake: Mapping[int, Callback], extra: Sequence[int]) -> None:
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
                    self.watch(fd, nothing, None)
                self.extra = extra

    def end(self) -> None:
        """The run is over: take its own fds out of the tables (the sources stay), close the poller."""
        if self.intake is not None:
            self.close_intake(self.intake, ())
        self._extra(())
        if self.wake_fd >= 0:
            self.unwatch(self.wake_fd)
        self.poller.close()

    def drain(self) -> None:
        """Empty the wake-up socket."""
        assert self.wake is not None
        try:
            while self.wake.recv(4096):
                pass
        except OSError:
            pass
