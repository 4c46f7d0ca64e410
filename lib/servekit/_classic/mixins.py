"""The classic mix-ins: ``ThreadingMixIn`` and ``ForkingMixIn``, on servekit's workers."""

from __future__ import annotations

import abc
import gc
import io
import os
import socket
import threading
from collections.abc import Callable, Sequence
from types import (
    BuiltinFunctionType,
    ClassMethodDescriptorType,
    FunctionType,
    GetSetDescriptorType,
    MemberDescriptorType,
    MethodDescriptorType,
    WrapperDescriptorType,
)

from .._lite import TYPE_CHECKING
from .._runtime.workers import ChildWorkers
from .._socket_writer import SocketWriter
from .._validate import check_int
from . import route as _route
from .route import handshake

if TYPE_CHECKING:
    from typing import Any

    from .route import Item
    from .servers import BaseServer

__all__ = ("ForkingMixIn", "ThreadingMixIn")

# The mix-ins are only ever used in front of a BaseServer: to the type
# checker they derive from it (so ``self`` has the server's methods), at run
# time from object (so the MRO is the standard library's).
if TYPE_CHECKING:
    _MixInBase = BaseServer
else:
    _MixInBase = object


#: Room for a forked child in the collector's young generation.  A child
#: inherits the collector's count of young objects, and when the parent forks
#: with that count near the threshold, the child's first few allocations start
#: a collection, which writes to every young object and so copies each page
#: they sit on (about 65 page faults more per request: a fork-per-datagram
#: server, Python 3.12).  Whether a server's count rests there is decided by
#: its start-up, so a server pays it in every child or in none.  Past half the
#: threshold, ``ForkingMixIn.process_request`` collects the young generation
#: before the fork, a little earlier than the collector would have; nothing is
#: frozen, the thresholds stay.  Below this many young objects it does not look
#: at the threshold.
_FEW_YOUNG = 100


def _names_used(classes: Sequence[type]) -> set[str]:
    """The names the Python methods of *classes* and of their bases look up (their ``co_names``)."""
    names: set[str] = set()
    for cls in classes:
        for klass in cls.__mro__:
            for value in vars(klass).values():
                if type(value) is FunctionType:
                    names.update(value.__code__.co_names)
    return names


#: Metaclasses whose lookups on a class run no code of their own (io's classes are ABCs).
_PLAIN_METACLASSES = (type, abc.ABCMeta)

#: What a class attribute may be for a lookup on the class to run no code of
#: the program's: plain values, functions, and the interpreter's descriptors.
_INERT = frozenset(
    (
        FunctionType, staticmethod, classmethod, property, int, float, str, bytes, bool, type(None),
        BuiltinFunctionType, ClassMethodDescriptorType, GetSetDescriptorType, MemberDescriptorType,
        MethodDescriptorType, WrapperDescriptorType,
    )
)  # fmt: skip


def _warm(classes: Sequence[object]) -> None:
    """Look up, on each of *classes*, every name their methods use, so the type cache holds them.

    A forked child starts with the parent's type cache: a lookup the parent
    made finds its entry there; one the parent never made searches the
    class and its bases and writes the result in, which copies a page of the
    cache and one of each class searched, in every child, at every request.
    The parent never runs the handler or the child's stages, so it looks
    their names up once, here.  Only where nothing of the program's can run:
    a class of the ordinary metaclass (or ``ABCMeta``), each name either
    absent or found as a plain value, a function or one of the interpreter's
    own descriptors.
    """
    plain = [cls for cls in classes if isinstance(cls, type) and type(cls) in _PLAIN_METACLASSES]
    names = _names_used(plain)
    for cls in plain:
        for name in names:
            for klass in cls.__mro__:
                if name in vars(klass):
                    inert = type(vars(klass)[name]) in _INERT
                    break
            else:
                inert = True  # (absent: the lookup finds nothing, and caches that)
            if inert:
                hasattr(cls, name)


#: The classes of what a child's handler reads and writes through.
_CHILD_CLASSES = (SocketWriter, socket.socket, socket.SocketIO, io.BufferedReader, io.BufferedWriter, io.BytesIO)


# -- mix-ins ------------------------------------------------------------------


