"""The route of one request of a composed server, in one place.

On the loop's thread (:meth:`Pipeline.take`, the intake source's callback):
take a request off the listener -> admit it (``verify``) -> dispatch it to
the workers.  In the worker (:meth:`Pipeline.run`, the workers' host):
handle it -> release it -> report what went wrong.  The pipeline is the
workers' host too: a worker in another process has it close what the child
must not hold, and discard the parent's copy.

``servekit.classic`` has a pipeline of its own, whose stages are the classic
template methods, on the same loop and workers (``servekit._classic``).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Final, Generic, TypeVar, final

from ..abc import Acceptor, Gate, Request, Workers
from ..events import Connection
from .loop import Loop

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


@final
class Pipeline(Generic[_ReqT]):
    """The route of one request: ``take`` on the loop's thread, ``run`` in the worker."""

    __slots__ = (
        "_accept",
        "_discard",
        "_dispatch",
        "_draining",
        "_failed",
        "_gate",
        "_gated_out",
        "_handler",
        "_idle",
        "_listener",
        "_live",
        "_lock",
        "_loop",
        "_name",
        "_parked",
        "_release",
        "_report",
        "_setup",
        "_stream",
        "_taken",
        "_tcp",
        "_verify",
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
        # Counted on the loop's thread only: requests taken (admitted), and
        # connections closed at the gate (their client left or was too slow).
        self._taken = 0
        self._gated_out = 0
        # While draining: set when no request is left.
        self._draining = False
        self._lock = threading.Lock()
        self._idle = threading.Event()
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
            self._loop.accept_failed(exc, "accept()", self._name, LOGGER)
            return False
        verify = self._verify
        if verify is not None:
            try:
                admitted = verify(request.client_address)
            except Exception as exc:
                self._report(request, exc)
                admitted = False
            if not admitted:
                self._release(request)
                return True
        self._live[id(request)] = (request, time.monotonic())
        self._taken += 1
        if self._gate is not None:
            self._park(request)
        else:
            self._dispatch(request)
        return True

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
            self._gated_out += 1
            self._end(request)
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
            self._gated_out += 1
            self._end(entry.request)  # type: ignore[arg-type]

    def _end(self, request: _ReqT) -> None:
        """Release a request that no worker got (closed at the gate)."""
        self._done(request)
        try:
            self._release(request)
        except Exception as exc:
            self._report(request, exc)

    def release_parked(self) -> None:
        """Close the connections held at the gate (the loop has stopped for good)."""
        for fd, entry in list(self._parked.items()):
            self._unpark(fd, entry)
            self._end(entry.request)  # type: ignore[arg-type]

    def _done(self, request: _ReqT) -> None:
        live = self._live
        live.pop(id(request), None)
        if self._draining and not live:
            self._idle.set()

    # -- draining -------------------------------------------------------------

    def start_draining(self) -> None:
        """From now on, :meth:`wait_idle` returns when the last request has ended."""
        with self._lock:
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

    def cut(self) -> tuple[list[Connection], int]:
        """Cut every request left (on the loop's thread, or with no loop running): shut their sockets.

        Returns the requests cut, and how many were handled to their end
        before: every request taken was closed at the gate, cut, or finished.
        """
        left = self.connections()
        finished = self._taken - self._gated_out - len(left)
        for fd, entry in list(self._parked.items()):
            self._unpark(fd, entry)
            self._end(entry.request)  # type: ignore[arg-type]
        for request, _ in list(self._live.values()):
            sock = getattr(request, "socket", None)
            if self._stream and isinstance(sock, socket.socket):
                try:
                    # Its handler's blocked read or write fails now; the
                    # worker releases it as usual.
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        return left, finished

    # -- in the worker (servekit.abc.WorkerHost) ----------------------------

    def run(self, request: _ReqT, /) -> None:
        """Set *request* up, handle it, release it, report a handler's or a release's ``Exception``."""
        setup = self._setup
        handled = request
        try:
            if setup is not None:
                handled = setup(request)  # deadlines, in the worker
            self._handler(handled)
        except Exception as exc:
            self._report(handled, exc)
        finally:
            try:
                self._release(handled)
            except Exception as exc:
                self._report(handled, exc)
            self._done(request)

    def discard(self, request: _ReqT, /) -> None:
        self._discard(request)
        self._done(request)

    def close_inherited(self) -> None:
        # Only stream listeners: a datagram's replies go out on the listener.
        if self._stream:
            self._listener.close()

    def worker_failed(self, exc: BaseException, /) -> None:
        self._failed(exc)


def _not_started(request: object) -> None:
    raise RuntimeError("the pipeline has no workers yet")
