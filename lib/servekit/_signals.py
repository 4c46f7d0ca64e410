"""A main thread that sleeps until a signal comes -- and acts on it there, not in a handler.

Two traps wait for a server's main thread that sets Python signal handlers
and blocks.  A process-directed signal (``kill``, a service manager's
SIGTERM) is taken by any thread that does not block it; CPython runs the
Python handler in the main thread, but only once that thread runs bytecode
again, so a main thread blocked in a lock's ``acquire`` or in ``os.wait()``
while a pool worker took the signal sleeps on.  And a handler runs between
any two bytecodes of the main thread: one that logs, while the main thread
was itself writing a log line to stderr, fails with "reentrant call" --
and logging swallows that error, with the signal.

:class:`SignalWait` avoids both.  Its handlers do nothing; the C-level
handler writes each signal's number to a socketpair
(:func:`signal.set_wakeup_fd`) from whatever thread took it, and
:meth:`SignalWait.wait` sleeps in ``select`` on the other end and returns
the signals that came, for the main thread to act on in its own time.
(Private to :mod:`servekit.runner` and :mod:`servekit._supervisor`.)
"""

from __future__ import annotations

import select
import signal
import socket
from collections.abc import Iterable
from types import FrameType, TracebackType
from typing import final

__all__ = ("SignalWait",)


@final
class SignalWait:
    """Note *signals* as they come, and a wait that any of them (or :meth:`wake`) ends.

    A context manager for the main thread: entering installs the handlers and
    the wake-up fd, leaving restores what was there before.
    """

    __slots__ = ("_previous", "_previous_fd", "_reader", "_signals", "_writer")

    def __init__(self, signals: Iterable[signal.Signals]) -> None:
        self._signals = frozenset(signals)
        self._previous: dict[signal.Signals, signal._HANDLER] = {}
        self._previous_fd = -1
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def __enter__(self) -> SignalWait:
        try:
            self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        except ValueError:  # not the main thread
            self.forget()
            raise
        for sig in self._signals:
            self._previous[sig] = signal.signal(sig, _noted)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._previous_fd)
        self.forget()

    def wait(self, timeout: float | None = None) -> list[signal.Signals]:
        """Sleep until a signal comes or :meth:`wake` is called (or *timeout* seconds pass); the signals that came."""
        select.select([self._reader], [], [], timeout)
        came = bytearray()
        try:
            while data := self._reader.recv(4096):
                came += data
        except BlockingIOError:
            pass
        return [signal.Signals(number) for number in came if number in self._signals]

    def wake(self) -> None:
        """End a :meth:`wait`, from any thread."""
        try:
            self._writer.send(b"\0")
        except OSError:  # full (a wake-up is pending anyway) or closed (the wait is over)
            pass

    def forget(self) -> None:
        """Close the socketpair without touching the handlers (also in a forked child, whose copy it is)."""
        self._reader.close()
        self._writer.close()


def _noted(signum: int, frame: FrameType | None) -> None:
    """The handlers' body: nothing (the wake-up fd has the signal's number)."""

