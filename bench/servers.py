"""The servers the benchmark compares: one registry, one entry per server.

Adding a server is adding one :class:`Entry` to :data:`ENTRIES`: a name, the
workloads it can take, a *build* function that binds it (in the server
process, see ``bench/serve.py``) and returns a :class:`Serving`, and, for
ratios, the name of its standard-library twin per protocol.

Every server answers the same way: a stream server echoes each
newline-terminated line back on the same connection until the client closes
it; a datagram server sends each datagram back to its sender.  In the
``blocking`` workload (and only there) the servers that take it block for a
given time in the handler before each echo (``time.sleep``: a database
call's wait), to compare ways of running blocking handlers.  The handlers
are written the way a user of each library would write them (``rfile`` /
``wfile`` for the socketserver family and servekit, streams for asyncio), so
what is measured is what a user gets.

This module is imported by the harness (to list entries) and by the server
process (to build one); it imports no server library at module level, so the
harness never loads what it does not measure.

A few entries are not built in a ``bench/serve.py`` process but are a command
line the harness starts as it is (:attr:`Entry.command`): ``python -m
servekit MODULE:HANDLER --bind tcp://HOST:0 --workers N``, servekit's
command-line runner and its pre-forked workers, measured as a whole process
tree and stopped with SIGTERM, as a service manager stops them.
"""

from __future__ import annotations

import importlib
import socket
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

__all__ = (
    "ENTRIES",
    "Command",
    "Entry",
    "Proto",
    "Serving",
    "Workload",
    "WORKLOADS",
    "by_name",
    "load_mode",
    "proto_of",
)

Workload = Literal["conn", "keepalive", "idle", "udp", "blocking"]
Proto = Literal["tcp", "udp"]
Address = tuple[str, int]

#: In the order the harness runs and prints them.
WORKLOADS: Final[tuple[Workload, ...]] = ("conn", "keepalive", "idle", "udp", "blocking")

#: Servers that run one request at a time (inline) cannot hold a second
#: connection open; forking servers stop at ``max_children`` (40) children,
#: far fewer than the idle workload's connections.  Both get only these.
_ONE_AT_A_TIME: Final[tuple[Workload, ...]] = ("conn",)
_BOUNDED: Final[tuple[Workload, ...]] = ("conn", "keepalive")
_UNBOUNDED: Final[tuple[Workload, ...]] = ("conn", "keepalive", "idle")


def proto_of(workload: Workload) -> Proto:
    return "udp" if workload == "udp" else "tcp"


def load_mode(workload: Workload) -> str:
    """The load generator's mode for *workload*: ``blocking`` is keep-alive
    traffic (only the server's handler differs)."""
    return "keepalive" if workload == "blocking" else workload


class Serving(Protocol):
    """A bound server, as the server process drives it.

    ``serve`` runs in the main thread until ``stop`` (called from another
    thread) makes it return; ``close`` then releases everything.
    """

    @property
    def address(self) -> Address: ...

    def serve(self) -> None: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


#: (protocol, host, poll interval, work seconds) -> a bound server.  The poll
#: interval is the library default (0.5 s) except in smoke runs.  The work is
#: how long the handler blocks before each echo: 0 except in the ``blocking``
#: workload, which only the entries that list it get.
Build = Callable[[Proto, str, float, float], Serving]

#: host -> the argv of a server that is a command line (``python -m servekit ...``):
#: the harness starts it as it is, reads the port it listens on from its log
#: (``listening on HOST:PORT``), and stops it with SIGTERM, after which the
#: whole process tree must be gone and the exit status 0.
Command = Callable[[str], list[str]]


