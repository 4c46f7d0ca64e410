"""Behaviour parity of servekit.classic with the standard library's socketserver.

Most tests run on both modules (``mod`` is ``socketserver`` or
``servekit.classic``); the last ones check servekit's deliberate differences.
"""

from __future__ import annotations

import errno
import logging
import os
import pydoc
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import servekit.classic
from servekit._runtime.loop import ACCEPT_BACKOFF

#: The bound on every wait, as tests/conftest.py's TIMEOUT (importing conftest by
#: name would make mypy see it under two module names).
TIMEOUT = 10.0

MODULES = [pytest.param(socketserver, id="stdlib"), pytest.param(servekit.classic, id="servekit")]

HAS_FORK = hasattr(os, "fork")
HAS_UNIX = hasattr(socket, "AF_UNIX")

_MISSING = object()

SERVER_ATTRIBUTES = (
    "address_family",
    "socket_type",
    "request_queue_size",
    "allow_reuse_address",
    "allow_reuse_port",
    "timeout",
    "max_packet_size",
    "daemon_threads",
    "block_on_close",
    "max_children",
    "active_children",
)
HANDLER_ATTRIBUTES = ("rbufsize", "wbufsize", "timeout", "disable_nagle_algorithm")


# -- the namespace ---------------------------------------------------------------


def test_all_matches_stdlib() -> None:
    assert servekit.classic.__all__ == socketserver.__all__


def test_all_lists_public_classes() -> None:
    """CPython's MiscTestCase.test_all, with servekit.classic's module name."""
    defined = [
        name
        for name in dir(servekit.classic)
        if not name.startswith("_") and getattr(getattr(servekit.classic, name), "__module__", None) == "servekit.classic"
    ]
    assert sorted(servekit.classic.__all__) == sorted(defined)


@pytest.mark.parametrize("name", socketserver.__all__)
def test_same_mro_and_names(name: str) -> None:
    theirs: type = getattr(socketserver, name)
    ours: type = getattr(servekit.classic, name)
    assert [c.__name__ for c in ours.__mro__] == [c.__name__ for c in theirs.__mro__]
    assert ours.__module__ == "servekit.classic"
    assert ours.__qualname__ == name
    for cls in ours.__mro__[:-1]:
        assert getattr(servekit.classic, cls.__name__) is cls


@pytest.mark.parametrize("name", socketserver.__all__)
def test_same_public_members(name: str) -> None:
    theirs = {n for n in dir(getattr(socketserver, name)) if not n.startswith("_")}
    ours = {n for n in dir(getattr(servekit.classic, name)) if not n.startswith("_")}
    assert ours == theirs


@pytest.mark.parametrize("name", socketserver.__all__)
def test_every_member_can_be_looked_up_on_the_class(name: str) -> None:
    # Documentation tools look up every attribute on the class, private ones too.
    cls = getattr(servekit.classic, name)
    for member in dir(cls):
        getattr(cls, member)
    assert name in pydoc.render_doc(cls)


@pytest.mark.parametrize("name", socketserver.__all__)
def test_same_class_attribute_defaults(name: str) -> None:
    for attribute in (*SERVER_ATTRIBUTES, *HANDLER_ATTRIBUTES):
        theirs = getattr(getattr(socketserver, name), attribute, _MISSING)
        ours = getattr(getattr(servekit.classic, name), attribute, _MISSING)
        assert ours == theirs, f"{name}.{attribute}"
        assert type(ours) is type(theirs), f"{name}.{attribute}"


# -- behaviour on both modules ----------------------------------------------------


@contextmanager
def serving(server: Any, poll_interval: float = 0.01) -> Iterator[threading.Thread]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": poll_interval})
    thread.start()
    try:
        yield thread
    finally:
        server.shutdown()
        thread.join(TIMEOUT)
        server.server_close()
    assert not thread.is_alive()


