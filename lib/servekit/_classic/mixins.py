"""The classic mix-ins: ``ThreadingMixIn`` and ``ForkingMixIn``, on servekit's workers."""

from __future__ import annotations

import abc
import gc
import io
import os
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from types import (
    BuiltinFunctionType,
    ClassMethodDescriptorType,
    FunctionType,
    GetSetDescriptorType,
    MemberDescriptorType,
    MethodDescriptorType,
    ModuleType,
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


def _warm(classes: Iterable[object], also: Iterable[str] = ()) -> None:
    """Look up on each of *classes* the names a forked child will look up on it, so the type cache holds them.

    A forked child starts with the parent's type cache: a lookup the parent
    made finds its entry there; one the parent never made searches the
    class and its bases and writes the result in, which copies a page of the
    cache and one of each class searched, in every child, at every request.
    The parent never runs the handler or the child's stages, nor threading's
    clean-up after a fork, so it looks their names up once, here: on each
    class, the names its own methods (and its bases') use, found or not (an
    instance attribute is looked up on the class first, and a miss is cached
    too), and the names the other classes' methods -- or *also* -- use that
    the class has (a handler's ``sock.sendto``).  Not every name on every
    class: the cache is direct-mapped (4,096 entries), and needless entries
    push needed ones out.  Only where nothing of the program's can run: a
    class of the ordinary metaclass (or ``ABCMeta``), each name either absent
    or found as a plain value, a function or one of the interpreter's own
    descriptors.
    """
    # (type() first: isinstance() would ask an object of the program's for its __class__)
    plain = [cls for cls in classes if type(cls) in _PLAIN_METACLASSES and isinstance(cls, type)]
    own = {cls: _names_used((cls,)) for cls in plain}
    names = set(also).union(_IMPLICIT, *own.values())
    for cls in plain:
        mine = own[cls]
        for name in names:
            for klass in cls.__mro__:
                if name in vars(klass):
                    inert = type(vars(klass)[name]) in _INERT
                    break
            else:
                inert = name in mine  # (absent: the lookup finds nothing, and caches that)
            if inert:
                hasattr(cls, name)


#: Names a ``with`` or a ``for`` looks up that no code object lists.
_IMPLICIT = ("__enter__", "__exit__", "__iter__", "__next__")

#: What :func:`_after_fork` looks past: classes, modules, functions, plain values.
_NOT_HOLDERS = (type, ModuleType, FunctionType, BuiltinFunctionType, int, float, str, bytes, tuple, type(None))


def _after_fork() -> tuple[list[type], tuple[str, ...]]:
    """What threading's clean-up in a forked child looks up: the classes, and the names its own code uses.

    ``threading`` has every child run a function right after the fork that
    rebuilds its locks and books (about twenty lookups the parent never
    makes: on its threads and the events and locks they hold, on its dicts,
    sets and weak sets, and the classes their methods use).  The classes are
    found from the objects: threading's own and the live threads', two
    levels down, and the classes their methods name (a weak set's iteration
    guard).  Nothing of the program's runs: a live thread of its own is
    looked into only as :func:`_warm` looks at classes.
    """
    found: dict[type, None] = {}
    objects: list[object] = [value for name, value in vars(threading).items() if not name.startswith("__")]
    objects += threading.enumerate()
    for _ in range(3):
        inner: list[object] = []
        for obj in objects:
            cls = type(obj)  # (isinstance() would ask the object for its __class__)
            if issubclass(cls, _NOT_HOLDERS) or cls in found:
                continue
            found[cls] = None
            # Into an object's namespace only where reading it runs nothing
            # of the program's (no __getattribute__ of its own; a dict, so no
            # __getattr__ either; an ordinary metaclass).
            if type(cls) is type and cls.__dictoffset__ and cls.__getattribute__ is object.__getattribute__:
                inner.extend(vars(obj).values())
        objects = inner
    for cls in [cls for cls in found if type(cls) in _PLAIN_METACLASSES]:
        for klass in cls.__mro__:
            for value in vars(klass).values():
                if type(value) is FunctionType:
                    for name in value.__code__.co_names:
                        named = value.__globals__.get(name)
                        if type(named) in _PLAIN_METACLASSES and isinstance(named, type):
                            found[named] = None
    hook = vars(threading).get("_after_fork")
    return list(found), (hook.__code__.co_names if type(hook) is FunctionType else ())


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
            # changed, and the child calls nothing socketserver's does not (a
            # call into a route instead cost up to 2.5 % more CPU a datagram,
            # Python 3.12: python -m bench.forkcost --kind udp-bare).
            children = self._servekit.children
            if children is None or children.max_children != self.max_children:
                children = self._servekit_children()
            # Room for the child in the young generation (see _FEW_YOUNG;
            # inline: a call here would be a call per request).
            young = gc.get_count()[0]
            if young > _FEW_YOUNG and young * 2 > gc.get_threshold()[0] > 0 and gc.isenabled():
                gc.collect(0)
            # Read in the parent, where the lookup is made at every request:
            # the child's own would be its first, and write to the type cache.
            deferred = _route.deferred
            if children.fork():
                status = 1
                try:
                    if deferred:
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
                forking, names = _after_fork()
                _warm((*forking, type(self), self.RequestHandlerClass, *_CHILD_CLASSES), names)
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
