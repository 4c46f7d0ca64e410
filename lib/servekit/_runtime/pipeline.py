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
from collections.abc import Callable
from typing import Final, Generic, TypeVar, final

from ..abc import Acceptor, Request, Workers
from .loop import Loop

__all__ = ("Pipeline",)

_ReqT = TypeVar("_ReqT", bound=Request[object])

#: The logger accept() failures are reported on.
LOGGER: Final = "servekit.server"


@final
class Pipeline(Generic[_ReqT]):
    """The route of one request: ``take`` on the loop's thread, ``run`` in the worker."""

    __slots__ = (
        "_accept",
        "_discard",
        "_dispatch",
        "_failed",
        "_handler",
        "_listener",
        "_loop",
        "_name",
        "_release",
        "_report",
        "_stream",
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
    ) -> None:
        self._listener = listener
        self._name = name
        self._stream = listener.type == socket.SOCK_STREAM
        # Hot-path callables, looked up once.
        self._accept = acceptor.accept
        self._release = acceptor.release
        self._discard = acceptor.discard
        self._handler = handler
        self._verify = verify
        self._report = report
        self._loop = loop
        self._failed = failed
        self._dispatch: Callable[[_ReqT], None] = _not_started

    def start(self, workers: Workers[_ReqT]) -> None:
        """Dispatch to *workers* from now on."""
        self._dispatch = workers.dispatch

    # -- on the loop's thread -----------------------------------------------

    def take(self) -> None:
        """Take one request off the ready listener, admit it, dispatch it."""
        try:
            request = self._accept(self._listener)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._loop.accept_failed(exc, "accept()", self._name, LOGGER)
            return
        verify = self._verify
        if verify is not None:
            try:
                admitted = verify(request.client_address)
            except Exception as exc:
                self._report(request, exc)
                admitted = False
            if not admitted:
                self._release(request)
                return
        self._dispatch(request)

    # -- in the worker (servekit.abc.WorkerHost) ----------------------------

    def run(self, request: _ReqT, /) -> None:
        """Handle *request*, release it, report a handler's or a release's ``Exception``."""
        try:
            self._handler(request)
        except Exception as exc:
            self._report(request, exc)
        finally:
            try:
                self._release(request)
            except Exception as exc:
                self._report(request, exc)

    def discard(self, request: _ReqT, /) -> None:
        self._discard(request)

    def close_inherited(self) -> None:
        # Only stream listeners: a datagram's replies go out on the listener.
        if self._stream:
            self._listener.close()

    def worker_failed(self, exc: BaseException, /) -> None:
        self._failed(exc)


def _not_started(request: object) -> None:
    raise RuntimeError("the pipeline has no workers yet")