def _stream_roundtrip(family: int, address: Any, payload: bytes) -> bytes:
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(TIMEOUT)
        client.connect(address)
        client.sendall(payload)
        with client.makefile("rb") as reader:
            return reader.readline()


def _datagram_roundtrip(family: int, address: Any, payload: bytes, local: str | None) -> bytes:
    with socket.socket(family, socket.SOCK_DGRAM) as client:
        client.settimeout(TIMEOUT)
        if local is not None:
            client.bind(local)
        client.sendto(payload, address)
        return client.recv(1024)


KINDS = [
    ("TCPServer", "stream", False),
    ("ThreadingTCPServer", "stream", False),
    ("ForkingTCPServer", "stream", False),
    ("UDPServer", "datagram", False),
    ("ThreadingUDPServer", "datagram", False),
    ("ForkingUDPServer", "datagram", False),
    ("UnixStreamServer", "stream", True),
    ("ThreadingUnixStreamServer", "stream", True),
    ("UnixDatagramServer", "datagram", True),
    ("ThreadingUnixDatagramServer", "datagram", True),
]


@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize(("name", "kind", "unix"), KINDS)
def test_same_client_scenario(mod: ModuleType, name: str, kind: str, unix: bool, short_tmp: Path) -> None:
    if not hasattr(mod, name):
        pytest.skip(f"{name} is not available here")
    server_class: Any = getattr(mod, name)
    seen: list[str] = []

    base: Any = mod.StreamRequestHandler if kind == "stream" else mod.DatagramRequestHandler

    class Handler(base):  # type: ignore[misc]
        def handle(self) -> None:
            line = self.rfile.readline()
            self.wfile.write(line.upper())

    class Server(server_class):  # type: ignore[misc]
        def verify_request(self, request: Any, client_address: Any) -> bool:
            seen.append("verify")
            return bool(super().verify_request(request, client_address))

    address: Any = str(short_tmp / "server.sock") if unix else ("127.0.0.1", 0)
    server = Server(address, Handler)
    assert server.server_address == server.socket.getsockname()
    family = server.address_family
    with serving(server):
        for i in range(3):
            payload = b"hello %d\n" % i
            if kind == "stream":
                reply = _stream_roundtrip(family, server.server_address, payload)
            else:
                local = str(short_tmp / f"client{i}.sock") if unix else None
                reply = _datagram_roundtrip(family, server.server_address, payload, local)
            assert reply == payload.upper()
    assert seen == ["verify"] * 3
    assert server.socket.fileno() == -1
    if HAS_FORK and isinstance(server, mod.ForkingMixIn):
        assert not server.active_children


@pytest.mark.parametrize("mod", MODULES)
def test_handle_request_timeout_calls_handle_timeout(mod: ModuleType) -> None:
    calls: list[str] = []

    class Server(mod.TCPServer):  # type: ignore[misc,name-defined]
        timeout = 0.0

        def handle_timeout(self) -> None:
            calls.append("timeout")

    with Server(("127.0.0.1", 0), mod.StreamRequestHandler) as server:
        assert server.handle_request() is None
    assert calls == ["timeout"]


@pytest.mark.parametrize("mod", MODULES)
def test_socket_timeout_bounds_handle_request(mod: ModuleType) -> None:
    calls: list[str] = []

    class Server(mod.TCPServer):  # type: ignore[misc,name-defined]
        timeout = TIMEOUT * 100

        def handle_timeout(self) -> None:
            calls.append("timeout")

    with Server(("127.0.0.1", 0), mod.StreamRequestHandler) as server:
        server.socket.settimeout(0.0)
        server.handle_request()
    assert calls == ["timeout"]


