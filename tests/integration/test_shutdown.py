"""shutdown(): immediate, harmless when idle, callable from a handler; close() stops a loop."""

from __future__ import annotations

import socket
import threading

from servekit import BoundServer, StreamConnection, server, tcp
from servekit.testing import serving, stream_exchange

TIMEOUT = 10.0


def echo(conn: StreamConnection) -> None:
    conn.socket.sendall(conn.socket.recv(1024))


def _start(bound: BoundServer, poll_interval: float) -> threading.Thread:
    thread = threading.Thread(target=bound.serve_forever, kwargs={"poll_interval": poll_interval})
    thread.start()
    return thread


class TestShutdown:
    def test_returns_at_once_with_a_long_poll_interval(self) -> None:
        """With poll_interval=60 the loop still stops as soon as shutdown() is called."""
        with server(tcp("127.0.0.1", 0), echo).bind() as bound:
            thread = _start(bound, 60)
            # A served request proves the loop is inside its wait.
            assert stream_exchange(bound.address, b"x", timeout=TIMEOUT) == b"x"
            done = threading.Event()

            def stop() -> None:
                bound.shutdown()
                done.set()

            stopper = threading.Thread(target=stop)
            stopper.start()
            # Far less than the 60 s poll interval: only the wake-up can make it.
            assert done.wait(TIMEOUT), "shutdown() waited for the poll interval"
            stopper.join(TIMEOUT)
            thread.join(TIMEOUT)
            assert not thread.is_alive()

    def test_when_idle_neither_blocks_nor_poisons_the_next_loop(self) -> None:
        """shutdown() with nothing serving returns, and the next serve_forever still serves."""
        with server(tcp("127.0.0.1", 0), echo).bind() as bound:
            caller = threading.Thread(target=bound.shutdown)
            caller.start()
            caller.join(TIMEOUT)
            assert not caller.is_alive(), "shutdown() with nothing serving deadlocked"
            bound.shutdown()
            with serving(bound, poll_interval=60):
                for payload in (b"one", b"two"):
                    assert stream_exchange(bound.address, payload, timeout=TIMEOUT) == payload

    def test_stops_a_thread_that_has_not_reached_the_loop_yet(self) -> None:
        """start() then shutdown() at once -- the classic race -- stops the new thread."""
        for _ in range(20):
            with server(tcp("127.0.0.1", 0), echo).bind() as bound:
                thread = _start(bound, 60)
                bound.shutdown()
                thread.join(TIMEOUT)
                assert not thread.is_alive()

    def test_inline_handler_may_call_shutdown(self) -> None:
        """A handler in the serving thread can stop its own server without deadlock."""
        holder: list[BoundServer] = []

        def stop_server(conn: StreamConnection) -> None:
            holder[0].shutdown()
            conn.socket.sendall(b"bye")

        with server(tcp("127.0.0.1", 0), stop_server).bind() as bound:
            holder.append(bound)
            thread = _start(bound, 60)
            assert stream_exchange(bound.address, b"", timeout=TIMEOUT) == b"bye"
            thread.join(TIMEOUT)
            assert not thread.is_alive()
            assert not bound.closed

    def test_close_from_another_thread_stops_the_loop(self) -> None:
        """close() while serve_forever runs elsewhere stops it and releases the socket."""
        bound = server(tcp("127.0.0.1", 0), echo).bind()
        thread = _start(bound, 60)
        assert stream_exchange(bound.address, b"x", timeout=TIMEOUT) == b"x"
        bound.close()
        thread.join(TIMEOUT)
        assert not thread.is_alive()
        assert bound.fileno() == -1

    def test_service_actions_run_every_poll_interval(self) -> None:
        """The service_actions callable runs while no request arrives."""
        calls = threading.Semaphore(0)
        with serving(server(tcp("127.0.0.1", 0), echo, service_actions=calls.release).bind(), poll_interval=0.01):
            for _ in range(3):
                assert calls.acquire(timeout=TIMEOUT)

    def test_second_serve_forever_is_refused(self) -> None:
        """Two loops on one server would race for requests: the second is an error."""
        with serving(server(tcp("127.0.0.1", 0), echo).bind(), poll_interval=60) as bound:
            assert stream_exchange(bound.address, b"x", timeout=TIMEOUT) == b"x"
            try:
                bound.serve_forever()
            except RuntimeError as exc:
                assert "already running" in str(exc)
            else:
                raise AssertionError("a second serve_forever() was allowed")


class TestHandleRequest:
    def test_handles_one_request(self) -> None:
        """handle_request() serves exactly one request and says so."""
        with server(tcp("127.0.0.1", 0), echo, timeout=TIMEOUT).bind() as bound:
            with socket.create_connection(("127.0.0.1", bound.port), timeout=TIMEOUT) as client:
                client.sendall(b"one")
                assert bound.handle_request() is True
                assert client.recv(16) == b"one"

    def test_times_out(self) -> None:
        """With no client, handle_request() returns False once the timeout passes."""
        with server(tcp("127.0.0.1", 0), echo, timeout=0.0).bind() as bound:
            assert bound.handle_request() is False
