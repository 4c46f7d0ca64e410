"""Admission limits on the route: how many requests a server holds at most, in all and per peer.

:class:`Limits` judges each request the route has taken and ``verify`` let
through (:meth:`~Limits.admit`) and tells the loop when the server is full
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

__all__ = ("Limits",)

_ReqT = TypeVar("_ReqT", bound=Request[object])
_WhereT = TypeVar("_WhereT")


def _peer_key(peer: object) -> object:
    """What the per-peer limit counts by: an IP peer's host, else the whole address."""
    return peer[0] if isinstance(peer, tuple) else peer


@final
class Limits(Generic[_ReqT, _WhereT]):
    """The admission limits of one server, over its books."""

    __slots__ = ("_books", "_most", "_peers", "_per_peer", "_report", "_room", "busy", "paused", "pauses")

    def __init__(
        self, admission: Admission, books: Books[_ReqT, _WhereT], report: Callable[[_ReqT, Exception], None]
    ) -> None:
        self._books = books
        self._report = report
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
        #: Whether the intake is paused at the limit (the route looks, at each end).
        self.paused = False

    def admit(self, request: _ReqT) -> str | None:
        """``None`` if *request* is within the limits (and now counted); else why it is refused.

        A request refused is first shown to the ``busy`` callback, if there
        is one, to tell its client (its exception is reported as a handler's).
        """
        per_peer = self._per_peer
        books = self._books
        reason = None
        if per_peer is not None:
            key = _peer_key(request.client_address)
            with books.lock:
                held = self._peers.get(key, 0)
                if held < per_peer:
                    self._peers[key] = held + 1
            if held >= per_peer:
                reason = "per_peer"
        most = self._most
        if reason is None and most is not None and len(books.live) >= most:
            if per_peer is not None:
                with books.lock:
                    self._left(request)
            reason = "max_connections"
        if reason is not None and self.busy is not None:
            sock = getattr(request, "socket", None)
            if isinstance(sock, socket.socket):
                try:
                    self.busy(sock, request.client_address)
                except Exception as exc:
                    self._report(request, exc)
        return reason

    def _left(self, request: _ReqT) -> None:
        """One request of *request*'s peer has ended (called with the books' lock held)."""
        key = _peer_key(request.client_address)
        held = self._peers.get(key, 0) - 1
        if held > 0:
            self._peers[key] = held
        else:
            self._peers.pop(key, None)

    @property
    def max_connections(self) -> int | None:
        return self._most

    @property
    def live(self) -> dict[int, tuple[_ReqT, float, _WhereT]]:
        """The live requests the limit counts (the books')."""
        return self._books.live

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
        self.paused = True
        if len(live) < most:  # (one ended before the flag was up)
            self.paused = False
            return None
        return room.fds

    def ended(self) -> None:
        """A request ended while :attr:`paused`: wake the intake (any thread)."""
        if self.paused:
            self.paused = False
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

