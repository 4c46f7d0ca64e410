"""Running a server as a program's main loop: serve until a signal, then drain.

:func:`run` is the one way servekit runs a server for a whole process: it
binds (or takes a bound server), serves in a thread of its own, and on
``SIGTERM``/``SIGINT`` drains and closes.  The command-line runner and a
pre-fork supervisor's workers run servers through it.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from functools import partial
from typing import Final, Generic, TypeVar, final

from ._signals import SignalWait
from ._types import _AddrT
from ._validate import check_seconds
from .abc import Request
from .events import DrainReport
from .servers import Bound, Server, _handle

__all__ = ("run",)

log: Final = logging.getLogger("servekit.server")

_ReqT = TypeVar("_ReqT", bound=Request[object])
_T = TypeVar("_T")


def run(
    server: Server[_ReqT, _AddrT] | Bound[_ReqT, _AddrT],
    *,
    drain_seconds: float = 10.0,
    poll_interval: float = 0.5,
    signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT),
    ready: Callable[[Bound[_ReqT, _AddrT]], object] | None = None,
    stopping: Callable[[Bound[_ReqT, _AddrT]], object] | None = None,
) -> DrainReport:
    """Serve until SIGTERM or SIGINT, then drain for at most *drain_seconds*; return the report.

    One call for a program's main thread: binds *server* (or takes a bound
    one), calls *ready* with the bound handle once it listens, serves (in a
    thread of its own), and on the first of *signals* drains
    (:meth:`Bound.drain`), logs the report on the ``servekit.server`` logger
    and closes the server.  A second signal during the drain stops at once:
    every connection left is cut and the server closed without waiting.  A
    signal is acted on in this thread's own loop, not in a signal handler,
    whichever thread of the process the kernel gave it to
    (:func:`signal.set_wakeup_fd` wakes the loop); the signal handlers and
    the wake-up fd are restored on return.  *stopping* is called with the
    bound handle when the drain begins (a service manager told: systemd's
    ``STOPPING=1``, say).

    Raises:
        ValueError: not called from the main thread (signal handlers can only be set there).
        BaseException: whatever ended ``serve_forever`` (a handler's
            ``SystemExit``, ...), after the server was closed.
    """
    check_seconds("drain_seconds", drain_seconds)
    bound = server.bind() if isinstance(server, Server) else server
    with bound, SignalWait(signals) as signals_wait:
        serving = _Beside(partial(bound.serve_forever, poll_interval), signals_wait, f"servekit serving {bound!r}")
        if ready is not None:
            ready(bound)
        came: list[signal.Signals] = []
        while not came and not serving.ended.is_set():
            came = signals_wait.wait()
        if not came:  # serve_forever ended by itself
            serving.outcome()
        else:
            log.info("%s: draining for at most %.1f s", came[0].name, drain_seconds)
        if stopping is not None:
            stopping(bound)
        # The drain runs in a thread of its own, and this one sleeps on the
        # signals' wake-up fd meanwhile: a second signal cuts the drain, whichever
        # thread the kernel gave it to (this one, blocked in a lock or an event,
        # would not wake for a signal taken by another thread).
        runtime = _handle(bound).runtime
        if len(came) > 1:  # the second came with the first
            runtime.cut_drain()
        draining = _Beside(partial(bound.drain, drain_seconds), signals_wait, f"servekit draining {bound!r}")
        while not draining.ended.is_set():
            if signals_wait.wait():
                runtime.cut_drain()
        report = draining.outcome()
        log.info("drained in %.1f s: %d finished, %d cut", report.seconds, report.finished, report.cut)
        serving.thread.join()
    return report


@final
class _Beside(Generic[_T]):
    """A call run in a thread of its own, that wakes the main thread's :class:`SignalWait` when it ends."""

    __slots__ = ("ended", "failed", "result", "thread")

    def __init__(self, call: Callable[[], _T], signals_wait: SignalWait, name: str) -> None:
        self.ended = threading.Event()
        self.result: list[_T] = []
        self.failed: list[BaseException] = []

        def run() -> None:
            try:
                self.result.append(call())
            except BaseException as exc:  # noqa: BLE001 - raised again in the main thread
                self.failed.append(exc)
            finally:
                self.ended.set()
                signals_wait.wake()

        self.thread = threading.Thread(target=run, name=name)
        self.thread.start()

    def outcome(self) -> _T:
        """What the call returned, once it has; what it raised, raised again here."""
        self.thread.join()
        if self.failed:
            raise self.failed[0]
        return self.result[0]