@dataclass(frozen=True)
class Entry:
    name: str
    #: ceiling, servekit, classic, stdlib, asyncio or peer: how it is grouped
    #: and coloured, and whose ratios are headlines.
    group: str
    workloads: tuple[Workload, ...]
    #: ``None`` for the ceiling server, which is the C program itself, and for
    #: the entries that are a command line (``command``).
    build: Build | None
    #: protocol -> the entry this one is compared with in the ratios.
    twin: Mapping[Proto, str] = field(default_factory=dict)
    #: Other entries it is also compared with (shown, never judged), in every
    #: workload both take; they run whenever this one does, like the twin.
    compare_with: tuple[str, ...] = ()
    #: Modules that must import, else the entry is skipped (and said so).
    requires: tuple[str, ...] = ()
    #: Requests are handled in child processes: memory is the process tree's.
    forks: bool = False
    #: The ratio this entry is judged against, if any (``None``: shown only).
    target: float | None = None
    #: The most connections it serves at once (a pool's workers, a forking
    #: server's children), ``None``: no such bound.  Its keepalive and idle
    #: cells that need more are skipped (and said so): the connections past
    #: the bound would only wait and time out.  The ``blocking`` workload runs
    #: anyway -- serving past a pool's size is what that comparison is about.
    capacity: int | None = None
    #: A server that is a command line, started as it is instead of in a
    #: ``bench/serve.py`` process (``build`` is then ``None``).
    command: Command | None = None
    #: ``False``: never pinned to a core (``--no-pin`` for this entry alone):
    #: the scheduler places its processes and the generator on all the CPUs.
    #: Pre-forked workers are there to use more than one core.
    pinned: bool = True
    #: The ratio over ``compare_with[0]`` this entry is judged against, if any
    #: (the other entries it is compared with are shown only).
    compare_target: float | None = None


# --------------------------------------------------------------------------
# socketserver and servekit.classic: the same code over either module.
# --------------------------------------------------------------------------


class _HasFiles(Protocol):
    rfile: Any
    wfile: Any


class _HasRequest(Protocol):
    request: tuple[bytes, socket.socket]
    client_address: Address


def _stream_echo(self: _HasFiles) -> None:
    for line in self.rfile:
        self.wfile.write(line)


def _datagram_echo(self: _HasRequest) -> None:
    data, sock = self.request
    sock.sendto(data, self.client_address)


class _SocketServerServing:
    """A ``socketserver.BaseServer`` (or servekit.classic twin) as a Serving."""

    def __init__(self, server: Any, poll_interval: float) -> None:
        self._server = server
        self._poll = poll_interval

    @property
    def address(self) -> Address:
        host, port = self._server.server_address[:2]
        return (str(host), int(port))

    def serve(self) -> None:
        self._server.serve_forever(poll_interval=self._poll)

    def stop(self) -> None:
        self._server.shutdown()

    def close(self) -> None:
        self._server.server_close()


def socketserver_build(module: str, cls: str) -> Build:
    """A server class of ``socketserver`` or of a drop-in for it, by name."""

    def build(proto: Proto, host: str, poll_interval: float, work_s: float) -> Serving:
        del work_s  # (takes no blocking workload)
        mod = importlib.import_module(module)
        if proto == "tcp":
            handler = type("Echo", (mod.StreamRequestHandler,), {"handle": _stream_echo})
        else:
            handler = type("Echo", (mod.BaseRequestHandler,), {"handle": _datagram_echo})
        return _SocketServerServing(getattr(mod, cls)((host, 0), handler), poll_interval)

    return build


# --------------------------------------------------------------------------
# servekit
# --------------------------------------------------------------------------


class _BoundServing:
    def __init__(self, bound: Any, poll_interval: float) -> None:
        self._bound = bound
        self._poll = poll_interval

    @property
    def address(self) -> Address:
        host, port = self._bound.address[:2]
        return (str(host), int(port))

    def serve(self) -> None:
        self._bound.serve_forever(poll_interval=self._poll)

    def stop(self) -> None:
        self._bound.shutdown()

    def close(self) -> None:
        self._bound.close()


def servekit_build(dispatcher: str, **options: int) -> Build:
    """servekit's composed API with the named dispatcher factory (``threaded``...) and its *options*."""

    def build(proto: Proto, host: str, poll_interval: float, work_s: float) -> Serving:
        import servekit

        def echo(conn: servekit.StreamConnection) -> None:
            for line in conn.rfile:
                conn.wfile.write(line)

        def work(conn: servekit.StreamConnection) -> None:
            for line in conn.rfile:
                time.sleep(work_s)  # stands for a blocking call: a database query
                conn.wfile.write(line)

        def pong(dg: servekit.Datagram) -> None:
            dg.reply(dg.data)

        factory: Callable[..., servekit.Dispatcher] = getattr(servekit, dispatcher)
        if proto == "tcp":
            handler = work if work_s else echo
            bound: object = servekit.server(servekit.tcp(host, 0), handler, dispatcher=factory(**options)).bind()
        else:
            bound = servekit.server(servekit.udp(host, 0), pong, dispatcher=factory(**options)).bind()
        return _BoundServing(bound, poll_interval)

    return build


