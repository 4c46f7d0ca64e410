"""A composed server's running state: serve, shut down, close; what a worker's failure does.

:class:`Runtime` is what :meth:`servekit.Server.bind` makes: the listener,
the loop, the pipeline and the workers of one server, and the lifecycle
they share -- idle, serving (``serve_forever``), closed -- with the rule for
a ``SystemExit``/``KeyboardInterrupt`` from a handler: it stops the loop,
closes the server and is raised again from ``serve_forever``.  The public
handle, :class:`servekit.Bound`, is a thin face over it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar, final

from ..abc import Acceptor, Dispatcher, Gate, Listener, Request, Workers
from ..errors import ServerClosedError
from ..events import Connection, DrainFinished, DrainReport, DrainStarted, Event, Stats
from .loop import Loop, Run
from .pipeline import Admission, Pipeline
from .workers import ChildWorkers, InlineWorkers

__all__ = ("Runtime",)

#: How long a drain gives forked children, signalled at its deadline, before killing them.
CHILD_GRACE = 1.0

_ReqT = TypeVar("_ReqT", bound=Request[object])
_AddrT = TypeVar("_AddrT")


@final
class Runtime(Generic[_ReqT, _AddrT]):
    """The listener, loop, pipeline and workers of one bound composed server."""

    __slots__ = (
        "_close_lock",
        "_closed",
        "_emit",
        "_fatal",
        "_service",
        "_tend",
        "draining",
        "listener",
        "loop",
        "pipeline",
        "timeout",
        "workers",
    )

    def __init__(
        self,
        listener: Listener[_AddrT],
        acceptor: Acceptor[_ReqT],
        dispatcher: Dispatcher,
        handler: Callable[[_ReqT], object],
        verify: Callable[[object], bool] | None,
        report: Callable[[_ReqT, Exception], None],
        service_actions: Callable[[], object] | None,
        timeout: float | None,
        gate: Gate | None = None,
        setup: Callable[[_ReqT], _ReqT] | None = None,
        *,
        emit: Callable[[Event], None],
        routine: bool = True,
        admission: Admission | None = None,
    ) -> None:
        self.listener = listener
        self._emit = emit
        self.draining = threading.Event()
        self.timeout = timeout
        self._service = service_actions
        self._closed = False
        self._close_lock = threading.Lock()
        self._fatal: BaseException | None = None
        self.loop = Loop(self)
        sock = listener.socket
        self.pipeline = Pipeline(
            sock,
            listener.name,
            acceptor,
            handler,
            verify,
            report,
            self.loop,
            self._worker_failed,
            gate,
            setup,
            emit=emit,
            routine=routine,
            admission=admission,
        )
        try:
            sock.setblocking(False)
            self.workers: Workers[_ReqT] = dispatcher.start(self.pipeline)
        except BaseException:
            listener.close()
            raise
        self.pipeline.start(self.workers)
        # Inline workers have nothing to service, and always have room: the
        # loop need not ask them (two calls less per request).
        inline = isinstance(self.workers, InlineWorkers)
        self._tend: Callable[[], None] | None = None if inline else self.workers.service_actions

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the loop's owner ------------------------------------------------------

    def loop_run(self) -> Run:
        pipeline = self.pipeline
        intake, watched = pipeline.sources()
        room = None if self._tend is None else self.workers.capacity
        return Run(intake, self._on_wake, pipeline.capacity(room), watched, pipeline.settled())

    def _on_wake(self) -> None:
        if self._tend is not None:
            self._tend()
        if self._service is not None:
            self._service()
        if self._fatal is not None:
            self.loop.stop()

    def _worker_failed(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        self.loop.stop()

    # -- the lifecycle -----------------------------------------------------------

    def serve_forever(self, poll_interval: float) -> None:
        self.check_open()
        try:
            self.loop.serve_forever(poll_interval)
        except BaseException:
            self.close()
            raise
        self._raise_fatal()

    def handle_request(self) -> bool:
        self.check_open()
        try:
            handled = self.loop.handle_request(self.timeout)
        except BaseException:
            self.close()
            raise
        self._raise_fatal()
        return handled

    def shutdown(self, target: object) -> None:
        self.loop.shutdown(target)

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self.loop.shutdown()
        self.listener.close()
        self.pipeline.release_parked()
        self.workers.close()
        self.pipeline.close()

    def drain(self, seconds: float) -> DrainReport:
        """Stop taking new connections, finish what is in flight until *seconds* pass, cut the rest.

        The connections waiting in the listen backlog are taken first (none
        is reset); then the listener is closed.  Connections held at the gate
        still go through it.  At the deadline every request left is cut: its
        socket is shut down, so its handler's next read or write fails.  The
        loop is stopped afterwards; :meth:`close` is the caller's.
        """
        start = time.monotonic()
        deadline = start + seconds
        pipeline = self.pipeline
        self._emit(DrainStarted(seconds))
        self.draining.set()
        pipeline.start_draining()
        swept = threading.Event()

        def last_intake() -> None:
            try:
                pipeline.take_all()
            finally:
                self.loop.drop_intake()
                self.listener.close()
                swept.set()

        try:
            self.loop.call_soon(last_intake)
        except RuntimeError:  # not serving: nothing takes the backlog; nothing is parked either
            self.listener.close()
        else:
            swept.wait(max(0.0, deadline - time.monotonic()))
        pipeline.wait_idle(deadline - time.monotonic())
        cut: list[Connection] = []
        finished: list[int] = []
        done = threading.Event()

        def cut_all() -> None:
            left, ended = pipeline.cut()
            cut.extend(left)
            finished.append(ended)
            done.set()

        try:
            self.loop.call_soon(cut_all)
        except RuntimeError:
            cut_all()
        done.wait(1.0)
        self.loop.shutdown()
        workers = self.workers
        if cut and isinstance(workers, ChildWorkers):
            # A forked child's socket is not the parent's to shut: the child
            # is stopped instead (SIGTERM, then SIGKILL after a grace).
            workers.terminate(CHILD_GRACE)
        report = DrainReport(finished[0] if finished else 0, len(cut), time.monotonic() - start, tuple(cut))
        self._emit(DrainFinished(report))
        return report

    def stats(self) -> Stats:
        return self.pipeline.stats()

    def check_open(self) -> None:
        if self._closed:
            raise ServerClosedError(f"the server on {self.listener.name} is closed")

    def _raise_fatal(self) -> None:
        exc = self._fatal
        if exc is not None:
            self._fatal = None
            self.close()
            raise exc

    def state(self) -> str:
        return "closed" if self._closed else "serving" if self.loop.serving else "idle"
