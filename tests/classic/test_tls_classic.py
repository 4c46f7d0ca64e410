"""A classic server on a TLS listener: the handshake belongs to the request, not to the serve loop.

The servers here are built the way CPython 3.14's ``http.server.HTTPSServer``
is: bind and listen, then ``server_activate`` replaces ``self.socket`` with
``context.wrap_socket(self.socket, server_side=True)``.  On such a listener
``SSLSocket.accept()`` does the TLS handshake before it returns, in the
thread that serves: with the standard library one client that connects and
says nothing stalls every later one.  ``servekit.classic`` takes the
connection off the listener without the handshake and completes it where the
request is handled (the request's thread or child), bounded by a timeout when
that is the serving thread itself.

Real sockets on the loopback, real TLS with a self-signed certificate made by
the ``openssl`` command at test time; every wait bounded, no sleeps.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import select
import socket
import socketserver
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest

import servekit.classic
from servekit._classic import route

#: The bound on every wait, as tests/conftest.py's TIMEOUT.
TIMEOUT = 10.0
#: How soon a TLS client must have its answer while others sit silent.
PROMPT = 1.0
#: Clients that connect and never send a byte.
SILENT = 100
#: A listen backlog with room for all of them (the classic default is 5).
BACKLOG = 128

HAS_FORK = hasattr(os, "fork")


# -- certificate and contexts ---------------------------------------------------------


class Certificate(NamedTuple):
    cert: Path
    key: Path


@pytest.fixture(scope="session")
def certificate(make_certificate: Callable[[str], tuple[Path, Path]]) -> Certificate:
    """A self-signed certificate for localhost and 127.0.0.1, valid for a day (conftest's ``openssl``)."""
    return Certificate(*make_certificate("localhost"))


def server_context(certificate: Certificate) -> ssl.SSLContext:
    """The server's context; it asks for a client certificate (trusting its own) but does not require one."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate.cert, certificate.key)
    context.verify_mode = ssl.CERT_OPTIONAL
    context.load_verify_locations(certificate.cert)
    return context


def client_context(certificate: Certificate) -> ssl.SSLContext:
    """A client's context: trusts the certificate, checks the host name, and presents it as its own."""
    context = ssl.create_default_context(cafile=str(certificate.cert))
    context.load_cert_chain(certificate.cert, certificate.key)
    return context


# -- the servers ---------------------------------------------------------------------------


class Hello(http.server.BaseHTTPRequestHandler):
    """Answers a GET with what it saw of its request before any I/O on it, as JSON."""

    seen: dict[str, Any]

    def setup(self) -> None:
        request = self.request
        subject = dict(pair for rdn in (request.getpeercert() or {}).get("subject", ()) for pair in rdn)
        self.seen = {
            "sslsocket": isinstance(request, ssl.SSLSocket),
            "version": request.version(),  # None before the handshake
            "peer": subject.get("commonName"),  # getpeercert() raises ValueError before it
            "timeout": request.gettimeout(),
            "thread": threading.current_thread().name,
            "pid": os.getpid(),
        }
        super().setup()

    def do_GET(self) -> None:
        body = json.dumps(self.seen).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class HTTPSServing:
    """3.14's ``HTTPSServer`` by hand, and a record of the requests that failed.

    Mixed in front of a classic server class (the standard library's or
    servekit's): the listening socket becomes an ``SSLSocket`` in
    ``server_activate``; ``handle_error`` keeps the exception instead of
    printing it.
    """

    request_queue_size = BACKLOG
    socket: socket.socket

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext) -> None:
        self.context = context
        self.failures: list[tuple[BaseException | None, Any]] = []
        self.seen_by_verify: list[str | None] = []
        super().__init__(address, Hello)  # type: ignore[call-arg]  # the server class after this one

    def server_activate(self) -> None:
        super().server_activate()  # type: ignore[misc]  # the server class after this one
        self.socket = self.context.wrap_socket(self.socket, server_side=True)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.seen_by_verify.append(request.version())
        return True

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.failures.append((sys.exc_info()[1], client_address))


class ClassicThreading(HTTPSServing, servekit.classic.ThreadingMixIn, servekit.classic.TCPServer):
    pass


class ClassicInline(HTTPSServing, servekit.classic.TCPServer):
    pass


class StdlibThreading(HTTPSServing, socketserver.ThreadingMixIn, socketserver.TCPServer):
    pass


