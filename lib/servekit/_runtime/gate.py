"""Stream connections held on the loop, in no worker, by the route's loop-side stages.

A loop-side stage (:class:`~.wiring.LoopStage`: the first-request gate, later
a PROXY header) holds a new connection as a source of the serve loop until
the bytes it wants are there: the loop wakes for it only when they are (on
TCP the kernel wakes it then, ``SO_RCVLOWAT``), it only peeks, and it closes
the connection if the client leaves or the stage's timeout passes first.
:class:`Parking` does that for every loop-side stage, and also holds the
connections that passed them all while the workers have no room: what a
gate lets through waits for capacity like everything else, in the order it
came, ahead of new connections.  :func:`room` is the loop's capacity check
that dispatches them.

Everything here runs on the loop's thread.
"""

from __future__ import annotations

import collections
import itertools
import socket
import sys
import time
from collections.abc import Callable, Collection, Sequence, Sized
from functools import partial
from typing import Final, Generic, TypeVar, final

from ..abc import Request
from .admission import Limits
from .loop import Loop
from .wiring import LoopStage

__all__ = ("Parking", "room")

_ReqT = TypeVar("_ReqT", bound=Request[object])
_WhereT = TypeVar("_WhereT")

_numbers: Final = itertools.count()

#: How many bytes a stage peeks at, at least.
_PEEK: Final = 65536
_PEEK_FLAGS: Final = socket.MSG_PEEK | socket.MSG_DONTWAIT
#: The socket's own recv: a TLS connection's socket is an ``ssl.SSLSocket``
#: (before its handshake), whose ``recv`` decrypts and takes no flags; a
#: take-stage (the PROXY header, sent before the handshake) reads the bytes
#: under it.
_recv: Final = socket.socket.recv


def socket_of(request: object) -> socket.socket:
    """The socket of a stream request (every stream request value has one)."""
    sock: socket.socket = getattr(request, "socket")
    return sock


@final
class _Parked(Generic[_ReqT, _WhereT]):
    """A connection held by stage *index*: how much of it the stage has seen, its low-water mark."""

    __slots__ = ("header", "index", "lowat", "number", "request", "seen", "sock", "where")

    def __init__(self, request: _ReqT, sock: socket.socket, index: int, where: _WhereT) -> None:
        # What the stage's timer knows it by: a timer holds no reference to
        # the connection, which would keep it (and its files) alive until the
        # timer's time, long after it is gone.
        self.number = next(_numbers)
        self.request = request
        self.sock = sock
        self.index = index
        self.where = where
        self.seen = 0
        self.lowat = 1
        self.header = b""  # what a take-stage has taken off the socket so far


