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
    every connection left is cut and the server closed without waiting.  The
    signal handlers are restored on return.  *stopping* is called with the
    bound handle when the drain begins (a service manager told: systemd's
    ``STOPPING=1``, say).

    Raises:
        ValueError: not called from the main thread (signal handlers can only be set there).
        BaseException: whatever ended ``serve_forever`` (a handler's
            ``SystemExit``, ...), after the server was closed.
    """
    check_seconds("drain_seconds", drain_seconds)
    bound = server.bind() if isinstance(server, Server) else server
    stop = threading.Event()
    failed: list[BaseException] = []

    def on_signal(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # the second signal: stop at once
        log.info("%s: draining for at most %.1f s", signal.Signals(signum).name, drain_seconds)
        stop.set()

    def serve() -> None:
        try:
            bound.serve_forever(poll_interval)
        except BaseException as exc:  # noqa: BLE001 - raised again in the main thread
            failed.append(exc)
        finally:
            stop.set()

    with bound:
        previous = {sig: signal.signal(sig, on_signal) for sig in signals}
        try:
            thread = threading.Thread(target=serve, name=f"servekit serving {bound!r}")
            thread.start()
            if ready is not None:
                ready(bound)
            stop.wait()
            if failed:
                thread.join()
                raise failed[0]
            if stopping is not None:
                stopping(bound)
            try:
                report = bound.drain(drain_seconds)
            except KeyboardInterrupt:
                report = bound.drain(0)
            log.info(
                "drained in %.1f s: %d finished, %d cut", report.seconds, report.finished, report.cut
            )
            thread.join()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return report