# -- helpers --------------------------------------------------------------------------------


@contextmanager
def serving(server: Any) -> Iterator[tuple[str, int]]:
    """Serve in a thread; on the way out stop the loop (a bounded wait) and close the server."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="serve_forever")
    thread.start()
    try:
        yield server.server_address[:2]
    finally:
        # shutdown() waits for the loop, and a standard library loop stuck in
        # a handshake gets out only once its client has gone: run it in a
        # thread of its own so that this wait, too, has a bound.
        stopper = threading.Thread(target=server.shutdown, name="shutdown")
        stopper.start()
        stopper.join(TIMEOUT)
        thread.join(TIMEOUT)
        server.server_close()
        assert not stopper.is_alive(), "shutdown() did not return"
        assert not thread.is_alive(), "serve_forever() did not return"


@contextmanager
def silent_clients(address: tuple[str, int], count: int) -> Iterator[list[socket.socket]]:
    """*count* TCP connections to *address* that never send a byte; all closed on the way out."""
    with ExitStack() as stack:
        clients = [stack.enter_context(socket.create_connection(address, timeout=TIMEOUT)) for _ in range(count)]
        yield clients


#: Holds *count* silent connections open until it is killed.
SILENT_PROCESS = """
import socket, sys
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
clients = [socket.create_connection((host, port), timeout=10.0) for _ in range(count)]
print("connected", flush=True)
sys.stdin.read()
"""


@contextmanager
def silent_clients_elsewhere(address: tuple[str, int], count: int) -> Iterator[None]:
    """Silent connections held by another process, which is killed on the way out.

    For a forking server: its children inherit every fd of this process, and
    so the client ends of connections made here (their own among them),
    which would never be seen to close.
    """
    argv = [sys.executable, "-c", SILENT_PROCESS, address[0], str(address[1]), str(count)]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as process:
        try:
            assert process.stdout is not None
            # The process prints once connected, or ends (EOF) having failed.
            assert process.stdout.readline() == b"connected\n"
            yield
        finally:
            process.kill()
            process.wait(TIMEOUT)


def get(address: tuple[str, int], certificate: Certificate, timeout: float) -> tuple[dict[str, Any], float]:
    """One HTTPS GET: the JSON answer and the seconds from connect to the end of the body."""
    connection = http.client.HTTPSConnection(*address, context=client_context(certificate), timeout=timeout)
    try:
        started = time.monotonic()
        connection.request("GET", "/")
        response = connection.getresponse()
        body = response.read()
        elapsed = time.monotonic() - started
    finally:
        connection.close()
    assert response.status == 200, body
    answer: dict[str, Any] = json.loads(body)
    return answer, elapsed


def send_garbage(address: tuple[str, int]) -> None:
    """Speak plain HTTP to the TLS server and read until it closes the connection."""
    with socket.create_connection(address, timeout=TIMEOUT) as client:
        client.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        try:
            while client.recv(4096):  # an alert, perhaps, then the end
                pass
        except ConnectionResetError:  # closed with our request unread
            pass


def assert_handshake_done_before_handler(seen: dict[str, Any]) -> None:
    assert seen["sslsocket"] is True
    assert seen["version"] in ("TLSv1.2", "TLSv1.3"), seen
    assert seen["peer"] == "localhost", seen
    assert seen["timeout"] is None, seen  # as SSLSocket.accept() leaves it: the bound was undone


# -- the acceptance test and its counterpart in the standard library ----------------


def test_silent_clients_do_not_stall_a_threading_tls_server(certificate: Certificate) -> None:
    server = ClassicThreading(("127.0.0.1", 0), server_context(certificate))
    assert isinstance(server.socket, ssl.SSLSocket)
    with serving(server) as address, silent_clients(address, SILENT):
        seen, elapsed = get(address, certificate, timeout=TIMEOUT)
        assert elapsed < PROMPT, f"answered after {elapsed:.2f} s with {SILENT} silent clients"
        assert_handshake_done_before_handler(seen)
        assert seen["thread"].startswith("servekit-worker-"), seen  # handshake and handler in the request's thread
        assert seen["pid"] == os.getpid()
    # The silent clients' handshakes ended when they closed, each through handle_error.
    assert len(server.failures) == SILENT
    assert all(isinstance(exc, OSError) for exc, _ in server.failures), server.failures[:3]


def test_the_standard_library_stalls_on_one_silent_client(certificate: Certificate) -> None:
    """The difference shown: socketserver handshakes in get_request(), on the serving thread.

    The same server and clients on the standard library: the TLS client gets
    no answer within PROMPT, because the serve loop waits in the first
    silent client's handshake (with no bound).  Kept as the demonstration of
    what servekit.classic changes.
    """
    server = StdlibThreading(("127.0.0.1", 0), server_context(certificate))
    with serving(server) as address, silent_clients(address, SILENT):
        with pytest.raises(TimeoutError):
            get(address, certificate, timeout=PROMPT)
    # Once the silent clients had gone, the stalled handshakes failed inside
    # get_request(), which socketserver drops without calling handle_error.
    assert server.failures == []


# -- what the request looks like ------------------------------------------------------


@pytest.mark.parametrize("on_connect", [True, False], ids=["do_handshake_on_connect", "lazy"])
def test_get_request_returns_an_sslsocket_whose_handshake_is_still_to_come(
    certificate: Certificate, on_connect: bool
) -> None:
    """get_request() reads nothing from the client; the request is what SSLSocket.accept() makes, handshake aside."""
    context = server_context(certificate)

    class Server(servekit.classic.TCPServer):
        def server_activate(self) -> None:
            super().server_activate()
            self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=on_connect)

    with (
        Server(("127.0.0.1", 0), servekit.classic.BaseRequestHandler) as server,
        socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=TIMEOUT),
    ):
        request, client_address = server.get_request()
        with request:
            assert isinstance(request, ssl.SSLSocket)
            assert request.context is context
            assert request.server_side
            assert getattr(request, "do_handshake_on_connect") is on_connect  # not in typeshed's SSLSocket
            assert request.version() is None
            assert request.gettimeout() is None
            assert client_address[0] == "127.0.0.1"


def test_verify_request_sees_the_request_before_its_handshake(certificate: Certificate) -> None:
    """A deliberate difference: verify_request() runs on the serve loop, so before the handshake."""
    server = ClassicThreading(("127.0.0.1", 0), server_context(certificate))
    with serving(server) as address:
        get(address, certificate, timeout=TIMEOUT)
    assert server.seen_by_verify == [None]


# -- failed handshakes -----------------------------------------------------------------


@pytest.mark.parametrize("server_class", [ClassicThreading, ClassicInline], ids=["threading", "inline"])
def test_a_failed_handshake_goes_to_handle_error_and_the_server_goes_on(
    certificate: Certificate, server_class: Callable[[tuple[str, int], ssl.SSLContext], HTTPSServing]
) -> None:
    server = server_class(("127.0.0.1", 0), server_context(certificate))
    with serving(server) as address:
        for _ in range(3):
            send_garbage(address)
        seen, _ = get(address, certificate, timeout=TIMEOUT)
        assert_handshake_done_before_handler(seen)
    # handle_error ran before shutdown_request closed each connection, that is
    # before each client saw the end; the fd check after the test sees the rest.
    assert len(server.failures) == 3, server.failures
    for exc, client_address in server.failures:
        assert isinstance(exc, ssl.SSLError), exc
        assert client_address[0] == "127.0.0.1"


@pytest.mark.parametrize("bound", ["server timeout", "default"])
def test_an_inline_server_bounds_the_handshake(
    certificate: Certificate, monkeypatch: pytest.MonkeyPatch, bound: str
) -> None:
    """A server without workers handshakes in its serving thread: a silent client stalls it at most the bound."""
    server = ClassicInline(("127.0.0.1", 0), server_context(certificate))
    if bound == "server timeout":
        server.timeout = 0.3
    else:
        assert server.timeout is None
        assert route.HANDSHAKE_TIMEOUT == 10.0
        monkeypatch.setattr(route, "HANDSHAKE_TIMEOUT", 0.3)
    with serving(server) as address, silent_clients(address, 1):
        seen, _ = get(address, certificate, timeout=TIMEOUT)
        assert_handshake_done_before_handler(seen)
        assert seen["thread"] == "serve_forever", seen
        # The silent client, still connected, was given up on.
        assert len(server.failures) == 1, server.failures
        assert isinstance(server.failures[0][0], TimeoutError), server.failures


# -- forked children ------------------------------------------------------------------------


@pytest.mark.skipif(not HAS_FORK, reason="needs os.fork")
def test_a_forking_tls_server_handshakes_in_the_child(certificate: Certificate) -> None:
    """Silent clients hold children, not the loop; a failed handshake reaches handle_error in the child.

    Fewer silent clients than ``max_children`` (40): at that many the server
    stops accepting by design, TLS or not.
    """
    silent = 20
    read_end, write_end = os.pipe()  # the children's handle_error reports here
    try:

        class ClassicForking(HTTPSServing, servekit.classic.ForkingMixIn, servekit.classic.TCPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                os.write(write_end, type(sys.exc_info()[1]).__name__.encode() + b"\n")

        server = ClassicForking(("127.0.0.1", 0), server_context(certificate))
        with serving(server) as address:
            with silent_clients_elsewhere(address, silent):
                seen, elapsed = get(address, certificate, timeout=TIMEOUT)
                assert elapsed < PROMPT, f"answered after {elapsed:.2f} s with {silent} silent clients"
                assert_handshake_done_before_handler(seen)
                assert seen["pid"] != os.getpid(), seen
                send_garbage(address)
                ready, _, _ = select.select([read_end], [], [], TIMEOUT)
                assert ready, "no child reported the failed handshake"
                assert os.read(read_end, 4096).splitlines()[0] == b"SSLError"
                seen, _ = get(address, certificate, timeout=TIMEOUT)
                assert seen["pid"] != os.getpid(), seen
    finally:
        # After server_close() has reaped every child: none writes here any more.
        os.close(read_end)
        os.close(write_end)


# -- http.server itself ------------------------------------------------------------------------

HTTP_SERVER_ON_SERVEKIT = """
import sys
assert "socketserver" not in sys.modules
import servekit.classic
sys.modules["socketserver"] = servekit.classic
import functools, http.client, http.server, socket, ssl, threading, time

