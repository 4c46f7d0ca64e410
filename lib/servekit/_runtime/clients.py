"""Live connections closed on purpose: by hand (``close_clients``/``abort_clients``) or at a drain's deadline.

A connection with a worker has its socket shut down, so that its handler's
next read or write fails and the worker ends it through the route as usual
(with an abort, the release resets it: ``SO_LINGER`` 0).  One held on the
loop (at a gate, or waiting for room) is closed there, on the loop's thread.
A child's connection is not the parent's to close: it is left alone here,
and a drain stops the child instead.  The reason each is closed for is left
in the route's *closing* table, where its one ``end()`` finds it.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from functools import partial
from typing import Final, Generic, TypeVar, final

from ..abc import Request
from ..events import Connection
from .books import Books
from .children import Children
from .gate import Parking, socket_of
from .loop import Loop

__all__ = ("Clients",)

_ReqT = TypeVar("_ReqT", bound=Request[object])
_WhereT = TypeVar("_WhereT")

#: SO_LINGER on, for 0 seconds: close() resets the connection.
_LINGER_0: Final = struct.pack("ii", 1, 0)


@final
class Clients(Generic[_ReqT, _WhereT]):
    """The live connections of one server, as something to look at, close and cut."""

    __slots__ = ("_books", "_children", "_closing", "_loop", "_parking")

    def __init__(
        self,
        books: Books[_ReqT, _WhereT],
        parking: Parking[_ReqT, _WhereT] | None,
        children: Children[_ReqT] | None,
        loop: Loop,
        closing: dict[int, str],
    ) -> None:
        self._books = books
        self._parking = parking
        self._children = children
        self._loop = loop
        self._closing = closing

    def held(self) -> set[int]:
        """The ids of the requests held on the loop (parked)."""
        return set() if self._parking is None else self._parking.held()

    def connections(self) -> list[Connection[object]]:
        return self._books.connections(self.held())

    def close(
        self, where: Callable[[Connection[object]], bool] | None, abort: bool, reason: str = "closed", on_loop: bool = False
    ) -> list[Connection[object]]:
        """Close the live stream connections *where* selects (all: ``None``), from any thread; the ones closed."""
        now = time.monotonic()
        held = self.held()
        chosen: list[Connection[object]] = []
        on_the_loop: list[_ReqT] = []
        children = self._children
        for key, (request, since, _) in list(self._books.live.items()):
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
            if key not in self._books.live:  # ended meanwhile (a worker's end): nothing to close
                self._closing.pop(key, None)
                chosen.pop()
                continue
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
        parking = self._parking
        for request in requests:
            key = id(request)
            reason = self._closing.get(key, "closed")
            if parking is not None and parking.close(request, reason):
                continue
            if key in self._books.live:
                _shut(socket_of(request), reason == "aborted")
            else:  # ended meanwhile: its reason must not go to a later request with its id
                self._closing.pop(key, None)

    def cut(self) -> tuple[list[Connection[object]], int]:
        """Cut every request left (on the loop's thread, or with no loop running).

        Returns the requests cut, and how many were handled to their end
        before: every request taken was closed at the gate, cut, or finished.
        Children's requests are marked cut here; the lifecycle stops them.
        """
        left = self.connections()
        books = self._books
        finished = books.taken - books.gated_out - len(left)
        with books.lock:
            books.cut_total += len(left)
        children = self._children
        if children is not None:
            for key in list(books.live):
                if children.holds(key):
                    self._closing[key] = "cut"
        self.close(None, abort=False, reason="cut", on_loop=True)
        return left, finished


def _shut(sock: socket.socket, abort: bool) -> None:
    """Shut a running connection down: its handler's blocked read (or, without *abort*, write)
    fails now, and its worker ends it as usual.  An abort sends no FIN: the release's close
    resets it (SO_LINGER 0 is set already)."""
    try:
        sock.shutdown(socket.SHUT_RD if abort else socket.SHUT_RDWR)
    except OSError:
        pass