@pytest.mark.parametrize("mod", MODULES)
def test_hooks_in_classic_order(mod: ModuleType) -> None:
    calls: list[str] = []

    class Handler(mod.BaseRequestHandler):  # type: ignore[misc,name-defined]
        def setup(self) -> None:
            calls.append("setup")

        def handle(self) -> None:
            calls.append("handle")
            raise ValueError("boom")

        def finish(self) -> None:
            calls.append("finish")

    class Server(mod.TCPServer):  # type: ignore[misc,name-defined]
        def get_request(self) -> Any:
            calls.append("get_request")
            return super().get_request()

        def verify_request(self, request: Any, client_address: Any) -> bool:
            calls.append("verify_request")
            return True

        def process_request(self, request: Any, client_address: Any) -> None:
            calls.append("process_request")
            super().process_request(request, client_address)

        def finish_request(self, request: Any, client_address: Any) -> None:
            calls.append("finish_request")
            super().finish_request(request, client_address)

        def handle_error(self, request: Any, client_address: Any) -> None:
            calls.append("handle_error")

        def shutdown_request(self, request: Any) -> None:
            calls.append("shutdown_request")
            super().shutdown_request(request)

        def close_request(self, request: Any) -> None:
            calls.append("close_request")
            super().close_request(request)

    with Server(("127.0.0.1", 0), Handler) as server:
        with socket.create_connection(server.server_address, timeout=TIMEOUT):
            server.handle_request()
    assert calls == [
        "get_request",
        "verify_request",
        "process_request",
        "finish_request",
        "setup",
        "handle",
        "finish",
        "handle_error",
        "shutdown_request",
        "close_request",
    ]


@pytest.mark.parametrize("mod", MODULES)
def test_per_instance_tweak_is_read_at_call_time(mod: ModuleType) -> None:
    names: list[bool] = []
    done = threading.Event()

    class Handler(mod.BaseRequestHandler):  # type: ignore[misc,name-defined]
        def handle(self) -> None:
            names.append(threading.current_thread().daemon)
            done.set()

    server = mod.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.block_on_close = False
    with server, socket.create_connection(server.server_address, timeout=TIMEOUT):
        server.handle_request()
        assert done.wait(TIMEOUT)
    assert names == [True]


@pytest.mark.parametrize("mod", MODULES)
def test_bind_and_activate_false(mod: ModuleType) -> None:
    server = mod.TCPServer(("127.0.0.1", 0), mod.StreamRequestHandler, bind_and_activate=False)
    with server:
        server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.server_bind()
        server.server_activate()
        assert server.server_address[1] != 0


@pytest.mark.parametrize("mod", MODULES)
def test_a_subclass_whose_init_skips_the_bases_serves(mod: ModuleType) -> None:
    class Echo(mod.StreamRequestHandler):  # type: ignore[misc,name-defined]
        def handle(self) -> None:
            self.wfile.write(self.rfile.readline())

    class Own(mod.TCPServer):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:  # sets up what TCPServer.__init__ would, itself
            self.server_address = ("127.0.0.1", 0)
            self.RequestHandlerClass = Echo
            self.socket = socket.socket()
            self.server_bind()
            self.server_activate()

    server = Own()
    with server, socket.create_connection(server.server_address, timeout=TIMEOUT) as client:
        client.sendall(b"ping\n")
        server.handle_request()
        assert client.makefile("rb").readline() == b"ping\n"


# -- deliberate differences (servekit only) -----------------------------------------


class _Echo(servekit.classic.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline())


def _call_bounded(function: Callable[[], object]) -> bool:
    """Run *function* in a thread; whether it returned within TIMEOUT."""
    thread = threading.Thread(target=function)
    thread.start()
    thread.join(TIMEOUT)
    return not thread.is_alive()


def test_shutdown_does_not_wait_for_the_poll_interval() -> None:
    server = servekit.classic.TCPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": TIMEOUT * 6})
    thread.start()
    try:
        assert _stream_roundtrip(socket.AF_INET, server.server_address, b"ping\n") == b"ping\n"
        # A classic shutdown would wait up to the 60 s poll interval.
        assert _call_bounded(server.shutdown)
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    finally:
        server.server_close()
        thread.join(TIMEOUT)


