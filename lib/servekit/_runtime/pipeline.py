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
import struct
import time
from collections.abc import Callable, Sequence
from functools import partial
from time import monotonic
from typing import Final, Generic, TypeVar, cast, final

from ..abc import Request, WorkerTraits, Workers
from ..connections import _traffic
from ..events import AcceptFailed, Accepted, Connection, ConnectionClosed, HandlerFinished, HandlerStarted
from ..events import Rejected, StageFailed
from .admission import Limits
from .books import Books
from .children import Children
from .gate import Parking, socket_of
from .loop import Loop
from .wiring import Intake, Wiring

__all__ = ("Pipeline",)

_ReqT = TypeVar("_ReqT", bound=Request[object])

#: The logger accept() failures are reported on.
LOGGER: Final = "servekit.server"

#: SO_LINGER on, for 0 seconds: close() resets the connection.
_LINGER_0: Final = struct.pack("ii", 1, 0)

_NO_TRAFFIC: Final = (None, None)


@final
class _Door(Generic[_ReqT]):
    """One listener as the route uses it: its socket, its name, its acceptor's calls."""

    __slots__ = ("accept", "discard", "name", "release", "sock")

    def __init__(self, intake: Intake[_ReqT, object]) -> None:
        self.sock = intake.listener.socket
        self.name = intake.listener.name
        self.accept = intake.acceptor.accept
        self.release = intake.acceptor.release
        self.discard = intake.acceptor.discard


