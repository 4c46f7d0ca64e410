"""The route of one request of a composed server, in one place.

On the loop's thread (:meth:`Pipeline.take`, the intake source's callback):
take a request off the listener -> admit it (``verify``) -> dispatch it to
the workers.  In the worker (:meth:`Pipeline.run`, the workers' host):
handle it -> release it -> report what went wrong.  The pipeline is the
workers' host too: a worker in another process has it close what the child
must not hold, and discard the parent's copy.

The pipeline also keeps the server's books: the counters behind
``stats()`` and the lifecycle events, admission (how many connections at
most, per peer), and the live connections a drain waits for or cuts.  With
the forked dispatcher a child keeps no books of its own: it sends what the
parent's would have recorded over a pipe, which the parent's loop reads.

``servekit.classic`` has a pipeline of its own, whose stages are the classic
template methods, on the same loop and workers (``servekit._classic``).
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from time import monotonic
from collections.abc import Callable, Sequence
from functools import partial
from typing import Final, Generic, Protocol, TypeVar, cast, final

from ..abc import Acceptor, Gate, Request, Workers
from ..connections import _traffic
from ..events import (
    AcceptFailed,
    Accepted,
    ChildFailed,
    Connection,
    ConnectionClosed,
    Event,
    HandlerFinished,
    HandlerStarted,
    Rejected,
    Stats,
)
from .loop import Loop
from .pool import _Signal
from .workers import ChildWorkers, InlineWorkers

__all__ = ("Pipeline",)

_ReqT = TypeVar("_ReqT", bound=Request[object])

#: The logger accept() failures are reported on.
LOGGER: Final = "servekit.server"

#: How many bytes a gate peeks at, at least.
_PEEK: Final = 65536
_PEEK_FLAGS: Final = socket.MSG_PEEK | socket.MSG_DONTWAIT


class _Parked:
    """A connection held at the gate: how much of it the gate has seen, its low-water mark."""

    __slots__ = ("lowat", "request", "seen")

    def __init__(self, request: object) -> None:
        self.request = request
        self.seen = 0
        self.lowat = 1


#: A forked child's report of one request, sent to the parent over a pipe:
#: the request's key (its ``id()``, the same in parent and child), the
#: handler's run time, whether it raised, bytes in and out (-1: not counted),
#: the name of the exception's type.
_CHILD_RECORD: Final = struct.Struct("=Qd?qq48s")

#: SO_LINGER on, for 0 seconds: close() resets the connection.
_LINGER_0: Final = struct.pack("ii", 1, 0)


class Admission(Protocol):
    """What the pipeline reads of its admission limits: :class:`servekit.Admission`.

    A protocol, so that the runtime does not import the attrs class.
    """

    @property
    def max_connections(self) -> int | None: ...

    @property
    def per_peer(self) -> int | None: ...

    @property
    def busy(self) -> Callable[[socket.socket, object], object] | None: ...


def _peer_key(peer: object) -> object:
    """What the per-peer limit counts by: an IP peer's host, else the whole address."""
    return peer[0] if isinstance(peer, tuple) else peer