def test_shutdown_before_serve_forever_neither_deadlocks_nor_poisons() -> None:
    with servekit.classic.TCPServer(("127.0.0.1", 0), _Echo) as server:
        assert _call_bounded(server.shutdown)  # the standard library blocks here forever
        with serving(server):
            assert _stream_roundtrip(socket.AF_INET, server.server_address, b"after\n") == b"after\n"


@pytest.mark.parametrize("via", ["serve_forever", "handle_request"])
def test_accept_exhaustion_backs_off_and_logs_once_per_episode(caplog: pytest.LogCaptureFixture, via: str) -> None:
    """An injected EMFILE: retries BACKOFF apart, one report at the start and one at the end.

    (tests/integration/test_fd_exhaustion.py runs the real condition.)
    """
    failures = 3
    stamps: list[float] = []

    class Server(servekit.classic.TCPServer):
        def get_request(self) -> Any:
            stamps.append(time.monotonic())
            if len(stamps) <= failures:
                raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
            return super().get_request()

    caplog.set_level(logging.WARNING, logger="servekit.classic")
    server = Server(("127.0.0.1", 0), _Echo)
    # The waiting client keeps the listener readable: without a back-off the
    # loop would call get_request() in a tight loop.  It is answered once
    # get_request() succeeds again.
    if via == "serve_forever":
        with serving(server):
            assert _stream_roundtrip(socket.AF_INET, server.server_address, b"ping\n") == b"ping\n"
    else:
        server.timeout = TIMEOUT  # every wait bounded
        with server, socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=TIMEOUT) as client:
            client.sendall(b"ping\n")
            for _ in range(failures + 1):  # each call makes one attempt, after the back-off
                server.handle_request()
            assert client.recv(16) == b"ping\n"
    gaps = [later - earlier for earlier, later in zip(stamps, stamps[1:])]
    # Lower bounds only: a slow machine makes the gaps longer, never shorter.
    assert len(gaps) == failures and all(gap >= ACCEPT_BACKOFF * 0.9 for gap in gaps), gaps
    messages = [r.getMessage() for r in caplog.records if r.name == "servekit.classic"]
    assert len(messages) == 2, messages
    start, end = messages
    assert os.strerror(errno.EMFILE) in start and "retrying" in start, start
    assert f"succeeded again after {failures} failed attempts" in end, end


def test_server_close_from_another_thread_stops_the_loop() -> None:
    server = servekit.classic.TCPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": TIMEOUT * 6})
    thread.start()
    try:
        assert _stream_roundtrip(socket.AF_INET, server.server_address, b"ping\n") == b"ping\n"
        server.server_close()
        thread.join(TIMEOUT)
        assert not thread.is_alive()
    finally:
        server.server_close()
        server.shutdown()
        thread.join(TIMEOUT)


def test_bind_error_names_the_address() -> None:
    with servekit.classic.TCPServer(("127.0.0.1", 0), _Echo) as first:
        port = first.server_address[1]
        with pytest.raises(OSError, match=rf"'127\.0\.0\.1', {port}") as info:
            servekit.classic.TCPServer(("127.0.0.1", port), _Echo)
    assert info.value.errno == errno.EADDRINUSE


@pytest.mark.skipif(not HAS_UNIX, reason="needs AF_UNIX")
def test_unix_bind_error_names_the_path(short_tmp: Path) -> None:
    path = str(short_tmp / "missing" / "server.sock")
    with pytest.raises(FileNotFoundError, match="missing/server.sock"):
        servekit.classic.UnixStreamServer(path, _Echo)


