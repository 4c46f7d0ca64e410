"""close(): idempotent, releases the socket and the Unix socket file, honours block_on_close."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Generic, TypeVar

import attrs
import pytest

from servekit import Datagram, Dispatcher, Server, StreamConnection, WorkerHost, Workers, server, tcp, threaded
from servekit import BoundServer, IPAddress, udp, unix_datagram, unix_stream
from servekit.testing import datagram_exchange, serving, stream_exchange

TIMEOUT = 10.0

_R = TypeVar("_R")


def echo(conn: StreamConnection) -> None:
    conn.socket.sendall(conn.socket.recv(1024))


class TestClose:
    def test_idempotent_and_releases_the_socket(self) -> None:
        bound = server(tcp("127.0.0.1", 0), echo).bind()
        address, port = bound.address, bound.port
        bound.close()
        bound.close()
        assert bound.closed
        assert bound.fileno() == -1
        assert repr(bound).endswith(" closed>")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()

    def test_port_can_be_bound_again_after_close(self) -> None:
        with server(tcp("127.0.0.1", 0), echo).bind() as first:
            address = first.address
        assert isinstance(address, tuple)
        with serving(server(tcp("127.0.0.1", address[1]), echo).bind(), poll_interval=0.01) as again:
            assert stream_exchange(again.address, b"back", timeout=TIMEOUT) == b"back"

    @pytest.mark.parametrize("kind", ["stream", "datagram"])
    def test_removes_the_unix_socket_file_it_created(self, kind: str, short_tmp: Path) -> None:
        path = short_tmp / "sock"
        bound: BoundServer = (
            server(unix_stream(path), lambda request: None) if kind == "stream" else server(unix_datagram(path), lambda request: None)
        ).bind()
        assert path.is_socket()
        bound.close()
        assert not path.exists()

    def test_leaves_a_file_that_replaced_its_socket(self, short_tmp: Path) -> None:
        path = short_tmp / "sock"
        bound = server(unix_stream(path), echo).bind()
        path.unlink()
        path.write_text("someone else's")
        bound.close()
        assert path.read_text() == "someone else's"


@attrs.frozen
class _Observed:
    """Wraps a dispatcher; sets *closing* when the server starts closing the workers."""

    inner: Dispatcher
    closing: threading.Event

    def start(self, host: WorkerHost[_R], /) -> Workers[_R]:
        return _ObservedWorkers(self.inner.start(host), self.closing)


@attrs.define
class _ObservedWorkers(Generic[_R]):
    inner: Workers[_R]
    closing: threading.Event

    def dispatch(self, request: _R, /) -> None:
        self.inner.dispatch(request)

    def capacity(self) -> None:
        return None

    def service_actions(self) -> None:
        self.inner.service_actions()

    def close(self) -> None:
        self.closing.set()
        self.inner.close()


class TestBlockOnClose:
    def _blocked_server(
        self, block_on_close: bool
    ) -> tuple[Server[StreamConnection[IPAddress], IPAddress], threading.Event, threading.Event, threading.Event, threading.Event]:
        started, release, done, closing = threading.Event(), threading.Event(), threading.Event(), threading.Event()

        def slow(conn: StreamConnection) -> None:
            started.set()
            release.wait(TIMEOUT)
            done.set()

        dispatcher = _Observed(threaded(block_on_close=block_on_close), closing)
        return server(tcp("127.0.0.1", 0), slow, dispatcher=dispatcher), started, release, done, closing

    def test_close_waits_for_running_handlers(self) -> None:
        """With block_on_close=True, close() returns only after the handler has finished."""
        srv, started, release, done, closing = self._blocked_server(True)
        bound = srv.bind()
        with serving(bound, poll_interval=0.01), socket.create_connection(("127.0.0.1", bound.port), timeout=TIMEOUT):
            assert started.wait(TIMEOUT)
            closer = threading.Thread(target=bound.close)
            closer.start()
            assert closing.wait(TIMEOUT)
            # The handler cannot finish before `release`: a waiting close() is still running.
            assert closer.is_alive()
            assert not done.is_set()
            release.set()
            closer.join(TIMEOUT)
            assert not closer.is_alive()
            assert done.is_set()

    def test_close_does_not_wait_without_block_on_close(self) -> None:
        """With block_on_close=False, close() returns while the handler still runs."""
        srv, started, release, done, _ = self._blocked_server(False)
        bound = srv.bind()
        workers_before = set(threading.enumerate())
        with socket.create_connection(("127.0.0.1", bound.port), timeout=TIMEOUT):
            with serving(bound, poll_interval=0.01):
                assert started.wait(TIMEOUT)
            assert bound.closed
            assert not done.is_set()
            release.set()
        for thread in set(threading.enumerate()) - workers_before:
            thread.join(TIMEOUT)
        assert done.is_set()


class TestDatagramReplies:
    def test_reply_only_when_the_handler_replies(self) -> None:
        """Nothing goes back for a datagram the handler does not answer."""

        def ping_only(dg: Datagram) -> None:
            if dg.data.startswith(b"ping"):
                dg.reply(b"pong")

        with serving(server(udp("127.0.0.1", 0), ping_only).bind(), poll_interval=0.01) as bound:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.settimeout(TIMEOUT)
                client.sendto(b"nope", bound.address)
                client.sendto(b"ping", bound.address)
                # Loopback keeps datagram order: a reply to "nope" would come first.
                assert client.recv(64) == b"pong"


def test_each_request_is_closed_when_its_handler_returns() -> None:
    """handle_request() returns with the connection released: the fd count is flat."""
    with server(tcp("127.0.0.1", 0), echo, timeout=TIMEOUT).bind() as bound:
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", bound.port), timeout=TIMEOUT) as client:
                client.sendall(b"x")
                assert bound.handle_request()
                assert len(os.listdir("/proc/self/fd")) == before + 1  # only the client's end
                assert client.recv(16) == b"x"
                assert client.recv(16) == b""  # the server sent its FIN