class ThreadingMixIn(_MixInBase):
    """Handle each request in a new thread (servekit's ``threaded()`` dispatcher)."""

    daemon_threads = False
    block_on_close = True

    @property
    def _threads(self) -> list[threading.Thread]:
        """The request threads running now (a snapshot)."""
        workers = self._servekit.threads
        return [] if workers is None else workers.running()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Handle the request in the new thread; errors go to ``handle_error``.

        A TLS request's handshake is done here first (see ``get_request``).
        """
        try:
            if _route.deferred:
                handshake(self, request)
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start a thread for the request."""
        route = self._servekit
        daemon = bool(self.daemon_threads)
        block = bool(self.block_on_close)
        workers = route.threads
        if workers is None:
            workers = route.thread_workers(daemon, block)
        else:
            workers.daemon = daemon
            workers.block_on_close = block
        workers.dispatch((request, client_address))

    def server_close(self) -> None:
        """Close the server, then wait for request threads as ``block_on_close`` says."""
        super().server_close()
        workers = self._servekit.threads
        if workers is not None:
            workers.block_on_close = bool(self.block_on_close)
            workers.close()


if hasattr(os, "fork"):

    class ForkingMixIn(_MixInBase):
        """Handle each request in a new process (servekit's ``forked()`` dispatcher)."""

        timeout: float | None = 300
        active_children: set[int] | None = None
        max_children = 40
        block_on_close = True

        def collect_children(self, *, blocking: bool = False) -> None:
            """Reap the children that have exited; with *blocking*, wait for all of them."""
            children = self._servekit.children
            if children is not None:
                children.reap(block=blocking)

        def handle_timeout(self) -> None:
            """Reap children after ``timeout`` seconds without a request."""
            self.collect_children()

        def service_actions(self) -> None:
            """Reap children at every wake-up of the serve loop."""
            self.collect_children()

        def process_request(self, request: Any, client_address: Any) -> None:
            """Fork a child that handles the request; the parent closes its copy."""
            # The core's child workers fork, track, limit and reap; the child
            # runs on here, in socketserver's order, and leaves with os._exit
            # (never returns).  Every Python call made here per request is a
            # page or two the parent writes while a child shares them (a copy
            # each), and the child's calls are pages it copies: the
            # configuration is only looked at again when max_children
            # changed, and the child calls nothing socketserver's does not
            # (a route's run and discard instead cost 1-2.5 % more CPU a
            # datagram: python -m bench.forkcost --kind udp-bare).
            children = self._servekit.children
            if children is None or children.max_children != self.max_children:
                children = self._servekit_children()
            # Room for the child in the young generation (see _FEW_YOUNG;
            # inline: a call here would be a call per request).
            young = gc.get_count()[0]
            if young > _FEW_YOUNG and young * 2 > gc.get_threshold()[0] > 0 and gc.isenabled():
                gc.collect(0)
            if children.fork():
                status = 1
                try:
                    if _route.deferred:
                        handshake(self, request)  # a TLS request's, left to the child by accept()
                    self.finish_request(request, client_address)
                    status = 0
                except Exception:
                    self.handle_error(request, client_address)
                finally:
                    try:
                        self.shutdown_request(request)
                    finally:
                        # What ChildWorkers.exit() does for workers that flush
                        # nothing, without a call into it.
                        os._exit(status)
            self.close_request(request)
            active = self.active_children
            if active is not children.pids:
                # The classic attribute is the workers' own live set of pids;
                # a set the program put there itself is adopted.
                if active is None:
                    self.active_children = children.pids
                else:
                    active |= children.pids
                    children.pids = active

        def _servekit_children(self) -> ChildWorkers[Item]:
            """The server's child workers, configured from the class attributes now."""
            route = self._servekit
            limit: int = self.max_children
            block = bool(self.block_on_close)
            children = route.children
            if children is None:
                check_int("max_children", limit, 1)
                # Once, with the workers: the type cache given what the
                # children look up (see _warm), so that no child writes it.
                _warm((type(self), self.RequestHandlerClass, *_CHILD_CLASSES))
                # socketserver's children neither flush stdio nor freeze the
                # collector, and each costs page copies in every child; nor
                # does it report their ends or close what they inherit (they
                # keep the listening socket: a datagram child replies on it).
                # No host: the child runs on in process_request.
                children = route.children = ChildWorkers(
                    None,
                    limit,
                    block,
                    flush_stdio=False,
                    freeze_gc=False,
                    report_exits=False,
                    close_inherited=False,
                )
            else:
                if limit != children.max_children:
                    check_int("max_children", limit, 1)
                    children.max_children = limit
                children.block_on_close = block
            return children

        def _servekit_capacity(self) -> Callable[[], Sequence[int] | None] | None:
            # At max_children the loop waits for a child to exit instead of
            # accepting (and instead of blocking in waitpid(-1)).
            return self._servekit_children().capacity

        def server_close(self) -> None:
            """Close the server, then reap children (waiting, if ``block_on_close``)."""
            super().server_close()
            self.collect_children(blocking=bool(self.block_on_close))
