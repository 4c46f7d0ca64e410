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
from typing import Final, TypeVar

from ._signals import SignalWait
from ._types import _AddrT
from ._validate import check_seconds
from .abc import Request
from .events import DrainReport
from .servers import Bound, Server

__all__ = ("run",)

log: Final = logging.getLogger("servekit.server")

_ReqT = TypeVar("_ReqT", bound=Request[object])


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
    failed: list[BaseException] = []
    ended = threading.Event()

    def serve(signals_wait: SignalWait) -> None:
        try:
            bound.serve_forever(poll_interval)
        except BaseException as exc:  # noqa: BLE001 - raised again in the main thread
            failed.append(exc)
        finally:
            ended.set()
            signals_wait.wake()

    with bound, SignalWait(signals) as signals_wait:
        thread = threading.Thread(target=serve, args=(signals_wait,), name=f"servekit serving {bound!r}")
        thread.start()
        if ready is not None:
            ready(bound)
        came: list[signal.Signals] = []
        while not came and not ended.is_set():
            came = signals_wait.wait()
        if not came:  # serve_forever ended by itself
            thread.join()
            if failed:
                raise failed[0]
        try:
            if came:
                signals_wait.interrupt()  # from now on a signal raises KeyboardInterrupt: a second one cuts the drain
                came += signals_wait.wait(0)  # (one that came before)
                log.info("%s: draining for at most %.1f s", came[0].name, drain_seconds)
            if stopping is not None:
                stopping(bound)
            report = bound.drain(0 if len(came) > 1 else drain_seconds)
        except KeyboardInterrupt:
            report = bound.drain(0)
        log.info("drained in %.1f s: %d finished, %d cut", report.seconds, report.finished, report.cut)
        thread.join()
    return report