cert, key, directory, silent = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
TIMEOUT = 10.0

if hasattr(http.server, "ThreadingHTTPSServer"):  # Python >= 3.14
    Server = http.server.ThreadingHTTPSServer
    kwargs = {"certfile": cert, "keyfile": key}
else:  # the same, by hand
    class Server(http.server.ThreadingHTTPServer):
        def __init__(self, address, handler, *, certfile, keyfile):
            self.certfile, self.keyfile = certfile, keyfile
            super().__init__(address, handler)

        def server_activate(self):
            super().server_activate()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.certfile, self.keyfile)
            self.socket = context.wrap_socket(self.socket, server_side=True)
    kwargs = {"certfile": cert, "keyfile": key}

assert servekit.classic.BaseServer in Server.__mro__, Server.__mro__

class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

Server.request_queue_size = 128
Server.handle_error = lambda self, request, client_address: None  # the silent clients' ends
server = Server(("127.0.0.1", 0), functools.partial(Quiet, directory=directory), **kwargs)
assert isinstance(server.socket, ssl.SSLSocket)
thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
thread.start()
clients = [socket.create_connection(server.server_address, timeout=TIMEOUT) for _ in range(silent)]
try:
    context = ssl.create_default_context(cafile=cert)
    connection = http.client.HTTPSConnection("127.0.0.1", server.server_address[1], context=context, timeout=TIMEOUT)
    started = time.monotonic()
    connection.request("GET", "/hello.txt")
    response = connection.getresponse()
    body = response.read()
    elapsed = time.monotonic() - started
    connection.close()
    assert response.status == 200 and body == b"hello over TLS\\n", (response.status, body)
    print("elapsed", elapsed)
finally:
    for client in clients:
        client.close()
    server.shutdown()
    thread.join(TIMEOUT)
    server.server_close()
assert not thread.is_alive()
print("OK")
"""


def test_http_server_on_servekit_serves_tls_beside_silent_clients(certificate: Certificate, tmp_path: Path) -> None:
    """The standard library's own ThreadingHTTPServer (HTTPSServer-style) on servekit.classic, in a subprocess."""
    (tmp_path / "hello.txt").write_bytes(b"hello over TLS\n")
    script = textwrap.dedent(HTTP_SERVER_ON_SERVEKIT)
    argv = [str(certificate.cert), str(certificate.key), str(tmp_path), str(SILENT)]
    done = subprocess.run(
        [sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1:] == ["OK"], done.stdout + done.stderr
    elapsed = float(lines[-2].split()[1])
    assert elapsed < PROMPT, f"answered after {elapsed:.2f} s with {SILENT} silent clients"
