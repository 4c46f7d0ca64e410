"""``python -m bench.calls``: calls into the library per request, beside the standard library.

A profile hook (``sys.setprofile`` in the serving thread and
``threading.setprofile`` for the threads it starts) counts the Python calls
whose code lives in the library's own files -- ``socketserver.py`` for the
standard library, ``lib/servekit/`` for servekit -- during one warm request:
a stream server echoes one line back (``StreamRequestHandler`` for the
classic servers, ``rfile``/``wfile`` for the composed ones), a datagram
server one datagram.  For the classic servers the count ends once the serve
loop has come back round after the request (its ``service_actions`` call), and
once the request's threads have ended, so it does not depend on how the
client's reply races the loop; it is exact and repeatable, so it is a test
(``tests/meta/test_calls.py``), not a timing.  (The composed servers' counts
are printed for comparison only: their loop's return after the reply is not
waited for.)
"""

from __future__ import annotations

import argparse
import importlib
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

_TIMEOUT: Final = 10.0
_LINE: Final = b"x" * 31 + b"\n"


@dataclass(frozen=True)
class Started:
    address: tuple[str, int]
    #: Arms the wait for the loop's return, before a request.
    arm: Callable[[], None]
    #: Waits (bounded) until the loop has come back round after the request.
    looped: Callable[[], None]
    stop: Callable[[], None]


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class Case:
    name: str
    stream: bool
    start: Callable[[], Started]
    files: Callable[[], tuple[str, ...]]


class _Counter:
    def __init__(self, files: tuple[str, ...]) -> None:
        self.files = files
        self.on = False
        self.calls = 0
        self.names: list[str] = []
        self.lock = threading.Lock()

    def hook(self, frame: FrameType, event: str, arg: object) -> None:
        if event == "call" and self.on and frame.f_code.co_filename.startswith(self.files):
            with self.lock:
                self.calls += 1
                self.names.append(frame.f_code.co_qualname)


def _classic(module_name: str, class_name: str) -> Callable[[], Started]:
    def start() -> Started:
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
        stream = "UDP" not in class_name
        if stream:

            class Echo(module.StreamRequestHandler):  # type: ignore[name-defined,misc]
                def handle(self) -> None:
                    self.wfile.write(self.rfile.readline())

        else:

            class Echo(module.DatagramRequestHandler):  # type: ignore[name-defined,misc,no-redef]
                def handle(self) -> None:
                    self.wfile.write(self.rfile.read())

        looped = threading.Event()

        class Server(cls):  # type: ignore[valid-type,misc]
            # Both overrides live here, not in the library, so the hook does
            # not count them; the library's own methods they call it does.
            taken = False

            def verify_request(self, request: object, client_address: object) -> bool:
                self.taken = True  # a request came off the socket on this wake-up
                return bool(super().verify_request(request, client_address))

            def service_actions(self) -> None:
                super().service_actions()
                if self.taken:
                    self.taken = False
                    looped.set()

        def wait_looped() -> None:
            if not looped.wait(_TIMEOUT):
                raise TimeoutError(f"{class_name}'s serve loop did not come back round after the request")

        srv = Server(("127.0.0.1", 0), Echo)
        srv.daemon_threads = False
        # socketserver's shutdown() waits up to a poll interval: keep it short
        # there.  (A wake-up by timeout during the counted request could only
        # add a service_actions call to socketserver's count.)
        poll = 0.5 if module_name == "socketserver" else 30.0
        thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": poll})
        thread.start()

        def stop() -> None:
            srv.shutdown()
            thread.join(_TIMEOUT)
            srv.server_close()

        return Started(srv.server_address, looped.clear, wait_looped, stop)

    return start