def production_build(proto: Proto, host: str, poll_interval: float, work_s: float) -> Serving:
    """The composition of examples/production_server.py: a pool, a first-line gate, a request
    deadline, a connection limit, and an event sink counting every lifecycle event."""
    import collections

    del work_s  # (takes no blocking workload)

    import servekit

    def echo(conn: servekit.StreamConnection) -> None:
        for line in conn.rfile:
            conn.wfile.write(line)

    seen: collections.Counter[str] = collections.Counter()

    def on_event(event: servekit.Event) -> None:
        seen.update((type(event).__name__,))

    spec = servekit.server(
        servekit.tcp(host, 0),
        echo,
        dispatcher=servekit.pooled(workers=32, queue=128, block_on_close=False),
        gate=servekit.first_line(timeout=5.0),
        deadlines=servekit.Deadlines(request=5.0),
        admission=servekit.Admission(max_connections=10_000),
        on_event=on_event,
    )
    return _BoundServing(spec.bind(), poll_interval)


def reactor_build(offload: int = 0) -> Build:
    """servekit's reactor, as examples/evented_echo.py serves: ``lines(echo)`` for
    stream connections, ``datagrams(echo)`` for UDP; with *offload* the echo
    runs on a pool of that many threads (one message of a connection at a time)."""

    def build(proto: Proto, host: str, poll_interval: float, work_s: float) -> Serving:
        import servekit
        from servekit.framing import datagrams, lines

        def echo(message: bytes) -> bytes:
            return message

        def work(message: bytes) -> bytes:
            time.sleep(work_s)  # stands for a blocking call: a database query
            return message

        answer = work if work_s else echo
        if proto == "tcp":
            bound: object = servekit.server(servekit.tcp(host, 0), lines(answer, offload=offload)).bind()
        else:
            bound = servekit.server(servekit.udp(host, 0), datagrams(answer, offload=offload)).bind()
        return _BoundServing(bound, poll_interval)

    return build


# --------------------------------------------------------------------------
# servekit's command-line runner: python -m servekit MODULE:HANDLER --workers N
# --------------------------------------------------------------------------

#: What the command-line entries serve: ``lines(echo)`` on servekit's reactor
#: (bench/serve.py builds it on first use), one thread per process.
CLI_HANDLER: Final = "bench.serve:lines_echo"
CLI_BLOCKING_HANDLER: Final = "bench.serve:stream_echo"


def cli_command(
    workers: int, *, supervised: bool = False, handler: str = CLI_HANDLER, extra: tuple[str, ...] = ()
) -> Command:
    """``python -m servekit HANDLER --bind tcp://HOST:0 --workers N [EXTRA...]``.

    With *supervised*, ``python -m bench.serve --supervised`` and the same
    arguments: servekit's own command line, except that one worker too is
    served by the pre-fork supervisor (a parent and one forked worker), where
    ``python -m servekit --workers 1`` serves in its own process.
    """

    def command(host: str) -> list[str]:
        program = ["bench.serve", "--supervised"] if supervised else ["servekit"]
        return [sys.executable, "-m", *program, handler, "--bind", f"tcp://{host}:0", "--workers", str(workers), *extra]

    return command


# --------------------------------------------------------------------------
# asyncio (and uvloop, which is asyncio with another loop): in bench/_aio.py,
# imported only by the processes that serve with it (asyncio is a slow import).
# --------------------------------------------------------------------------


def asyncio_build(loop_module: str | None = None) -> Build:
    """asyncio streams (``start_server``) and datagram endpoints, on the default
    loop or on ``<loop_module>.new_event_loop()`` (uvloop)."""

    def build(proto: Proto, host: str, poll_interval: float, work_s: float) -> Serving:
        del work_s  # (takes no blocking workload)
        from bench import _aio

        return _aio.serving(proto, host, loop_module)

    return build


# --------------------------------------------------------------------------
# gevent (not monkey-patched: its own servers and cooperative sockets)
# --------------------------------------------------------------------------


class _GeventServing:
    def __init__(self, proto: Proto, host: str) -> None:
        gevent = importlib.import_module("gevent")
        gserver = importlib.import_module("gevent.server")
        self._spawn: Callable[[Callable[[], object]], object] = gevent.spawn
        # stop() comes from another OS thread: only the hub's thread-safe
        # callback may cross into the hub.
        self._hub: Any = gevent.get_hub()
        if proto == "tcp":

            def echo(sock: Any, address: object) -> None:
                del address
                with sock.makefile("rb") as rfile:
                    for line in rfile:
                        sock.sendall(line)

            self._server: Any = gserver.StreamServer((host, 0), echo)
        else:

            def pong(data: bytes, address: Address) -> None:
                self._server.sendto(data, address)

            self._server = gserver.DatagramServer((host, 0), pong)
        self._server.start()
        host_, port = self._server.address[:2]
        self._address: Address = (str(host_), int(port))

    @property
    def address(self) -> Address:
        return self._address

    def serve(self) -> None:
        self._server.serve_forever()

    def stop(self) -> None:
        self._hub.loop.run_callback_threadsafe(lambda: self._spawn(self._server.stop))

    def close(self) -> None:
        self._server.close()