@final
class Pipeline(Generic[_ReqT]):
    """The route of one request: ``take`` on the loop's thread, ``run`` in the worker."""

    __slots__ = (
        "_accept",
        "_accept_errors",
        "_admission",
        "_child_reader",
        "_child_writer",
        "_children",
        "_closed_seen",
        "_closing",
        "_counts_lock",
        "_shared_counts",
        "_discard",
        "_dispatch",
        "_draining",
        "_emit",
        "_failed",
        "_gate",
        "_gated_out",
        "_handled_seen",
        "_handler",
        "_handler_errors",
        "_handler_seconds",
        "_idle",
        "_in_child",
        "_listener",
        "_live",
        "_loop",
        "_name",
        "_parked",
        "_paused",
        "_per_peer",
        "_peers",
        "_rejected",
        "_release",
        "_report",
        "_reports_lock",
        "_room",
        "_routine",
        "_setup",
        "_stream",
        "_taken",
        "_track",
        "_unhandled",
        "_tcp",
        "_verify",
        "_cut_total",
    )

    def __init__(
        self,
        listener: socket.socket,
        name: str,
        acceptor: Acceptor[_ReqT],
        handler: Callable[[_ReqT], object],
        verify: Callable[[object], bool] | None,
        report: Callable[[_ReqT, Exception], None],
        loop: Loop,
        failed: Callable[[BaseException], None],
        gate: Gate | None = None,
        setup: Callable[[_ReqT], _ReqT] | None = None,
        *,
        emit: Callable[[Event], None],
        routine: bool = True,
        admission: Admission | None = None,
    ) -> None:
        self._listener = listener
        self._name = name
        self._stream = listener.type == socket.SOCK_STREAM
        self._tcp = self._stream and listener.family in (socket.AF_INET, socket.AF_INET6)
        # The gate holds stream connections only.
        self._gate = gate if self._stream else None
        # id(request) -> (request, when it was taken) of every request taken
        # and not yet released; fd -> connection held at the gate.
        self._live: dict[int, tuple[_ReqT, float]] = {}
        self._parked: dict[int, _Parked] = {}
        # id(request) -> why it is being closed, for those closed on purpose.
        self._closing: dict[int, str] = {}
        # Counted on the loop's thread only: requests taken (admitted), refused
        # (per reason), closed at the gate, failed accept() calls.
        self._taken = 0
        self._rejected: dict[str, int] = {}
        self._gated_out = 0
        self._accept_errors = 0
        # Counted by the workers too, under _counts_lock (taken once per
        # request's end): the per-peer counts of live requests, the handlers'
        # time and errors, the requests that ended with no handler run.  (The
        # closed are the taken less the live; the handled, the closed less
        # the unhandled.)
        self._counts_lock = threading.Lock()
        # The same lock while more than one thread may end requests, else None.
        self._shared_counts: threading.Lock | None = self._counts_lock
        self._peers: dict[object, int] = {}
        self._unhandled = 0
        # Whether requests are kept in _live while they are handled.
        self._track = True
        self._closed_seen = self._handled_seen = 0
        self._handler_errors = 0
        self._handler_seconds = 0.0
        self._cut_total = 0
        # While draining: set when no request is left.
        self._draining = False
        self._idle = threading.Event()
        self._emit = emit
        # Whether the routine events (accepted, started, finished, closed)
        # are made at all: not when nobody looks at them.
        self._routine = routine
        self._admission = admission
        self._per_peer = admission is not None and admission.per_peer is not None
        # Made readable when a request ends while admission has paused the intake.
        self._room: _Signal | None = None
        self._paused = False
        if admission is not None and admission.max_connections is not None and admission.busy is None:
            self._room = _Signal()
        # The forked dispatcher's report pipe, and the requests its children hold.
        self._child_reader = -1
        self._child_writer = -1
        self._children: dict[int, tuple[_ReqT, float]] = {}
        # The loop's thread and the reaper both read the pipe.
        self._reports_lock = threading.Lock()
        self._in_child = False
        # Hot-path callables, looked up once.
        self._accept = acceptor.accept
        self._release = acceptor.release
        self._discard = acceptor.discard
        self._handler = handler
        self._setup = setup
        self._verify = verify
        self._report = report
        self._loop = loop
        self._failed = failed
        self._dispatch: Callable[[_ReqT], None] = _not_started

    def start(self, workers: Workers[_ReqT]) -> None:
        """Dispatch to *workers* from now on."""
        self._dispatch = workers.dispatch
        if isinstance(workers, InlineWorkers):
            # Requests end on the loop's thread only: their counts need no lock.
            self._shared_counts = None
            # A datagram is handled within take(), on the loop's thread: it is
            # never live while anything else runs, unless its events are made.
            self._track = self._stream or self._routine
        if isinstance(workers, ChildWorkers):
            self._child_reader, self._child_writer = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)

    def sources(self) -> tuple[dict[int, Callable[[], object]], dict[int, Callable[[], object]]]:
        """The fds the loop watches for this pipeline and their callbacks: its intake, and the rest."""
        watched: dict[int, Callable[[], object]] = {}
        if self._child_reader >= 0:
            watched[self._child_reader] = self.child_reports
        return {self._listener.fileno(): self.take}, watched

    def settled(self) -> Callable[[], bool] | None:
        """For a run of the loop starting now: whether the requests it has taken have left the gate.

        ``None`` without a gate (a request taken is dispatched at once).
        """
        if self._gate is None:
            return None
        parked = self._parked
        # Those held already when the run starts, kept so that their ids stay theirs.
        before = {id(entry): entry for entry in parked.values()}
        return lambda: all(before.get(id(entry)) is entry for entry in parked.values())

    def capacity(
        self, workers: Callable[[], Sequence[int] | None] | None
    ) -> Callable[[], Sequence[int] | None] | None:
        """The loop's capacity check: the admission limit's, then the workers' (``None``: always room)."""
        room = self._room
        if room is None:
            return workers
        admission = self._admission
        assert admission is not None and admission.max_connections is not None
        most = admission.max_connections
        live = self._live

        def capacity() -> Sequence[int] | None:
            if len(live) < most:
                return None if workers is None else workers()
            # Paused: a request that ends from now on sets the signal.
            room.clear()
            self._paused = True
            if len(live) < most:  # (one ended before the flag was up)
                self._paused = False
                return None if workers is None else workers()
            return room.fds

        return capacity

    def close(self) -> None:
        """Close the pipeline's own fds (the server is closed)."""
        if self._room is not None:
            self._room.close()
            self._room = None
        for fd in (self._child_reader, self._child_writer):
            if fd >= 0:
                os.close(fd)
        self._child_reader = self._child_writer = -1

    # -- on the loop's thread -----------------------------------------------

    def take(self) -> bool:
        """Take one request off the ready listener, admit it, park or dispatch it.

        Returns ``False`` when there was none to take.
        """
        try:
            request = self._accept(self._listener)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            self._accept_errors += 1
            backoff = self._loop.accept_failed(exc, "accept()", self._name, LOGGER)
            self._emit(AcceptFailed(exc.errno or 0, str(exc), backoff))
            return False
        verify = self._verify
        if verify is not None:
            try:
                admitted = verify(request.client_address)
            except Exception as exc:
                self._report(request, exc)
                admitted = False
            if not admitted:
                self._reject(request, "verify", None)
                return True
        admission = self._admission
        if admission is not None and not self._admit(request, admission):
            return True
        if not self._track:
            # An inline datagram, not kept live: counted taken once handled,
            # so that stats() never counts it closed before it is.
            try:
                self._dispatch(request)
            finally:
                self._taken += 1
            return True
        self._live[id(request)] = (request, monotonic())
        self._taken += 1
        if self._routine:
            self._emit(Accepted(request.client_address, self._name))
        if self._gate is not None:
            self._park(request)
        else:
            self._dispatch(request)
        return True

    def _admit(self, request: _ReqT, admission: Admission) -> bool:
        """Whether *request* is within the admission limits; if not, refuse it."""
        per_peer = admission.per_peer
        if per_peer is not None:
            key = _peer_key(request.client_address)
            with self._counts_lock:
                held = self._peers.get(key, 0)
                if held < per_peer:
                    self._peers[key] = held + 1
            if held >= per_peer:
                self._reject(request, "per_peer", admission.busy)
                return False
        most = admission.max_connections
        if most is not None and len(self._live) >= most:
            if per_peer is not None:
                with self._counts_lock:
                    self._peer_left(request)
            self._reject(request, "max_connections", admission.busy)
            return False
        return True

    def _peer_left(self, request: _ReqT) -> None:
        """One request of *request*'s peer has ended (under _counts_lock)."""
        key = _peer_key(request.client_address)
        held = self._peers.get(key, 0) - 1
        if held > 0:
            self._peers[key] = held
        else:
            self._peers.pop(key, None)

    def _reject(
        self, request: _ReqT, reason: str, busy: Callable[[socket.socket, object], object] | None
    ) -> None:
        """Refuse *request*: tell its client with *busy* (if any), release it, count it."""
        self._rejected[reason] = self._rejected.get(reason, 0) + 1
        if busy is not None:
            sock = getattr(request, "socket", None)
            if isinstance(sock, socket.socket):
                try:
                    busy(sock, request.client_address)
                except Exception as exc:
                    self._report(request, exc)
        try:
            self._release(request)
        except Exception as exc:
            self._report(request, exc)
        self._emit(Rejected(request.client_address, reason))

    # -- the gate: a connection waits on the loop, in no worker ----------------

    def _park(self, request: _ReqT) -> None:
        gate = self._gate
        assert gate is not None
        fd = self._socket(request).fileno()
        entry = self._parked[fd] = _Parked(request)
        self._loop.watch(fd, partial(self._peek, fd))
        if gate.timeout is not None:
            self._loop.call_at(time.monotonic() + gate.timeout, partial(self._expire, fd, entry))

    @staticmethod
    def _socket(request: _ReqT) -> socket.socket:
        sock: socket.socket = getattr(request, "socket")
        return sock

    def _peek(self, fd: int) -> None:
        entry = self._parked.get(fd)
        if entry is None:
            return
        request: _ReqT = entry.request  # type: ignore[assignment]
        sock = self._socket(request)
        gate = self._gate
        assert gate is not None
        try:
            data = sock.recv(max(_PEEK, entry.lowat), _PEEK_FLAGS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client left before its first request
            self._unpark(fd, entry)
            self._end(request, "gate")
            return
        wanted = gate.wanted(data)
        # No progress since the last look: the client half-closed (EOF with
        # a partial request); the handler gets what there is.
        if wanted == 0 or len(data) == entry.seen or not self._tcp:
            self._unpark(fd, entry)
            self._dispatch(request)
            return
        entry.seen = len(data)
        entry.lowat = wanted
        # The kernel wakes the loop again only when *wanted* bytes are there.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, wanted)

    def _unpark(self, fd: int, entry: _Parked) -> None:
        del self._parked[fd]
        self._loop.unwatch(fd)  # (nothing to do once the loop has stopped)
        if entry.lowat > 1:
            try:
                self._socket(entry.request).setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)  # type: ignore[arg-type]
            except OSError:
                pass

    def _expire(self, fd: int, entry: _Parked) -> None:
        if self._parked.get(fd) is entry:
            self._unpark(fd, entry)
            self._end(entry.request, "gate")  # type: ignore[arg-type]

    def _end(self, request: _ReqT, reason: str) -> None:
        """Release a request that no worker got (closed at the gate, cut, closed by hand)."""
        if reason == "gate":
            self._gated_out += 1
        self._let_go(request, request)
        self._done(request, reason)

    def _let_go(self, request: _ReqT, handled: _ReqT) -> None:
        """Release *handled* (set up from *request*); one aborted is reset, not closed in order."""
        if self._closing and self._closing.get(id(request)) == "aborted":
            self._socket(handled).close()  # SO_LINGER 0: a reset, and no FIN before it
        try:
            self._release(handled)
        except Exception as exc:
            self._report(handled, exc)

    def release_parked(self) -> None:
        """Close the connections held at the gate (the loop has stopped for good)."""
        for fd, entry in list(self._parked.items()):
            self._unpark(fd, entry)
            self._end(entry.request, "dropped")  # type: ignore[arg-type]

    def _done(
        self,
        request: _ReqT,
        reason: str = "finished",
        traffic: tuple[int | None, int | None] = (None, None),
        seconds: float | None = None,
        failure: BaseException | None = None,
    ) -> None:
        """*request* is released: count it (and its handler's run, if it had one: *seconds*, *failure*),
        report it closed, wake a drain or a paused intake."""
        key = id(request)
        if self._closing:
            reason = self._closing.pop(key, reason)
        lock = self._shared_counts
        if lock is not None:
            lock.acquire()
        if seconds is None:
            self._unhandled += 1
        else:
            self._handler_seconds += seconds
            if failure is not None:
                self._handler_errors += 1
        if self._per_peer:
            self._peer_left(request)
        if lock is not None:
            lock.release()
        # Counted closed from here (see stats()).
        entry = self._live.pop(key, None)
        if self._paused:  # (only ever set with a _room)
            self._paused = False
            cast("_Signal", self._room).set()
        if self._routine:
            peer = request.client_address
            if seconds is not None:
                self._emit(HandlerFinished(peer, seconds, failure))
            if entry is not None:
                bytes_in, bytes_out = traffic
                self._emit(ConnectionClosed(peer, time.monotonic() - entry[1], reason, bytes_in, bytes_out))
        if self._draining and not self._live:
            self._idle.set()

    # -- draining, live connections, counters ---------------------------------

    def start_draining(self) -> None:
        """From now on, :meth:`wait_idle` returns when the last request has ended."""
        # No lock: wait_idle looks at _live again after every wake-up.
        self._draining = True
        if not self._live:
            self._idle.set()

    def take_all(self) -> None:
        """Take every request waiting in the listen backlog (on the loop's thread)."""
        while self.take():
            pass

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to *timeout* seconds until no request is left; whether none is."""
        deadline = time.monotonic() + timeout
        idle = self._idle
        while self._live:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            # Set by the worker that ended the last request; looked at again,
            # as a request may have been taken since.
            idle.wait(left)
            idle.clear()
        return True

    def connections(self) -> list[Connection]:
        """The requests taken and not yet released: peer, age, state (a snapshot)."""
        now = time.monotonic()
        parked = {id(entry.request) for entry in list(self._parked.values())}
        return [
            Connection(request.client_address, now - since, "parked" if key in parked else "running")
            for key, (request, since) in list(self._live.items())
        ]

    def stats(self) -> Stats:
        """A snapshot of the counters."""
        with self._counts_lock:
            seconds, errors, cut = self._handler_seconds, self._handler_errors, self._cut_total
            # Read while the loop's thread and the workers go on: a request
            # is live before it is counted taken, and counted unhandled before
            # it is no longer live, so these can only lag, by a request or two;
            # the high-water marks keep the totals from going back.
            closed = max(self._closed_seen, self._taken - len(self._live))
            handled = max(self._handled_seen, closed - self._unhandled)
            self._closed_seen, self._handled_seen = closed, handled
        rejected = dict(self._rejected)
        return Stats(
            connections_accepted_total=self._taken,
            connections_rejected_total=sum(rejected.values()),
            rejected_by_reason=rejected,
            connections_active=len(self._live),
            connections_closed_total=closed,
            connections_gate_closed_total=self._gated_out,
            connections_cut_total=cut,
            accept_errors_total=self._accept_errors,
            handler_duration_seconds_count=handled,
            handler_duration_seconds_sum=seconds,
            handler_errors_total=errors,
        )

    def close_clients(
        self, where: Callable[[Connection], bool] | None, abort: bool, reason: str = "closed", on_loop: bool = False
    ) -> list[Connection]:
        """Close the live connections *where* selects (all: ``None``), from any thread; the ones closed.

        A running one's socket is shut down, so that its handler's next read
        or write fails and its worker releases it (with *abort*, the release
        resets it rather than closing it in order).  One held at the gate is
        closed on the loop's thread.  Forked children's connections are not
        the parent's to close: they are left alone here.
        """
        now = time.monotonic()
        parked = {id(entry.request): fd for fd, entry in list(self._parked.items())}
        chosen: list[Connection] = []
        to_unpark: list[tuple[int, _ReqT]] = []  # (fd, request) of those held at the gate
        for key, (request, since) in list(self._live.items()):
            if key in self._children:
                continue
            state = "parked" if key in parked else "running"
            connection = Connection(request.client_address, now - since, state)
            if where is not None and not where(connection):
                continue
            sock = getattr(request, "socket", None)
            if not self._stream or not isinstance(sock, socket.socket):
                continue
            chosen.append(connection)
            self._closing[key] = "aborted" if abort else reason
            if abort:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
                except OSError:
                    pass
            if state == "parked":
                to_unpark.append((parked[key], request))
            else:
                _shut(sock, abort)
        if to_unpark:
            if on_loop:
                self._close_parked(to_unpark)
            else:
                try:
                    self._loop.call_soon(partial(self._close_parked, to_unpark))
                except RuntimeError:  # no loop: nothing else touches them
                    self._close_parked(to_unpark)
        return chosen

    def _close_parked(self, targets: list[tuple[int, _ReqT]]) -> None:
        """On the loop's thread: close the connections *targets* found at the gate, as (fd, request)."""
        for fd, request in targets:
            key = id(request)
            entry = self._parked.get(fd)
            if entry is not None and entry.request is request:
                self._unpark(fd, entry)
                self._end(request, self._closing.get(key, "closed"))
            elif key in self._live:
                # It went on to a worker meanwhile (its fd may even be another
                # parked connection's by now): shut it down there.
                _shut(self._socket(request), self._closing.get(key) == "aborted")

    def cut(self) -> tuple[list[Connection], int]:
        """Cut every request left (on the loop's thread, or with no loop running): shut their sockets.

        Returns the requests cut, and how many were handled to their end
        before: every request taken was closed at the gate, cut, or finished.
        Forked children's requests are marked cut here; their children are
        the workers' to end.
        """
        left = self.connections()
        finished = self._taken - self._gated_out - len(left)
        with self._counts_lock:
            self._cut_total += len(left)
        for key in list(self._children):
            self._closing[key] = "cut"
        self.close_clients(None, abort=False, reason="cut", on_loop=True)
        return left, finished

    # -- in the worker (servekit.abc.WorkerHost) ----------------------------

    def run(self, request: _ReqT, /) -> None:
        """Set *request* up, handle it, release it, report a handler's or a release's ``Exception``."""
        setup = self._setup
        handled = request
        if self._routine and not self._in_child:
            self._emit(HandlerStarted(request.client_address))
        failure: BaseException | None = None
        started = monotonic()
        try:
            if setup is not None:
                handled = setup(request)  # deadlines, in the worker
            self._handler(handled)
        except Exception as exc:
            failure = exc
            self._report(handled, exc)
        except BaseException as exc:
            failure = exc
            raise
        finally:
            seconds = monotonic() - started
            self._let_go(request, handled)
            if self._in_child:
                self._child_report(request, handled, seconds, failure)
            else:
                self._done(request, "finished", _traffic(handled) if self._routine else (None, None), seconds, failure)

    def discard(self, request: _ReqT, /) -> None:
        self._discard(request)
        if self._child_writer >= 0:
            # Handed to a forked child: live until the child reports back.
            self._children[id(request)] = self._live.get(id(request), (request, time.monotonic()))
            if self._routine:
                self._emit(HandlerStarted(request.client_address))
        else:
            self._done(request, "dropped")

    def close_inherited(self) -> None:
        # In a forked child: it keeps no books, it reports to the parent.
        self._in_child = True
        if self._child_reader >= 0:
            os.close(self._child_reader)
            self._child_reader = -1
        # Only stream listeners: a datagram's replies go out on the listener.
        if self._stream:
            self._listener.close()

    def worker_failed(self, exc: BaseException, /) -> None:
        self._failed(exc)

    # -- forked children's reports ----------------------------------------------

    def _child_report(self, request: _ReqT, handled: object, seconds: float, failure: BaseException | None) -> None:
        """In a forked child: send the parent the books of *request* (dropped if the pipe is full)."""
        bytes_in, bytes_out = _traffic(handled)
        record = _CHILD_RECORD.pack(
            id(request),
            seconds,
            failure is not None,
            -1 if bytes_in is None else bytes_in,
            -1 if bytes_out is None else bytes_out,
            b"" if failure is None else type(failure).__qualname__.encode("utf-8", "replace")[:48],
        )
        try:
            os.write(self._child_writer, record)
        except OSError:
            pass  # the parent learns of the end from the child's exit

    def child_reports(self) -> int:
        """Read the forked children's reports (the loop's callback for the pipe); how many were read."""
        with self._reports_lock:
            try:
                data = os.read(self._child_reader, _CHILD_RECORD.size * 256)
            except OSError:  # empty (or closed)
                return 0
        size = _CHILD_RECORD.size
        for at in range(0, len(data) - len(data) % size, size):
            key, seconds, failed, bytes_in, bytes_out, name = _CHILD_RECORD.unpack_from(data, at)
            traffic = (None if bytes_in < 0 else bytes_in, None if bytes_out < 0 else bytes_out)
            failure = None
            if failed:
                failure = ChildFailed(f"the handler raised {name.rstrip(bytes(1)).decode('utf-8', 'replace')}")
            self._child_ended(key, seconds, failure, traffic)
        return len(data) // size

    def child_exited(self, request: _ReqT, status: int) -> None:
        """A forked child was reaped (the workers' callback): end its request if it did not report."""
        key = id(request)
        # Its report, if it sent one, is in the pipe already.
        while key in self._children and self._child_reader >= 0 and self.child_reports():
            pass
        self._child_ended(key, None, ChildFailed(f"the child exited with status {status}"), (None, None))

    def _child_ended(
        self,
        key: int,
        seconds: float | None,
        failure: BaseException | None,
        traffic: tuple[int | None, int | None],
    ) -> None:
        entry = self._children.pop(key, None)
        if entry is None:  # reported already
            return
        request, since = entry
        self._done(request, "finished", traffic, time.monotonic() - since if seconds is None else seconds, failure)


def _shut(sock: socket.socket, abort: bool) -> None:
    """Shut a running connection down: its handler's blocked read (or, without *abort*, write)
    fails now, and its worker releases it as usual.  An abort sends no FIN: the release's
    close resets it (SO_LINGER 0 is set already)."""
    try:
        sock.shutdown(socket.SHUT_RD if abort else socket.SHUT_RDWR)
    except OSError:
        pass


def _not_started(request: object) -> None:
    raise RuntimeError("the pipeline has no workers yet")