def _composed(dispatcher: str, stream: bool) -> Callable[[], Started]:
    def start() -> Started:
        import servekit
        from servekit import BoundServer, Datagram, IPAddress, StreamConnection

        def echo(conn: StreamConnection) -> None:
            conn.wfile.write(conn.rfile.readline())

        def pong(dg: Datagram) -> None:
            dg.reply(dg.data)

        bound: BoundServer[IPAddress]
        if stream:
            bound = servekit.server(servekit.tcp("127.0.0.1", 0), echo, dispatcher=getattr(servekit, dispatcher)()).bind()
        else:
            bound = servekit.server(servekit.udp("127.0.0.1", 0), pong, dispatcher=getattr(servekit, dispatcher)()).bind()
        thread = threading.Thread(target=bound.serve_forever, kwargs={"poll_interval": 30.0})
        thread.start()

        def stop() -> None:
            bound.shutdown()
            thread.join(_TIMEOUT)
            bound.close()

        return Started(bound.address, _nothing, _nothing, stop)

    return start


def _stdlib_files() -> tuple[str, ...]:
    import socketserver

    return (str(socketserver.__file__),)


def _servekit_files() -> tuple[str, ...]:
    import servekit

    return (str(Path(servekit.__file__).parent),)


CASES: Final[tuple[Case, ...]] = (
    Case("socketserver.ThreadingTCPServer", True, _classic("socketserver", "ThreadingTCPServer"), _stdlib_files),
    Case("classic.ThreadingTCPServer", True, _classic("servekit.classic", "ThreadingTCPServer"), _servekit_files),
    Case("socketserver.TCPServer", True, _classic("socketserver", "TCPServer"), _stdlib_files),
    Case("classic.TCPServer", True, _classic("servekit.classic", "TCPServer"), _servekit_files),
    Case("socketserver.UDPServer", False, _classic("socketserver", "UDPServer"), _stdlib_files),
    Case("classic.UDPServer", False, _classic("servekit.classic", "UDPServer"), _servekit_files),
    Case("socketserver.ThreadingUDPServer", False, _classic("socketserver", "ThreadingUDPServer"), _stdlib_files),
    Case("classic.ThreadingUDPServer", False, _classic("servekit.classic", "ThreadingUDPServer"), _servekit_files),
    Case("servekit.inline", True, _composed("inline", True), _servekit_files),
    Case("servekit.threaded", True, _composed("threaded", True), _servekit_files),
    Case("servekit.inline udp", False, _composed("inline", False), _servekit_files),
    Case("servekit.threaded udp", False, _composed("threaded", False), _servekit_files),
)


def _request(address: tuple[str, int], stream: bool) -> None:
    if stream:
        with socket.create_connection(address, timeout=_TIMEOUT) as sock:
            sock.sendall(_LINE)
            data = b""
            while chunk := sock.recv(4096):  # to EOF: the server has released the connection
                data += chunk
            assert data == _LINE, data
    else:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(_TIMEOUT)
            sock.sendto(_LINE, address)
            assert sock.recv(4096) == _LINE


@contextmanager
def _profiled(counter: _Counter) -> Iterator[None]:
    threading.setprofile(counter.hook)
    try:
        yield
    finally:
        threading.setprofile(None)


def count(case: Case) -> tuple[int, list[str]]:
    """Calls into the library for one warm request of *case*, and their names in order."""
    counter = _Counter(case.files())
    with _profiled(counter):
        started = case.start()
        serving = set(threading.enumerate())
        try:
            _request(started.address, case.stream)  # warm: first-use imports and lazy files
            started.looped()
            _settle(serving)
            started.arm()
            counter.on = True
            _request(started.address, case.stream)
            started.looped()
            _settle(serving)
            counter.on = False
        finally:
            started.stop()
    return counter.calls, counter.names


def _settle(serving: set[threading.Thread]) -> None:
    """Wait until the request's worker threads, if any, have finished."""
    for thread in threading.enumerate():
        if thread not in serving:
            thread.join(_TIMEOUT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", action="append", default=[], help="cases whose name contains this")
    parser.add_argument("--names", action="store_true", help="print the calls of each case")
    args = parser.parse_args(argv)
    for case in CASES:
        if args.only and not any(part in case.name for part in args.only):
            continue
        calls, names = count(case)
        print(f"{case.name:36} {calls:4d}")
        if args.names:
            print("    " + ", ".join(names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