def gevent_build(proto: Proto, host: str, poll_interval: float, work_s: float) -> Serving:
    del poll_interval, work_s
    return _GeventServing(proto, host)


# --------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------

_THREADING_TWIN: Final[Mapping[Proto, str]] = {
    "tcp": "stdlib.ThreadingTCPServer",
    "udp": "stdlib.ThreadingUDPServer",
}
_INLINE_TWIN: Final[Mapping[Proto, str]] = {"tcp": "stdlib.TCPServer", "udp": "stdlib.UDPServer"}
_FORKING_TWIN: Final[Mapping[Proto, str]] = {
    "tcp": "stdlib.ForkingTCPServer",
    "udp": "stdlib.ForkingUDPServer",
}
#: The reactor answers datagrams on its serving thread, as UDPServer does;
#: its stream connections are many at once, as ThreadingTCPServer's are.
_REACTOR_TWIN: Final[Mapping[Proto, str]] = {"tcp": "stdlib.ThreadingTCPServer", "udp": "stdlib.UDPServer"}
#: The event loops the reactor is measured against.
_EVENT_LOOPS: Final[tuple[str, ...]] = ("asyncio", "uvloop")
#: The command-line entries are about new connections and the per-line path
#: of live ones (the reactor's idle and UDP figures are servekit.reactor's).
_CLI_WORKLOADS: Final[tuple[Workload, ...]] = ("conn", "keepalive")
#: What the command-line entries import (the supervisor: only pre-fork loads it).
_CLI_REQUIRES: Final[tuple[str, ...]] = ("servekit", "servekit.framing", "servekit._cli", "servekit._supervisor")

#: (class name, workloads, forks) of the socketserver classes measured; the
#: stdlib entries and their servekit.classic twins are both made from it.
_SOCKETSERVER_CLASSES: Final[tuple[tuple[str, tuple[Workload, ...], bool], ...]] = (
    ("TCPServer", _ONE_AT_A_TIME, False),
    ("ThreadingTCPServer", _UNBOUNDED, False),
    ("ForkingTCPServer", _BOUNDED, True),
    ("UDPServer", ("udp",), False),
    ("ThreadingUDPServer", ("udp",), False),
    ("ForkingUDPServer", ("udp",), True),
)

