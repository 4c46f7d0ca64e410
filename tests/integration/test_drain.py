"""First-request gates and graceful drain on the composed server, in process, on loopback."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from servekit import (
    ConnectionClosed,
    IPAddress,
    StreamConnection,
    any_byte,
    at_least,
    first_line,
    pooled,
    server,
    tcp,
    threaded,
)
from servekit.testing import EventLog, recv_line, serving

TIMEOUT = 10.0

Conn = StreamConnection[IPAddress]


class TestGates:
    def test_first_line_holds_the_connection_until_the_line_is_complete(self) -> None:
        """No worker sees a partial line; the handler reads every byte, untouched."""
        seen: list[bytes] = []
        handled = threading.Event()

        def echo(conn: Conn) -> None:
            line = conn.rfile.readline()
            seen.append(line)
            conn.wfile.write(line)
            handled.set()

        with serving(server(tcp("127.0.0.1", 0), echo, gate=first_line()).bind(), poll_interval=0.05) as bound:
            with socket.create_connection(bound.address, timeout=TIMEOUT) as client:
                client.sendall(b"hel")
                # Another connection goes through while the first one trickles.
                with socket.create_connection(bound.address, timeout=TIMEOUT) as other:
                    other.sendall(b"other\n")
                    assert recv_line(other) == b"other\n"
                assert seen == [b"other\n"]  # the partial line reached no worker
                handled.clear()
                client.sendall(b"lo\n")
                assert recv_line(client) == b"hello\n"
            assert handled.wait(TIMEOUT)
        assert seen == [b"other\n", b"hello\n"]

    def test_a_silent_connection_is_closed_at_the_gate_timeout(self) -> None:
        calls: list[object] = []
        log = EventLog()
        spec = server(tcp("127.0.0.1", 0), calls.append, gate=any_byte(timeout=0.3), on_event=log)
        with serving(spec.bind(), poll_interval=5.0) as bound:  # the gate's timer, not the poll interval
            with socket.create_connection(bound.address, timeout=TIMEOUT) as client:
                started = time.monotonic()
                assert client.recv(16) == b""  # closed by the server
                assert time.monotonic() - started >= 0.25
            # The client sees the close before the server has kept its books:
            # they are kept once the connection's closed event is out.
            [closed] = log.wait_for(ConnectionClosed, timeout=TIMEOUT)
            assert closed.reason == "gate"
            assert bound.connections() == []
        assert calls == []

    def test_at_least_waits_for_that_many_bytes(self) -> None:
        got: list[bytes] = []

        def take(conn: Conn) -> None:
            got.append(conn.socket.recv(16, socket.MSG_PEEK))
            conn.wfile.write(conn.rfile.read(8))

        with serving(server(tcp("127.0.0.1", 0), take, gate=at_least(8)).bind(), poll_interval=0.05) as bound:
            with socket.create_connection(bound.address, timeout=TIMEOUT) as client:
                client.sendall(b"1234")
                client.sendall(b"5678")
                assert client.recv(16) == b"12345678"
        assert got == [b"12345678"]

    def test_gate_options_are_checked(self) -> None:
        with pytest.raises(ValueError, match=r"^size must be >= 1, got 0$"):
            at_least(0)
        with pytest.raises(ValueError, match=r"^timeout must be > 0 seconds, got 0$"):
            first_line(timeout=0)


class TestDrain:
    def test_in_flight_and_queued_connections_are_served_none_reset(self) -> None:
        """A full pool leaves clients in the backlog; the drain takes them all and waits for them."""
        release = threading.Event()
        running = threading.Semaphore(0)

        def slow(conn: Conn) -> None:
            line = conn.rfile.readline()
            running.release()
            release.wait(TIMEOUT)
            conn.wfile.write(line)

        spec = server(tcp("127.0.0.1", 0), slow, dispatcher=pooled(workers=2, queue=1))
        bound = spec.bind()
        thread = threading.Thread(target=bound.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        clients = []
        try:
            for i in range(6):
                client = socket.create_connection(bound.address, timeout=TIMEOUT)
                client.sendall(b"%d\n" % i)
                clients.append(client)
            for _ in range(2):  # two in the workers, one queued, three in the backlog
                assert running.acquire(timeout=TIMEOUT)
            reports = []
            drainer = threading.Thread(target=lambda: reports.append(bound.drain(TIMEOUT)))
            drainer.start()
            assert bound.draining.wait(TIMEOUT)
            release.set()
            drainer.join(TIMEOUT)
            thread.join(TIMEOUT)
            assert not thread.is_alive()
            assert [recv_line(client) for client in clients] == [b"%d\n" % i for i in range(6)]
        finally:
            release.set()
            for client in clients:
                client.close()
            bound.close()
        [report] = reports
        assert (report.finished, report.cut, report.cut_connections) == (6, 0, ())
        # The listener is closed: a new client is refused, not queued and reset later.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(bound.address, timeout=TIMEOUT).close()

    def test_the_deadline_cuts_what_is_left(self) -> None:
        """Handlers blocked on a read are cut at the deadline: their read ends, they finish."""
        reading = threading.Semaphore(0)
        ended: list[bytes] = []

        def wait_for_line(conn: Conn) -> None:
            reading.release()
            ended.append(conn.rfile.readline())  # the client never sends one

        spec = server(tcp("127.0.0.1", 0), wait_for_line, dispatcher=threaded())
        bound = spec.bind()
        thread = threading.Thread(target=bound.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        clients = [socket.create_connection(bound.address, timeout=TIMEOUT) for _ in range(3)]
        try:
            for _ in clients:
                assert reading.acquire(timeout=TIMEOUT)
            report = bound.drain(0.2)
            thread.join(TIMEOUT)
            assert not thread.is_alive()
            assert [client.recv(16) for client in clients] == [b"", b"", b""]
        finally:
            for client in clients:
                client.close()
            bound.close()
        assert report.cut == 3 and report.finished == 0
        assert {c.state for c in report.cut_connections} == {"running"}
        assert all(c.age >= 0.2 for c in report.cut_connections)
        assert ended == [b"", b"", b""]

    def test_connections_lists_what_the_server_holds(self) -> None:
        hold = threading.Event()
        inside = threading.Event()

        def held(conn: Conn) -> None:
            inside.set()
            hold.wait(TIMEOUT)

        spec = server(tcp("127.0.0.1", 0), held, dispatcher=threaded(), gate=first_line())
        with serving(spec.bind(), poll_interval=0.05) as bound:
            with socket.create_connection(bound.address, timeout=TIMEOUT) as running:
                running.sendall(b"go\n")
                assert inside.wait(TIMEOUT)
                with socket.create_connection(bound.address, timeout=TIMEOUT) as parked:
                    parked.sendall(b"no newline yet")
                    deadline = time.monotonic() + TIMEOUT
                    while len(bound.connections()) < 2 and time.monotonic() < deadline:
                        threading.Event().wait(0.01)
                    states = sorted((str(c.peer), c.state) for c in bound.connections())
                    assert states == sorted(
                        [(str(running.getsockname()), "running"), (str(parked.getsockname()), "parked")]
                    )
                    hold.set()
