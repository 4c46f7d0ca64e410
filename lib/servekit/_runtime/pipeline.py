"""The route of one request of a composed server.

On the loop's thread, each listener's intake callback (:meth:`Pipeline.take`):
take a request off the listener -> the loop-side stages before admission ->
admit it (``verify``, the admission limits) -> the loop-side stages after
admission (the first-request gate) -> dispatch it to the workers, when they
have room.  In the worker (:meth:`Pipeline.run`, the workers' host): the
worker-side stages in order (the deadline clock, ...) -> the handler.
Every way a request ends -- finished, a failed stage, closed at a gate,
refused, dropped, closed by hand, cut, in a child -- goes through
:meth:`Pipeline.end`, which releases it, books it and reports it.

What keeps books (:mod:`.books`), holds connections on the loop
(:mod:`.gate`), judges admission (:mod:`.admission`) and follows requests
handed to child processes (:mod:`.children`) lives beside the route.
``servekit.classic`` has a route of its own, on the same loop and workers.
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable, Sequence
from functools import partial
from time import monotonic
from typing import Final, Generic, TypeVar, cast, final

from ..abc import Request, WorkerTraits, Workers
from ..connections import _traffic
from ..events import AcceptFailed, Accepted, ConnectionClosed, HandlerFinished, HandlerStarted
from ..events import Rejected, StageFailed
from .admission import Limits
from .books import Books
from .children import Children
from .clients import Clients
from .gate import Parking, room, socket_of
from .loop import Loop
from .wiring import Door, Intake, Wiring

__all__ = ("Pipeline",)

_ReqT = TypeVar("_ReqT", bound=Request[object])

#: The logger accept() failures are reported on.
LOGGER: Final = "servekit.server"

#: Datagrams answered per wake-up of the loop, at most, on the reactor's fast path.
DATAGRAM_BATCH: Final = 32


@final
class Pipeline(Generic[_ReqT]):
    """The route: ``take`` on the loop's thread, ``run`` in the worker, one ``end``; the workers' host."""

    __slots__ = (
        "_batch", "_closing", "_dispatch", "_door", "_doors", "_drainers", "_emit", "_failed", "_handing", "_handler", "_hold_at", "_in_child", "_screens",
        "_loop", "_report", "_room", "_routine", "_stages", "_taking", "_track", "_verify",
        "books", "children", "clients", "limits", "parking", "wiring",
    )  # fmt: skip

    def __init__(
        self,
        intakes: Sequence[Intake[_ReqT, object]],
        wiring: Wiring[_ReqT],
        loop: Loop,
        failed: Callable[[BaseException], None],
    ) -> None:
        self.wiring = wiring
        self._doors = tuple(Door(intake) for intake in intakes)
        self._door = self._doors[0] if len(self._doors) == 1 else None  # the only one, if so
        stream = self._doors[0].sock.type == socket.SOCK_STREAM
        self._loop = loop
        self._failed = failed
        self._handler = wiring.handler
        self._stages = wiring.stages
        self._verify = wiring.verify
        self._report = wiring.report
        self._emit = wiring.emit
        self._routine = wiring.routine
        self.books: Books[_ReqT, Door[_ReqT]] = Books()
        self.limits = None if wiring.admission is None else Limits(wiring.admission, self.books, wiring.report)
        # The loop-side stages hold stream connections only.
        tcp = frozenset(door for door in self._doors if door.sock.family in (socket.AF_INET, socket.AF_INET6))
        self.parking: Parking[_ReqT, Door[_ReqT]] | None = None
        if stream and wiring.loop_stages:
            self.parking = Parking(loop, wiring.loop_stages, tcp, self._accept, self._to_workers, self._closed_held)
        self._hold_at = None if self.parking is None else self.parking.hold_at  # (the gate's index)
        self._screens = self.parking is not None and self.parking.screens  # stages before admission
        self.children: Children[_ReqT] | None = None
        self._in_child = False  # a child process running a request for its parent
        self._handing: _ReqT | None = None  # the request being dispatched to workers that may fork
        self._closing: dict[int, str] = {}  # id(request) -> why, for those closed on purpose
        # Whether requests are kept live while handled; the listener taken from last.
        self._track = True
        self._taking = self._doors[0]
        self._dispatch: Callable[[_ReqT], None] = _not_started
        self._room: Callable[[], Sequence[int] | None] | None = None
        self._drainers: list[Callable[[], object]] = []
        self._batch = 1  # requests taken per wake-up of a listener

    def start(self, workers: Workers[_ReqT], traits: WorkerTraits | None) -> None:
        """Dispatch to *workers*, which declared *traits* (``None``: nothing), from now on."""
        runs_in = None if traits is None else traits.runs_in
        if runs_in == "loop":
            # Requests end on the loop's thread only: their counts need no lock.
            self.books.shared = None
            # A datagram is handled within take(), on the loop's thread: it is
            # never live while anything else runs, unless its events are made.
            self._track = (
                self.parking is not None
                or self.limits is not None
                or self._routine
                or self._doors[0].sock.type == socket.SOCK_STREAM
            )
        self._dispatch = workers.dispatch
        # Workers that take a connection in no time (the reactor's) say how
        # many to take per wake-up: one wait less per connection in a burst.
        batch: object = 1 if traits is None else traits.accepts_per_wakeup  # (a user's may be anything)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"traits.accepts_per_wakeup must be an int >= 1, got {batch!r}")
        self._batch = batch
        if runs_in not in ("loop", "threads"):
            # A child process may run requests: it reports to this process.
            self.children = Children(self._loop, self.end)
            self._dispatch = partial(self._hand_over, workers.dispatch)
        # Room for one more request: what waits at the gate's exit goes
        # first, then the admission limit, then the workers say.
        workers_room = workers.capacity if traits is None or traits.capacity else None
        parking = self.parking
        self._room = room(workers_room, self.limits, parking, self._to_workers)
        if parking is not None and self._room is not None:
            parking.check_room_with(self._room)
        self.clients: Clients[_ReqT, Door[_ReqT]] = Clients(
            self.books, self.parking, self.children, self._loop, self._closing
        )

    def sources(self) -> dict[int, Callable[[], object]]:
        """The loop's intake: each listener's fd and its callback (one listener: a bound method, cheaper)."""
        take = self.take if self._batch == 1 else self._take_some
        if self.wiring.answer is not None and not self._track and self._verify is None and not self._stages:
            take = self._answer_some  # (datagrams answered on the loop, nothing to keep live)
        if self._door is not None:
            return {self._door.sock.fileno(): take}
        return {door.sock.fileno(): partial(take, door) for door in self._doors}

    def capacity(self) -> Callable[[], Sequence[int] | None] | None:
        return self._room  # the loop's capacity check (None: always room)

    # -- on the loop's thread ---------------------------------------------------------------

    def take(self, door: Door[_ReqT] | None = None) -> bool:
        """Take a request off *door*'s ready listener (default: the only one), send it on; ``False``: none."""
        if door is None:
            door = self._doors[0]
        try:
            request = door.accept(door.sock)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self._accept_failed(door, exc, "accept()")
            return False
        self._taking = door
        if not self._track:
            # An inline datagram, not kept live: counted taken once handled,
            # so that stats() never counts it closed before it is.
            if self._verify is not None and (reason := self._verified(request)) is not None:
                self.end(request, reason, rejected=True)
                return True
            try:
                self._dispatch(request)
            except Exception as exc:  # the workers could not take it
                self._dropped(request, exc)
            finally:
                self.books.taken += 1
        elif self._screens:
            self.parking.screen(request, door)  # type: ignore[union-attr]  # (_screens: there is one)
        else:
            self._accept(request, door)
        return True

    def _take_some(self, door: Door[_ReqT] | None = None) -> None:
        """Take up to the workers' batch of requests off *door*'s listener, while there is room."""
        room = self._room
        for _ in range(self._batch):
            if not self.take(door) or (room is not None and room() is not None):
                return

    def _answer_some(self, door: Door[_ReqT] | None = None) -> None:
        """Answer up to :data:`DATAGRAM_BATCH` datagrams waiting on *door*'s socket with the wiring's message function.

        What :meth:`take` and :meth:`run` do for a datagram that is not kept
        live, in one loop: one wake-up of the loop for a batch of them.
        """
        if door is None:
            door = self._doors[0]
        answer = self.wiring.answer
        assert answer is not None
        accept, release, sock = door.accept, door.release, door.sock
        books = self.books
        started = monotonic()
        try:
            for _ in range(DATAGRAM_BATCH):
                try:
                    datagram = accept(sock)
                except (BlockingIOError, InterruptedError):
                    break
                books.taken += 1  # (counted before it is answered: stats() never lags an answer)
                try:
                    reply = answer(datagram.data)  # type: ignore[attr-defined]  # (a datagram server's)
                    if reply is not None:
                        datagram.reply(reply)  # type: ignore[attr-defined]
                except Exception as exc:
                    books.handler_errors += 1
                    self._report(datagram, exc)
                try:
                    release(datagram)
                except Exception as exc:
                    self._report(datagram, exc)
        except OSError as exc:  # (from accept: a failed recvfrom)
            self._accept_failed(door, exc, "recvfrom()")
        finally:
            books.handler_seconds += monotonic() - started

    def _accept_failed(self, door: Door[_ReqT], exc: OSError, call: str) -> None:
        """*call* (``"accept()"``, ``"recvfrom()"``) failed with *exc* on *door*'s listener: counted,
        logged and reported; the loop may back off (:meth:`Loop.accept_failed`)."""
        self.books.accept_errors += 1
        backoff = self._loop.accept_failed(exc, call, door.name, LOGGER)
        self._emit(AcceptFailed(exc.errno or 0, str(exc), backoff))

    def _verified(self, request: _ReqT) -> str | None:
        """``None`` if ``verify`` lets *request* in; else ``"verify"`` (a verify that raises refuses)."""
        verify: Callable[[object], bool] = self._verify  # type: ignore[assignment]  # (only called with one)
        try:
            return None if verify(request.client_address) else "verify"
        except Exception as exc:
            self._report(request, exc)
            return "verify"

    def _accept(self, request: _ReqT, door: Door[_ReqT]) -> None:
        """Admit *request* -- ``verify``, the admission limits; if not, it is refused and ended -- then it
        is live; on to the stages after admission (the gate), then the workers.  (Also parking's admit.)"""
        if self._verify is not None or self.limits is not None:
            reason = None if self._verify is None else self._verified(request)
            if reason is None and self.limits is not None:
                reason = self.limits.admit(request)
            if reason is not None:
                self.end(request, reason, rejected=True, door=door)
                return
        books = self.books
        books.live[id(request)] = (request, monotonic(), door)
        books.taken += 1
        if self._routine:
            self._emit(Accepted(request.client_address, door.name))
        parking = self.parking
        if parking is not None:
            if self._hold_at is not None:
                parking.park(request, self._hold_at, door)
            else:
                parking.hold(request, door)
            return
        try:
            self._dispatch(request)
        except Exception as exc:  # the workers could not take it (fork() failed, ...)
            self._dropped(request, exc)

    def _to_workers(self, request: _ReqT) -> None:
        try:
            self._dispatch(request)
        except Exception as exc:  # the workers could not take it (fork() failed, ...)
            self._dropped(request, exc)

    def _dropped(self, request: _ReqT, exc: Exception) -> None:
        self._report(request, exc)
        self.end(request, "dropped")

    def _closed_held(self, request: _ReqT, reason: str, door: Door[_ReqT]) -> None:
        """Closed while held on the loop (by a stage's timeout, its client leaving, or by hand)."""
        if reason == "gate":
            self.books.gated_out += 1
        # Not admitted yet (a stage before admission): a refusal, counted as one.
        self.end(request, reason, rejected=id(request) not in self.books.live, door=door)

    # -- in the worker (servekit.abc.WorkerHost) ---------------------------------------------

    def run(self, request: _ReqT, /) -> None:
        """Run the stages and the handler on *request*; end it."""
        if self._in_child and request is not self._handing:  # (forked other than in its dispatch)
            cast("Children[_ReqT]", self.children).report_start(request)
        handled = request
        for name, apply in self._stages:
            try:
                handled = apply(handled)
            except Exception as exc:
                self.end(request, name, handled, None, exc, name)
                return
            except BaseException as exc:  # (SystemExit & co.: ended, then on their way)
                self.end(request, name, handled, None, exc, name)
                raise
        if self._routine and not self._in_child:
            self._emit(HandlerStarted(request.client_address))
        failure: BaseException | None = None
        started = monotonic()
        try:
            self._handler(handled)
        except Exception as exc:
            failure = exc
            self._report(handled, exc)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self.end(request, "finished", handled, monotonic() - started, failure)

    def end(
        self,
        request: _ReqT,
        reason: str,
        handled: _ReqT | None = None,
        seconds: float | None = None,
        failure: BaseException | None = None,
        # (Positional, not keyword-only: keyword-only defaults cost a dict
        # lookup each per call, and this runs once per request.)
        stage: str | None = None,
        traffic: tuple[int | None, int | None] | None = None,
        released: bool = False,
        rejected: bool = False,
        door: Door[_ReqT] | None = None,
    ) -> None:
        """The one end of every request: release it (unless *released* already), book it, report it.

        *handled*: the request as the handler got it (stages may make
        another); *seconds*, *failure*: its handler's run, if one ran;
        *stage*: the stage that failed (with *failure*, and no *seconds*:
        the handler did not run); *traffic*: bytes in and out counted
        elsewhere (by a child); *rejected*: refused before admission (a
        :class:`Rejected`, never live); *door*: the listener of one not live.
        """
        if handled is None:
            handled = request
        closing = self._closing
        if closing and id(request) in closing:
            reason = closing.pop(id(request))
            if reason == "aborted" and not released:
                socket_of(handled).close()  # SO_LINGER 0: a reset, and no FIN before it
        books = self.books
        if rejected:  # counted before the release: whoever sees the connection closed finds it counted
            books.rejected[reason] = books.rejected.get(reason, 0) + 1
        if not released:
            try:
                (door or self._door or self._door_of(request)).release(handled)
            except Exception as exc:
                self._report(handled, exc)
        if self._in_child:  # a child keeps no books: it reports to the parent
            cast("Children[_ReqT]", self.children).report_end(
                request, seconds, failure, stage, traffic or _traffic(handled)
            )
            return
        if rejected:
            self._emit(Rejected(request.client_address, reason))
            return
        if door is not None and id(request) not in books.live:  # held before admission: never taken
            return
        # The books (see .books): the counts first, the live entry last.
        lock = books.shared
        if lock is not None:
            lock.acquire()
        if reason != "finished":
            books.closed_reasons[reason] = books.closed_reasons.get(reason, 0) + 1
        if seconds is None:
            books.unhandled += 1
            if stage is not None:
                books.stage_errors[stage] = books.stage_errors.get(stage, 0) + 1
        else:
            books.handler_seconds += seconds
            if failure is not None:
                books.handler_errors += 1
        key = id(request)
        left = books.peer_left
        if left is not None and key in books.live:  # (only an admitted request counted for its peer)
            left(request)
        if lock is not None:
            lock.release()
        # Counted closed from here on (see stats()): after the counts above.
        entry = books.live.pop(key, None)
        if books.draining and not books.live:
            books.idle.set()
        limits = self.limits
        if limits is not None and limits.paused:  # wake the intake the limit paused
            limits.ended()
        if self._routine:
            peer = request.client_address
            if seconds is not None:
                self._emit(HandlerFinished(peer, seconds, failure))
            elif stage is not None:
                self._emit(StageFailed(peer, stage, failure))  # type: ignore[arg-type]  # (a stage's failure)
            if entry is not None:
                bytes_in, bytes_out = traffic or _traffic(handled)
                self._emit(ConnectionClosed(peer, monotonic() - entry[1], reason, bytes_in, bytes_out))

    def _door_of(self, request: _ReqT) -> Door[_ReqT]:
        entry = self.books.live.get(id(request))  # (several listeners: the one it came through)
        return self._taking if entry is None else entry[2]

    def discard(self, request: _ReqT, /) -> None:
        """In the parent: a child process runs *request*; drop this process's copy, follow the child."""
        entry = self.books.live.get(id(request))
        self._door_of(request).discard(request)
        children = self.children
        if children is None:  # workers that said they run in threads, yet handed it to a child
            self.end(request, "dropped", released=True)
            return
        children.handed(request, time.monotonic() if entry is None else entry[1])
        if self._routine:
            self._emit(HandlerStarted(request.client_address))

    def _hand_over(self, dispatch: Callable[[_ReqT], None], request: _ReqT) -> None:
        """Dispatch *request* to workers that may fork for it: a child forked now knows which it is."""
        self._handing = request
        try:
            dispatch(request)
        finally:
            self._handing = None

    def drop(self, request: _ReqT, /) -> None:
        self.end(request, "dropped")

    def close_inherited(self) -> None:
        children = self.children
        if children is not None:
            children.become_child()
            self._in_child = True
            if self._handing is not None:  # forked in dispatch: the parent knows this child from now on
                children.report_start(self._handing)
        # A Python handler the parent set (run()'s) would keep SIGTERM from ending the child.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        # Only stream listeners: a datagram's replies go out on the listener.
        for door in self._doors:
            if door.sock.type == socket.SOCK_STREAM:
                door.sock.close()

    def child_exited(self, pid: int, status: int, /) -> None:
        if self.children is not None:
            self.children.exited(pid, status)

    def worker_failed(self, exc: BaseException, /) -> None:
        self._failed(exc)

    # -- for workers on the loop (the reactor) ----------------------------------------------------

    @property
    def loop(self) -> Loop:
        """The serve loop."""
        return self._loop

    @property
    def routine(self) -> bool:
        """Whether the routine events (accepted, started, finished, closed) are made."""
        return self._routine

    def started(self, request: _ReqT) -> None:
        """*request* is taken up (a :class:`HandlerStarted` event): for workers that do not :meth:`run` it."""
        self._emit(HandlerStarted(request.client_address))

    def report_error(self, request: _ReqT, exc: Exception) -> None:
        """Report *exc*, raised while serving *request*, as a handler's is (``on_error`` or the log)."""
        self._report(request, exc)

    def on_drain(self, callback: Callable[[], object]) -> None:
        """Call *callback* on the loop's thread when a drain begins (after the backlog is taken)."""
        self._drainers.append(callback)

    # -- the lifecycle's calls -------------------------------------------------------------------

    def drain_started(self) -> None:
        """A drain has taken the backlog (on the loop's thread): tell those who asked."""
        for callback in self._drainers:
            callback()

    def take_all(self) -> None:
        """Take every request waiting in the listen backlogs (on the loop's thread)."""
        for door in self._doors:
            while self.take(door):
                pass

    def release_held(self) -> None:
        """End the requests held on the loop (it has stopped for good)."""
        if self.parking is not None:
            self.parking.release_all("dropped")

    def close(self) -> None:
        """Close the route's own fds (the server is closed)."""
        if self.limits is not None:
            self.limits.close()
        if self.children is not None:
            self.children.close()


def _not_started(request: object) -> None:
    raise RuntimeError("the pipeline has no workers yet")