@final
class Pipeline(Generic[_ReqT]):
    """The route: ``take`` on the loop's thread, ``run`` in the worker, one ``end``; the workers' host."""

    __slots__ = (
        "_admit_at",
        "_closing",
        "_dispatch",
        "_door",
        "_doors",
        "_emit",
        "_failed",
        "_handler",
        "_in_child",
        "_loop",
        "_report",
        "_room",
        "_room_back",
        "_routine",
        "_stages",
        "_taking",
        "_track",
        "_verify",
        "books",
        "children",
        "limits",
        "parking",
        "wiring",
    )

    def __init__(
        self,
        intakes: Sequence[Intake[_ReqT, object]],
        wiring: Wiring[_ReqT],
        loop: Loop,
        failed: Callable[[BaseException], None],
    ) -> None:
        self.wiring = wiring
        self._doors = tuple(_Door(intake) for intake in intakes)
        # The one listener, when there is one: every request came through it.
        self._door = self._doors[0] if len(self._doors) == 1 else None
        stream = self._doors[0].sock.type == socket.SOCK_STREAM
        self._loop = loop
        self._failed = failed
        self._handler = wiring.handler
        self._stages = wiring.stages
        self._verify = wiring.verify
        self._report = wiring.report
        self._emit = wiring.emit
        self._routine = wiring.routine
        self.books: Books[_ReqT, _Door[_ReqT]] = Books()
        self.limits = None if wiring.admission is None else Limits(wiring.admission, self.books)
        # Wakes an intake the admission limit paused, at each end (None: it never pauses).
        self._room_back = None if self.limits is None or not self.limits.pauses else self.limits.ended
        # The loop-side stages hold stream connections only; those before
        # index _admit_at run before admission.
        loop_stages = wiring.loop_stages if stream else ()
        self._admit_at = sum(1 for stage in loop_stages if stage.before_admission)
        tcp = all(door.sock.family in (socket.AF_INET, socket.AF_INET6) for door in self._doors)
        self.parking: Parking[_ReqT, _Door[_ReqT]] | None = None
        if loop_stages:
            self.parking = Parking(loop, loop_stages, tcp, self._passed, self._closed_held)
        self.children: Children[_ReqT] | None = None
        # Whether this process is a child that runs requests for its parent (and reports to it).
        self._in_child = False
        # id(request) -> why it is being closed, for those closed on purpose.
        self._closing: dict[int, str] = {}
        # Whether requests are kept live while they are handled; the listener
        # being taken from (the one an untracked request came through).
        self._track = True
        self._taking = self._doors[0]
        self._dispatch: Callable[[_ReqT], None] = _not_started
        self._room: Callable[[], Sequence[int] | None] | None = None

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
        if runs_in not in ("loop", "threads"):
            # A child process may run requests: it reports to this process.
            self.children = Children(self._loop, self._child_ended)
        self._dispatch = workers.dispatch
        wants = traits is None or traits.capacity
        self._room = self._capacity(workers.capacity if wants else None)

    def sources(self) -> dict[int, Callable[[], object]]:
        """The loop's intake: each listener's fd and its callback."""
        if self._door is not None:  # one listener: a bound method, cheaper to call than a partial
            return {self._door.sock.fileno(): self.take}
        return {door.sock.fileno(): partial(self.take, door) for door in self._doors}

    def capacity(self) -> Callable[[], Sequence[int] | None] | None:
        """The loop's capacity check (``None``: there is always room)."""
        return self._room

    def _capacity(
        self, workers: Callable[[], Sequence[int] | None] | None
    ) -> Callable[[], Sequence[int] | None] | None:
        """Room for one more request: the connections waiting at the gate's exit go first, then
        the admission limit, then the workers'."""
        limits = None if self.limits is None or not self.limits.pauses else self.limits.full
        parts = [part for part in (limits, workers) if part is not None]
        if not parts:
            return None
        room: Callable[[], Sequence[int] | None] = parts[0]
        if len(parts) == 2:
            first, second = parts

            def room() -> Sequence[int] | None:
                waiting_for = first()
                return second() if waiting_for is None else waiting_for

        parking = self.parking
        if parking is None:
            return room

        def room_after_parked() -> Sequence[int] | None:
            waiting_for = parking.flush(self._to_workers, room)
            return room() if waiting_for is None else waiting_for

        return room_after_parked

    # -- on the loop's thread ---------------------------------------------------------------

    def take(self, door: _Door[_ReqT] | None = None) -> bool:
        """Take one request off *door*'s ready listener (default: the one listener) and send it on its way.

        Returns ``False`` when there was none to take.
        """
        if door is None:  # (with several listeners each has a callback that names its own)
            door = self._doors[0]
        try:
            request = door.accept(door.sock)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self.books.accept_errors += 1
            backoff = self._loop.accept_failed(exc, "accept()", door.name, LOGGER)
            self._emit(AcceptFailed(exc.errno or 0, str(exc), backoff))
            return False
        self._taking = door
        if not self._track:
            # An inline datagram, not kept live: counted taken once handled,
            # so that stats() never counts it closed before it is.
            if self._verify is None or self._admitted(request):
                try:
                    self._dispatch(request)
                finally:
                    self.books.taken += 1
        elif self._admit_at:
            self._screen(request, 0, door)
        elif self._verify is None and self.limits is None or self._admitted(request):
            self._accept(request, door)
        return True

    def _screen(self, request: _ReqT, index: int, door: _Door[_ReqT]) -> None:
        """Before admission: hold *request* at loop-side stage *index*, or admit it once past them."""
        if index < self._admit_at:
            cast("Parking[_ReqT, _Door[_ReqT]]", self.parking).park(request, index, door)
        elif self._verify is None and self.limits is None or self._admitted(request):
            self._accept(request, door)

    def _admitted(self, request: _ReqT) -> bool:
        """Whether *request* passes ``verify`` and the admission limits; if not, it is refused and ended."""
        verify = self._verify
        reason = None
        if verify is not None:
            try:
                if not verify(request.client_address):
                    reason = "verify"
            except Exception as exc:
                self._report(request, exc)
                reason = "verify"
        limits = self.limits
        if reason is None and limits is not None:
            reason = limits.admit(request)
        if reason is None:
            return True
        if limits is not None and limits.busy is not None and reason != "verify":
            sock = getattr(request, "socket", None)
            if isinstance(sock, socket.socket):
                try:
                    limits.busy(sock, request.client_address)
                except Exception as exc:
                    self._report(request, exc)
        self.end(request, reason, rejected=True)
        return False

    def _accept(self, request: _ReqT, door: _Door[_ReqT]) -> None:
        """*request* is admitted: live from now on; on to the stages after admission, then the workers."""
        books = self.books
        books.live[id(request)] = (request, monotonic(), door)
        books.taken += 1
        if self._routine:
            self._emit(Accepted(request.client_address, door.name))
        if self.parking is not None:
            self._hold(request, self._admit_at, door)
            return
        try:
            self._dispatch(request)
        except Exception as exc:  # the workers could not take it (fork() failed, ...)
            self._dropped(request, exc)

    def _passed(self, request: _ReqT, index: int, door: _Door[_ReqT]) -> None:
        """*request* passed the loop-side stages before *index*."""
        if index <= self._admit_at:
            self._screen(request, index, door)
        else:
            self._hold(request, index, door)

    def _hold(self, request: _ReqT, index: int, door: _Door[_ReqT]) -> None:
        """After admission: hold *request* at loop-side stage *index*, or send it to the workers once past them.

        What passed every stage waits, in turn, while the workers (or the
        admission limit) have no room: the capacity check dispatches it.
        """
        parking = cast("Parking[_ReqT, _Door[_ReqT]]", self.parking)
        if index < len(self.wiring.loop_stages):
            parking.park(request, index, door)
        elif parking.waiting or (self._room is not None and self._room() is not None):
            parking.wait_for_room(request, door)
        else:
            self._to_workers(request)

    def _to_workers(self, request: _ReqT) -> None:
        try:
            self._dispatch(request)
        except Exception as exc:  # the workers could not take it (fork() failed, ...)
            self._dropped(request, exc)

    def _dropped(self, request: _ReqT, exc: Exception) -> None:
        self._report(request, exc)
        self.end(request, "dropped")

    def _closed_held(self, request: _ReqT, reason: str, door: _Door[_ReqT]) -> None:
        """Closed while held on the loop (by a stage's timeout, its client leaving, or by hand)."""
        if reason == "gate":
            self.books.gated_out += 1
        self.end(request, reason, door=door)

    # -- in the worker (servekit.abc.WorkerHost) ---------------------------------------------

    def run(self, request: _ReqT, /) -> None:
        """Run the stages and the handler on *request*; end it."""
        if self._in_child:
            cast("Children[_ReqT]", self.children).report_start(request)
        handled = request
        for name, apply in self._stages:
            try:
                handled = apply(handled)
            except Exception as exc:
                if self._routine:
                    self._emit(StageFailed(request.client_address, name, exc))
                self.end(request, name, handled, stage=name)
                return
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
        door: _Door[_ReqT] | None = None,
    ) -> None:
        """The one end of every request: release it (unless it is *released* already), book it, report it.

        *handled* is the request as the handler got it (the stages may have
        made another); *seconds* and *failure* its handler's run, if one ran;
        *stage* the stage that failed; *traffic* the bytes in and out when
        they were counted elsewhere (a child); *rejected*: refused before it
        was admitted (reported as :class:`Rejected`, never live); *door* the
        listener it came through, when it is not live (held before admission).
        """
        if handled is None:
            handled = request
        closing = self._closing
        if closing and id(request) in closing:
            reason = closing.pop(id(request))
            if reason == "aborted" and not released:
                socket_of(handled).close()  # SO_LINGER 0: a reset, and no FIN before it
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
        books = self.books
        if rejected:
            books.rejected[reason] = books.rejected.get(reason, 0) + 1
            self._emit(Rejected(request.client_address, reason))
            return
        if self._admit_at and id(request) not in books.live:  # held before admission: never taken
            return
        entry = books.ended(request, seconds, failure, stage)
        if self._room_back is not None:
            self._room_back()
        if self._routine:
            peer = request.client_address
            if seconds is not None:
                self._emit(HandlerFinished(peer, seconds, failure))
            if entry is not None:
                bytes_in, bytes_out = traffic or _traffic(handled)
                self._emit(ConnectionClosed(peer, time.monotonic() - entry[1], reason, bytes_in, bytes_out))

    def _door_of(self, request: _ReqT) -> _Door[_ReqT]:
        """The listener *request* came through (with several listeners)."""
        entry = self.books.live.get(id(request))
        return self._taking if entry is None else entry[2]

    def discard(self, request: _ReqT, /) -> None:
        """In the parent: a child process runs *request*; drop this process's copy, follow the child."""
        entry = self.books.live.get(id(request))
        (self._taking if entry is None else entry[2]).discard(request)
        children = self.children
        if children is None:  # workers that said they run in threads, yet handed it to a child
            self.end(request, "dropped", released=True)
            return
        children.handed(request, time.monotonic() if entry is None else entry[1])
        if self._routine:
            self._emit(HandlerStarted(request.client_address))

    def drop(self, request: _ReqT, /) -> None:
        self.end(request, "dropped")

    def close_inherited(self) -> None:
        if self.children is not None:
            self.children.become_child()
            self._in_child = True
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

    def _child_ended(
        self,
        request: _ReqT,
        seconds: float | None,
        failure: BaseException | None,
        stage: str | None,
        traffic: tuple[int | None, int | None],
    ) -> None:
        self.end(request, "finished" if stage is None else stage, None, seconds, failure,
                 stage=stage, traffic=traffic, released=True)

    # -- what is live, closing it by hand, cutting it ----------------------------------------

    def held(self) -> set[int]:
        """The ids of the requests held on the loop (parked)."""
        return set() if self.parking is None else self.parking.held()

    def connections(self) -> list[Connection[object]]:
        return self.books.connections(self.held())

    def close_clients(
        self, where: Callable[[Connection[object]], bool] | None, abort: bool, reason: str = "closed", on_loop: bool = False
    ) -> list[Connection[object]]:
        """Close the live stream connections *where* selects (all: ``None``), from any thread; the ones closed.

        A running one's socket is shut down, so that its handler's next read
        or write fails and its worker ends it (with *abort*, the release
        resets it).  One held on the loop is closed on the loop's thread.  A
        child's connection is not the parent's to close: it is left alone.
        """
        now = time.monotonic()
        held = self.held()
        chosen: list[Connection[object]] = []
        on_the_loop: list[_ReqT] = []
        children = self.children
        for key, (request, since, _) in list(self.books.live.items()):
            if children is not None and children.holds(key):
                continue
            state = "parked" if key in held else "running"
            connection = Connection(request.client_address, now - since, state)
            sock = getattr(request, "socket", None)
            if (where is not None and not where(connection)) or not isinstance(sock, socket.socket):
                continue
            if sock.type != socket.SOCK_STREAM:
                continue
            chosen.append(connection)
            self._closing[key] = "aborted" if abort else reason
            if abort:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
                except OSError:
                    pass
            if state == "parked":
                on_the_loop.append(request)
            else:
                _shut(sock, abort)
        if on_the_loop:
            if on_loop:
                self._close_held(on_the_loop)
            else:
                try:
                    self._loop.call_soon(partial(self._close_held, on_the_loop))
                except RuntimeError:  # no loop: nothing else touches them
                    self._close_held(on_the_loop)
        return chosen

    def _close_held(self, requests: list[_ReqT]) -> None:
        """On the loop's thread: close *requests*, found on the loop; shut one that went to a worker meanwhile."""
        parking = self.parking
        for request in requests:
            key = id(request)
            reason = self._closing.get(key, "closed")
            if parking is not None and parking.close(request, reason):
                continue
            if key in self.books.live:
                _shut(socket_of(request), reason == "aborted")

    def cut(self) -> tuple[list[Connection[object]], int]:
        """Cut every request left (on the loop's thread, or with no loop running).

        Returns the requests cut, and how many were handled to their end
        before: every request taken was closed at the gate, cut, or finished.
        Children's requests are marked cut here; the lifecycle stops them.
        """
        left = self.connections()
        books = self.books
        finished = books.taken - books.gated_out - len(left)
        with books.lock:
            books.cut_total += len(left)
        for key in list(books.live):
            if self.children is not None and self.children.holds(key):
                self._closing[key] = "cut"
        self.close_clients(None, abort=False, reason="cut", on_loop=True)
        return left, finished

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


def _shut(sock: socket.socket, abort: bool) -> None:
    """Shut a running connection down: its handler's blocked read (or, without *abort*, write)
    fails now, and its worker ends it as usual.  An abort sends no FIN: the release's close
    resets it (SO_LINGER 0 is set already)."""
    try:
        sock.shutdown(socket.SHUT_RD if abort else socket.SHUT_RDWR)
    except OSError:
        pass


def _not_started(request: object) -> None:
    raise RuntimeError("the pipeline has no workers yet")
