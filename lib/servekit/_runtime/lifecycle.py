"""A composed server's running state: serve, shut down, close; what a worker's failure does.

:class:`Runtime` is what :meth:`servekit.Server.bind` makes: the listeners,
the loop, the route and the workers of one server, and the lifecycle
they share -- idle, serving (``serve_forever``), closed -- with the rule for
a ``SystemExit``/``KeyboardInterrupt`` from a handler: it stops the loop,
closes the server and is raised again from ``serve_forever``.  The public
handle, :class:`servekit.Bound`, is a thin face over it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar, final

from ..abc import Dispatcher, Listener, Request, WorkerTraits, Workers
from ..errors import ServerClosedError
from ..events import Connection, DrainFinished, DrainReport, DrainStarted, Stats
from .children import Children
from .loop import Loop, Run
from .pipeline import Pipeline
from .wiring import Intake, Wiring

__all__ = ("Runtime",)

#: How long a drain gives child processes, signalled at its deadline, before killing them.
CHILD_GRACE = 1.0

_ReqT = TypeVar("_ReqT", bound=Request[object])
_AddrT = TypeVar("_AddrT")


def _traits(workers: object) -> WorkerTraits | None:
    """What *workers* declare of themselves (``servekit.abc.Workers``' optional ``traits``)."""
    traits = getattr(workers, "traits", None)
    if traits is not None and not isinstance(traits, WorkerTraits):
        raise TypeError(
            f"{type(workers).__name__}.traits must be a servekit.abc.WorkerTraits or absent, "
            f"not {type(traits).__name__}: {traits!r}"
        )
    return traits


def _tending(
    workers: Workers[_ReqT], traits: WorkerTraits | None, children: Children[_ReqT] | None
) -> Callable[[], None] | None:
    """What the loop does for the workers after every wake-up (``None``: nothing, a call less per wake-up)."""
    service = workers.service_actions if traits is None or traits.service else None
    if children is None:
        return service

    def tend() -> None:
        if children.blind:  # children the loop cannot watch (no pidfd): looked at
            children.tend()
        if service is not None:
            service()

    return tend


@final
class Runtime(Generic[_ReqT, _AddrT]):
    """The listeners, loop, route and workers of one bound composed server."""

    __slots__ = (
        "_close_lock",
        "_closed",
        "_fatal",
        "_service",
        "_tend",
        "draining",
        "listeners",
        "loop",
        "pipeline",
        "wiring",
        "workers",
    )

    def __init__(self, intakes: Sequence[Intake[_ReqT, _AddrT]], dispatcher: Dispatcher, wiring: Wiring[_ReqT]) -> None:
        self.listeners: tuple[Listener[_AddrT], ...] = tuple(intake.listener for intake in intakes)
        self.wiring = wiring
        self.draining = threading.Event()
        self._service = wiring.service_actions
        self._closed = False
        self._close_lock = threading.Lock()
        self._fatal: BaseException | None = None
        self.loop = Loop(self)
        pipeline: Pipeline[_ReqT] | None = None
        try:
            self.pipeline = pipeline = Pipeline(intakes, wiring, self.loop, self._worker_failed)
            for listener in self.listeners:
                listener.socket.setblocking(False)
            workers: Workers[_ReqT] = dispatcher.start(pipeline)
            try:
                traits = _traits(workers)
                pipeline.start(workers, traits)
            except BaseException:
                workers.close()
                raise
        except BaseException:
            # Nothing of a server that could not start is left behind.
            if pipeline is not None:
                pipeline.close()
            for listener in self.listeners:
                listener.close()
            raise
        self.workers = workers
        self._tend = _tending(workers, traits, pipeline.children)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def name(self) -> str:
        """The listeners' names, for messages and reprs."""
        return ", ".join(listener.name for listener in self.listeners)

    # -- the loop's owner ------------------------------------------------------

    def loop_run(self) -> Run:
        pipeline = self.pipeline
        settled = None if pipeline.parking is None else pipeline.parking.settled()
        return Run(pipeline.sources(), self._on_wake, pipeline.capacity(), settled=settled)

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
            handled = self.loop.handle_request(self.wiring.timeout)
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
        for listener in self.listeners:
            listener.close()
        self.pipeline.release_held()
        self.workers.close()
        children = self.pipeline.children
        if children is not None:
            children.settle()
        self.pipeline.close()

    def drain(self, seconds: float) -> DrainReport:
        """Stop taking new connections, finish what is in flight until *seconds* pass, cut the rest.

        The connections waiting in the listen backlogs are taken first (none
        is reset); then the listeners are closed.  Connections held at the
        gate still go through it.  At the deadline every request left is cut:
        its socket is shut down, so its handler's next read or write fails,
        and a child process still holding one is stopped.  The loop is
        stopped afterwards; :meth:`close` is the caller's.
        """
        start = time.monotonic()
        deadline = start + seconds
        pipeline = self.pipeline
        books = pipeline.books
        self.wiring.emit(DrainStarted(seconds))
        self.draining.set()
        books.start_draining()
        swept = threading.Event()

        def last_intake() -> None:
            try:
                pipeline.take_all()
                pipeline.drain_started()
            finally:
                self.loop.drop_intake()
                for listener in self.listeners:
                    listener.close()
                swept.set()

        try:
            self.loop.call_soon(last_intake)
        except RuntimeError:  # not serving: nothing takes the backlog (what a gate holds is cut below)
            for listener in self.listeners:
                listener.close()
        else:
            swept.wait(max(0.0, deadline - time.monotonic()))
        books.wait_idle(deadline - time.monotonic())
        cut: list[Connection[object]] = []
        finished: list[int] = []
        done = threading.Event()

        def cut_all() -> None:
            left, ended = pipeline.clients.cut()
            cut.extend(left)
            finished.append(ended)
            done.set()

        try:
            self.loop.call_soon(cut_all)
        except RuntimeError:
            cut_all()
        done.wait(1.0)
        self.loop.shutdown()
        children = pipeline.children
        if cut and children is not None:
            # A child's socket is not the parent's to shut: the child is
            # stopped instead (SIGTERM, then SIGKILL after a grace), and reaped.
            children.terminate(CHILD_GRACE)
            if self._tend is not None:
                self._tend()
        report = DrainReport(finished[0] if finished else 0, len(cut), time.monotonic() - start, tuple(cut))
        self.wiring.emit(DrainFinished(report))
        return report

    def cut_drain(self) -> None:
        """From any thread: a drain under way stops waiting and cuts what is left now (one to come, at once).

        For a runner whose drain runs in a thread of its own while its main
        thread waits for a second signal (:func:`servekit.run`).
        """
        self.pipeline.books.cut()

    def stats(self) -> Stats:
        return self.pipeline.books.stats()

    def check_open(self) -> None:
        if self._closed:
            raise ServerClosedError(f"the server on {self.name} is closed")

    def _raise_fatal(self) -> None:
        exc = self._fatal
        if exc is not None:
            self._fatal = None
            self.close()
            raise exc

    def state(self) -> str:
        return "closed" if self._closed else "serving" if self.loop.serving else "idle"