@final
class Parking(Generic[_ReqT, _WhereT]):
    """The connections held on the loop: at a loop-side stage, or waiting for room in the workers.

    The route hands a new connection to :meth:`screen` (when there are
    stages before admission) or, once admitted, to :meth:`hold`.  Past the
    stages before admission it calls *admit*; past the last stage,
    *dispatch* -- at once if the workers have room, else in turn, from the
    capacity check (:func:`room`).  *tcp* holds the *where* of the TCP
    listeners: only TCP sockets honour ``SO_RCVLOWAT`` in ``poll()``; a
    connection of another listener passes a stage at its first byte.  *closed* is called with a request, the
    reason (the stage's name, or the one :meth:`close` was given) and its
    *where* (the listener it came through) when it is closed here.
    """

    __slots__ = (
        "_admit", "_admit_at", "_closed", "_dispatch", "_loop", "_parked", "_ready", "_room", "_stages", "_tcp",
        "room_known",
    )  # fmt: skip

    def __init__(
        self,
        loop: Loop,
        stages: Sequence[LoopStage],
        tcp: Collection[_WhereT],
        admit: Callable[[_ReqT, _WhereT], None],
        dispatch: Callable[[_ReqT], None],
        closed: Callable[[_ReqT, str, _WhereT], None],
    ) -> None:
        self._loop = loop
        self._stages = tuple(stages)
        self._admit_at = sum(1 for stage in self._stages if stage.before_admission)
        self._tcp = tcp
        self._admit = admit
        self._dispatch = dispatch
        self._closed = closed
        # The loop's capacity check, once the route has one (None: always room):
        # it dispatches what waits in _ready; and whether it said "room" last,
        # with nothing dispatched since (then one more may go at once).
        self._room: Callable[[], Sequence[int] | None] | None = None
        self.room_known = False
        # fd -> the connection held there by a stage.
        self._parked: dict[int, _Parked[_ReqT, _WhereT]] = {}
        # Connections that passed every stage and wait for room, oldest first.
        self._ready: collections.deque[tuple[_ReqT, _WhereT]] = collections.deque()

    # -- held by a stage ---------------------------------------------------------------

    @property
    def hold_at(self) -> int | None:
        """The first stage after admission (``None``: there is none)."""
        return self._admit_at if self._admit_at < len(self._stages) else None

    @property
    def screens(self) -> bool:
        """Whether there are stages before admission."""
        return self._admit_at > 0

    def screen(self, request: _ReqT, where: _WhereT) -> None:
        """Hold a new connection at the first stage before admission."""
        self.park(request, 0, where)

    def hold(self, request: _ReqT, where: _WhereT) -> None:
        """An admitted connection, when no stage comes after admission: on to the workers."""
        self._passed(request, self._admit_at, where, admitted=True)

    def _passed(self, request: _ReqT, index: int, where: _WhereT, admitted: bool = False) -> None:
        """*request* passed the stages before *index*: on to the next one, admission, or the workers.

        Past the last stage it goes to the workers at once when nothing
        limits them, or when the loop's capacity check said there is room
        and nothing was dispatched since; otherwise it waits in turn, and the
        capacity check -- asked after every callback, so right after this
        one -- dispatches it while there is room.
        """
        if index == self._admit_at and not admitted:
            self._admit(request, where)
        elif index < len(self._stages):
            self.park(request, index, where)
        elif self._room is None or self.room_known and not self._ready:
            self.room_known = False
            self._dispatch(request)
        else:
            self._ready.append((request, where))

    def park(self, request: _ReqT, index: int, where: _WhereT) -> None:
        """Hold *request* at stage *index* until its bytes are there."""
        sock = socket_of(request)
        fd = sock.fileno()
        entry = self._parked[fd] = _Parked(request, sock, index, where)
        self._loop.watch(fd, partial(self._peek, fd))
        timeout = self._stages[index].gate.timeout
        if timeout is not None:
            self._loop.call_at(time.monotonic() + timeout, partial(self._expire, fd, entry.number))

    def _peek(self, fd: int) -> None:
        entry = self._parked.get(fd)
        if entry is None:
            return
        request = entry.request
        sock = entry.sock
        stage = self._stages[entry.index]
        if stage.take is not None:
            self._take(fd, entry, stage.take)
            return
        try:
            data = _recv(sock, max(_PEEK, entry.lowat), _PEEK_FLAGS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client left
            self._unpark(fd, entry)
            self._closed(request, stage.name, entry.where)
            return
        wanted = stage.gate.wanted(data)
        # No progress since the last look: the client half-closed (EOF with
        # a partial request); the next step gets what there is.
        if wanted == 0 or len(data) == entry.seen or entry.where not in self._tcp:
            self._unpark(fd, entry)
            self._passed(request, entry.index + 1, entry.where)
            return
        entry.seen = len(data)
        entry.lowat = wanted
        # The kernel wakes the loop again only when *wanted* bytes are there.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, wanted)

    def _take(self, fd: int, entry: _Parked[_ReqT, _WhereT], take: Callable[[bytes, object], int | None]) -> None:
        """A take-stage's connection is readable: read its header on, and pass it, hold it, or refuse it."""
        sock = entry.sock
        name = self._stages[entry.index].name
        try:
            data = _recv(sock, _PEEK, _PEEK_FLAGS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        try:
            if not data:  # the client left (or half-closed) before its header was whole
                raise ValueError("the connection ended within its header")
            header = entry.header + data
            length = take(header, entry.request)
            if length is None:  # all of it is header: taken off the socket, so that it is not seen again
                _recv(sock, len(data), socket.MSG_DONTWAIT)
                entry.header = header
                return
            rest = length - len(entry.header)
            if rest > 0 and len(_recv(sock, rest, socket.MSG_DONTWAIT)) != rest:  # (peeked: it is there)
                raise ValueError("the header could not be taken off the socket")
        except (ValueError, OSError):
            self._unpark(fd, entry)
            self._closed(entry.request, name, entry.where)
            return
        self._unpark(fd, entry)
        self._passed(entry.request, entry.index + 1, entry.where)

    def _unpark(self, fd: int, entry: _Parked[_ReqT, _WhereT]) -> None:
        del self._parked[fd]
        self._loop.unwatch(fd)
        if entry.lowat > 1:
            try:
                entry.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
            except OSError:
                pass

    def _expire(self, fd: int, number: int) -> None:
        entry = self._parked.get(fd)
        if entry is not None and entry.number == number:
            self._unpark(fd, entry)
            self._closed(entry.request, self._stages[entry.index].name, entry.where)

    # -- waiting for room ----------------------------------------------------------------

    @property
    def waiting(self) -> collections.deque[tuple[_ReqT, _WhereT]]:
        """The connections that passed every stage and wait for room, oldest first (the capacity check
        dispatches them)."""
        return self._ready

    def check_room_with(self, room: Callable[[], Sequence[int] | None]) -> None:
        """Leave what passed every stage to *room*, the loop's capacity check, which dispatches it."""
        self._room = room

    def settled(self) -> Callable[[], bool]:
        """For a run of the loop starting now: whether what it takes has left the loop's side.

        (``handle_request`` returns once that is so.)  The connections held
        already when the run starts may stay held.
        """
        parked, ready = self._parked, self._ready
        before = {id(entry): entry for entry in parked.values()}
        waiting = {id(request) for request, _ in ready}
        return lambda: all(before.get(id(entry)) is entry for entry in parked.values()) and all(
            id(request) in waiting for request, _ in ready
        )

    # -- what is held, and letting go of it ------------------------------------------------

    def held(self) -> set[int]:
        """The ids of the requests held here (a snapshot)."""
        return {id(entry.request) for entry in list(self._parked.values())} | {id(r) for r, _ in list(self._ready)}

    def close(self, request: _ReqT, reason: str) -> bool:
        """Close *request* if it is held here (matched by identity); whether it was."""
        try:
            fd = socket_of(request).fileno()
        except OSError:
            fd = -1
        entry = self._parked.get(fd)
        if entry is not None and entry.request is request:
            self._unpark(fd, entry)
            self._closed(request, reason, entry.where)
            return True
        for waiting in self._ready:
            if waiting[0] is request:
                self._ready.remove(waiting)
                self._closed(request, reason, waiting[1])
                return True
        return False

    def release_all(self, reason: str) -> None:
        """Close every connection held here (the loop has stopped for good)."""
        for fd, entry in list(self._parked.items()):
            self._unpark(fd, entry)
            self._closed(entry.request, reason, entry.where)
        while self._ready:
            request, where = self._ready.popleft()
            self._closed(request, reason, where)


def _room_always() -> Sequence[int] | None:
    return None


def room(
    workers: Callable[[], Sequence[int] | None] | None,
    limits: Limits[_ReqT, _WhereT] | None,
    parking: Parking[_ReqT, _WhereT] | None,
    dispatch: Callable[[_ReqT], None],
) -> Callable[[], Sequence[int] | None] | None:
    """The loop's capacity check, in one closure (``None``: there is always room).

    It is asked after every callback of the loop, so it is one call: the
    *workers*' own check -- while they have room, the connections that wait
    at the gate's exit (*parking*) are dispatched first, in turn -- and the
    admission limit (if it pauses; below it, a length and a comparison),
    which holds back the intake only: a connection past the gate was
    admitted already.
    """
    most = sys.maxsize
    live: Sized = ()
    full: Callable[[], Sequence[int] | None] = _room_always
    if limits is not None and limits.pauses and limits.max_connections is not None:
        most, live, full = limits.max_connections, limits.live, limits.full
    elif workers is None:
        return None
    elif parking is None:
        return workers
    ask = _room_always if workers is None else workers
    if parking is None:

        def check() -> Sequence[int] | None:
            if len(live) >= most and (waiting_for := full()) is not None:
                return waiting_for
            return ask()

        return check

    ready = parking.waiting

    def check_and_flush() -> Sequence[int] | None:
        # What waits at the gate's exit was admitted already (it counts
        # toward the limit): it goes as soon as the workers have room.  The
        # limit holds back only the intake.
        while True:
            waiting_for = ask()
            if waiting_for is not None:
                parking.room_known = False
                return waiting_for
            if not ready:
                break
            dispatch(ready.popleft()[0])
        parking.room_known = True
        if len(live) >= most and (waiting_for := full()) is not None:
            return waiting_for
        return None

    return check_and_flush