ENTRIES: Final[tuple[Entry, ...]] = (
    # The generator's own trivial echo server (C, epoll; asyncio for the Python
    # fallback): what the generator reaches against it is its ceiling.
    Entry("ceiling", "ceiling", (*_UNBOUNDED, "udp"), None),
    Entry("servekit.inline", "servekit", (*_ONE_AT_A_TIME, "udp"), servekit_build("inline"),
          twin=_INLINE_TWIN, requires=("servekit",)),
    Entry("servekit.threaded", "servekit", (*_UNBOUNDED, "udp"), servekit_build("threaded"),
          twin=_THREADING_TWIN, requires=("servekit",), target=1.0),
    # A pool serves at most its workers' connections at once (each handler
    # holds its connection): 32 workers take keepalive's 16 connections, not
    # the idle workload's 1,000.
    Entry("servekit.pooled", "servekit", (*_BOUNDED, "udp"), servekit_build("pooled", workers=32),
          twin=_THREADING_TWIN, requires=("servekit",), capacity=32),
    # examples/production_server.py's composition (stream only).
    Entry("servekit.production", "servekit", _BOUNDED, production_build,
          twin=_THREADING_TWIN, requires=("servekit",), capacity=32),
    Entry("servekit.forked", "servekit", (*_BOUNDED, "udp"), servekit_build("forked"),
          twin=_FORKING_TWIN, requires=("servekit",), forks=True, capacity=40),
    # The reactor (examples/evented_echo.py): every connection held on the
    # serve loop, the echo answered there -- or, offloaded, on a pool of 16
    # threads, which is also the one measured with blocking work per line
    # against the pool alone (a pooled dispatcher of 16 workers, each holding
    # its connection: at 32 connections half of them wait for a worker).
    Entry("servekit.reactor", "servekit", (*_UNBOUNDED, "udp"), reactor_build(),
          twin=_REACTOR_TWIN, compare_with=_EVENT_LOOPS, requires=("servekit", "servekit.framing")),
    Entry("servekit.reactor.offload16", "servekit", (*_UNBOUNDED, "udp", "blocking"), reactor_build(offload=16),
          twin=_THREADING_TWIN, compare_with=("servekit.pooled16",),
          requires=("servekit", "servekit.framing")),
    Entry("servekit.pooled16", "servekit", ("blocking",), servekit_build("pooled", workers=16),
          requires=("servekit",), capacity=16),
    # python -m servekit with pre-forked workers.  Judged (>= 1.3x, issue 17):
    # two workers against the supervisor with one (the same machinery, only
    # the count differs), serving as the command line serves a plain handler
    # -- a blocking echo on a pool of threads per worker, where one process's
    # threads share a GIL and a second process adds what a second thread
    # cannot -- on one shared socket and with --reuse-port.  Shown beside
    # them, not judged: the same on the reactor (lines(echo), one thread per
    # worker), which on this 2-core machine is bound by the machine, not by
    # the worker: one reactor worker already takes a core and the generator
    # and the kernel's loopback work most of the other (bench/README.md).
    # Never pinned: the workers and the generator share the machine's cores.
    # Memory is the PSS of the process tree, CPU the tree's.
    Entry("servekit.prefork1.blocking", "servekit", _CLI_WORKLOADS, None,
          command=cli_command(1, supervised=True, handler=CLI_BLOCKING_HANDLER),
          requires=_CLI_REQUIRES, forks=True, pinned=False),
    *(
        Entry(f"servekit.prefork2.blocking{suffix}", "servekit", _CLI_WORKLOADS, None,
              command=cli_command(2, handler=CLI_BLOCKING_HANDLER, extra=extra),
              compare_with=("servekit.prefork1.blocking",), compare_target=1.3,
              requires=_CLI_REQUIRES, forks=True, pinned=False)
        for suffix, extra in (("", ()), (".reuseport", ("--reuse-port",)))
    ),
    Entry("servekit.prefork1", "servekit", _CLI_WORKLOADS, None, command=cli_command(1, supervised=True),
          requires=_CLI_REQUIRES, forks=True, pinned=False),
    *(
        Entry(f"servekit.prefork2{suffix}", "servekit", _CLI_WORKLOADS, None,
              command=cli_command(2, extra=extra), compare_with=("servekit.prefork1", "servekit.cli1"),
              requires=_CLI_REQUIRES, forks=True, pinned=False)
        for suffix, extra in (("", ()), (".reuseport", ("--reuse-port",)))
    ),
    # --workers 1: served in the runner's own process (no supervisor).
    Entry("servekit.cli1", "servekit", _CLI_WORKLOADS, None, command=cli_command(1),
          requires=_CLI_REQUIRES, forks=True, pinned=False),
    *(
        Entry(f"classic.{cls}", "classic", workloads, socketserver_build("servekit.classic", cls),
              twin={"udp" if "UDP" in cls else "tcp": f"stdlib.{cls}"},
              requires=("servekit.classic",), forks=forks, target=0.95,
              capacity=40 if forks else None)
        for cls, workloads, forks in _SOCKETSERVER_CLASSES
    ),
    *(
        Entry(f"stdlib.{cls}", "stdlib", workloads, socketserver_build("socketserver", cls),
              requires=("socketserver",), forks=forks, capacity=40 if forks else None)
        for cls, workloads, forks in _SOCKETSERVER_CLASSES
    ),
    Entry("asyncio", "asyncio", (*_UNBOUNDED, "udp"), asyncio_build(), twin=_THREADING_TWIN,
          requires=("asyncio", "bench._aio")),
    Entry("uvloop", "peer", (*_UNBOUNDED, "udp"), asyncio_build("uvloop"), twin=_THREADING_TWIN,
          requires=("uvloop", "bench._aio")),
    Entry("gevent", "peer", (*_UNBOUNDED, "udp"), gevent_build, twin=_THREADING_TWIN,
          requires=("gevent", "gevent.server")),
)


def by_name(name: str) -> Entry:
    for entry in ENTRIES:
        if entry.name == name:
            return entry
    raise KeyError(f"no server entry named {name!r}")

