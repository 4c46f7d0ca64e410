"""Admission on the route: ``verify``, and how many requests a server holds at most, in all and per peer.

:func:`judge` says whether a request the route has taken is admitted, and
if not, why; :class:`Limits` counts what the limits need
(:meth:`~Limits.admit`) and tells the loop when the server is full
(:meth:`~Limits.full`): with no
``busy`` callback, a server holding ``max_connections`` stops taking
requests until one ends, and the loop waits on an fd that the end of a
request makes readable.  Per-peer counts are kept with the books' lock (a
request ends on whatever thread ran it).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar, final

from ..abc import Request
from .books import Books
from .pool import _Signal
from .wiring import Admission

__all__ = ("Limits", "judge")

_ReqT = TypeVar("_ReqT", bound=Request[object])
_WhereT = TypeVar("_WhereT")


def judge(
    request: _ReqT,
    verify: Callable[[object], bool] | None,
    limits: Limits[_ReqT, _WhereT] | None,
    report: Callable[[_ReqT, Exception], None],
) -> str | None:
    """``None`` if *request* is admitted; else why not (``"verify"``, ``"per_peer"``, ``"max_connections"``).

    A ``verify`` that raises refuses (its exception is *report*-ed).  A
    request over a limit is first shown to the limits' ``busy`` callback, if
    there is one, to tell its client.
    """
    if verify is not None:
        try:
            if not verify(request.client_address):
                return "verify"
        except Exception as exc:
            report(request, exc)
            return "verify"
    if limits is None:
        return None
    reason = limits.admit(request)
    busy = limits.busy
    if reason is not None and busy is not None:
        sock = getattr(request, "socket", None)
        if isinstance(sock, socket.socket):
            try:
                busy(sock, request.client_address)
            except Exception as exc:
                report(request, exc)
    return reason


def _peer_key(peer: object) -> object:
    """What the per-peer limit counts by: an IP peer's host, else the whole address."""
    return peer[0] if isinstance(peer, tuple) else peer


@final
class Limits(Generic[_ReqT, _WhereT]):
    """The admission limits of one server, over its books."""

    __slots__ = ("_books", "_most", "_paused", "_peers", "_per_peer", "_room", "busy", "pauses")

    def __init__(self, admission: Admission, books: Books[_ReqT, _WhereT]) -> None:
        self._books = books
        self._most = admission.max_connections
        self._per_peer = admission.per_peer
        #: Called with a refused request's socket and peer before it is closed.
        self.busy: Callable[[socket.socket, object], object] | None = admission.busy
        #: Whether the server pauses at ``max_connections`` (else it refuses, with ``busy``).
        self.pauses = self._most is not None and self.busy is None
        self._peers: dict[object, int] = {}
        if self._per_peer is not None:
            books.peer_left = self._left
        # Made readable when a request ends while the intake is paused; made
        # the first time it pauses (a server that never fills holds no fd).
        self._room: _Signal | None = None
        self._paused = False

    def admit(self, request: _ReqT) -> str | None:
        """``None`` if *request* is within the limits (and now counted); else why it is refused."""
        per_peer = self._per_peer
        books = self._books
        if per_peer is not None:
            key = _peer_key(request.client_address)
            with books.lock:
                held = self._peers.get(key, 0)
                if held < per_peer:
                    self._peers[key] = held + 1
            if held >= per_peer:
                return "per_peer"
        most = self._most
        if most is not None and len(books.live) >= most:
            if per_peer is not None:
                with books.lock:
                    self._left(request)
            return "max_connections"
        return None

    def _left(self, request: _ReqT) -> None:
        """One request of *request*'s peer has ended (called with the books' lock held)."""
        key = _peer_key(request.client_address)
        held = self._peers.get(key, 0) - 1
        if held > 0:
            self._peers[key] = held
        else:
            self._peers.pop(key, None)

    def full(self) -> Sequence[int] | None:
        """``None`` while there is room; else the fds to wait on until a request ends (on the loop's thread)."""
        most = self._most
        live = self._books.live
        if not self.pauses or most is None or len(live) < most:
            return None
        room = self._room
        if room is None:
            try:
                room = self._room = _Signal()
            except OSError:  # no fd free: the loop asks again shortly
                return []
        # Paused: a request that ends from now on sets the signal.
        room.clear()
        self._paused = True
        if len(live) < most:  # (one ended before the flag was up)
            self._paused = False
            return None
        return room.fds

    def room(self, workers: Callable[[], Sequence[int] | None] | None) -> Callable[[], Sequence[int] | None] | None:
        """The loop's capacity check: this limit's (if it pauses), then the *workers*' (``None``: none)."""
        if not self.pauses:
            return workers
        full = self.full
        if workers is None:
            return full

        def room() -> Sequence[int] | None:
            waiting_for = full()
            return workers() if waiting_for is None else waiting_for

        return room

    def ended(self) -> None:
        """A request ended: wake a paused intake (any thread)."""
        if self._paused:
            self._paused = False
            room = self._room
            if room is not None:
                try:
                    room.set()
                except OSError:  # closed meanwhile: the server is closed
                    pass

    def close(self) -> None:
        """Close the fd of the limits, if one was made."""
        room, self._room = self._room, None
        if room is not None:
            room.close()