@pytest.mark.skipif(not HAS_FORK, reason="needs os.fork")
def test_forking_at_max_children_waits_instead_of_blocking() -> None:
    class Server(servekit.classic.ForkingTCPServer):
        max_children = 1

    server = Server(("127.0.0.1", 0), _Echo)
    with serving(server):
        # Two clients in a row: the second is accepted once the first child exits.
        for payload in (b"one\n", b"two\n"):
            assert _stream_roundtrip(socket.AF_INET, server.server_address, payload) == payload
    assert not server.active_children


@pytest.mark.skipif(not HAS_FORK, reason="needs os.fork")
@pytest.mark.parametrize("mod", MODULES)
@pytest.mark.parametrize("preset", [False, True], ids=["default", "set-by-the-program"])
def test_active_children_is_the_live_set_of_children(mod: ModuleType, preset: bool) -> None:
    class Handler(mod.StreamRequestHandler):  # type: ignore[misc,name-defined]
        def handle(self) -> None:
            self.wfile.write(self.rfile.readline())

    class Server(mod.ForkingTCPServer):  # type: ignore[misc,name-defined]
        pass

    with Server(("127.0.0.1", 0), Handler) as server:
        mine: set[int] = set()
        if preset:  # a program that sets the attribute up itself: its set is the one kept up to date
            server.active_children = mine
        assert not server.active_children
        with socket.create_connection(server.server_address, timeout=TIMEOUT) as client:
            client.sendall(b"hi\n")
            server.handle_request()  # accepts and forks; the child answers
            assert client.recv(16) == b"hi\n"
        assert len(server.active_children) == 1  # exited or not, not reaped yet
        if preset:
            assert server.active_children is mine
        server.collect_children(blocking=True)
        assert not server.active_children


@pytest.mark.skipif(not HAS_FORK, reason="needs os.fork")
def test_forking_runs_none_of_the_programs_descriptors_in_the_parent() -> None:
    """Before its first fork the server looks up the names the handler and threading's after-fork
    clean-up use (for the type cache), but never one whose lookup would run the program's code: a
    descriptor of its own, any name of a class with a metaclass of its own, an attribute of a thread
    or of what it holds."""
    looked_up: list[str] = []

    class Recorded:
        def __get__(self, instance: object, owner: type | None = None) -> bytes:
            looked_up.append("descriptor")
            return b"descriptor"

    class Meta(type):
        def __getattr__(cls, name: str) -> object:
            looked_up.append(f"meta {name}")
            raise AttributeError(name)

    class Handler(servekit.classic.StreamRequestHandler):
        answer = Recorded()

        def handle(self) -> None:
            self.wfile.write(self.answer + self.rfile.readline())

    class Odd(servekit.classic.StreamRequestHandler, metaclass=Meta):
        def handle(self) -> None:
            self.wfile.write(self.rfile.readline() + getattr(type(self), "nosuch", b""))

    # A thread of the program's, alive at the fork: the server looks at the
    # threads for what threading's clean-up in each child looks up.
    class Watcher(threading.Thread):
        probe = Recorded()

        def __getattr__(self, name: str) -> object:
            looked_up.append(f"thread {name}")
            raise AttributeError(name)

    class Held:
        def __getattribute__(self, name: str) -> object:
            looked_up.append(f"held {name}")
            return object.__getattribute__(self, name)

    release = threading.Event()
    watcher = Watcher(target=release.wait, args=(TIMEOUT,))
    watcher.held = Held()  # type: ignore[attr-defined]
    watcher.start()
    try:
        for handler, answer in ((Handler, b"descriptorhi\n"), (Odd, b"hi\n")):
            with servekit.classic.ForkingTCPServer(("127.0.0.1", 0), handler) as server:
                with socket.socket() as client:
                    client.settimeout(TIMEOUT)
                    client.connect(server.server_address)
                    client.sendall(b"hi\n")
                    server.handle_request()  # accepts and forks: the child answers
                    assert client.recv(64) == answer
                server.collect_children(blocking=True)
    finally:
        release.set()
        watcher.join(TIMEOUT)
    assert looked_up == [], looked_up  # (the children's lookups were theirs)
