"""``handle_request`` on a composed server, one request per call -- through a first-request gate too.

A gate parks a connection on the loop until its first request is complete.
``handle_request`` used to know nothing of parked connections: with a gate
it raised ``RuntimeError`` ("the loop is not serving") and closed the server.
Now a call returns once the connection it took has passed the gate (and,
inline, been answered), and a connection still held when a call times out is
held for the next call.
"""

from __future__ import annotations

import socket

from servekit import IPAddress, StreamConnection, first_line, server, tcp, threaded
from servekit.testing import recv_line

TIMEOUT = 10.0

#: The server's handle_request timeout in the cases where it is meant to run out.
SHORT = 0.2

Conn = StreamConnection[IPAddress]


def upper(conn: Conn) -> None:
    conn.wfile.write(conn.rfile.readline().upper())


class TestThroughAGate:
    def test_each_call_serves_one_client_past_the_gate(self) -> None:
        with server(tcp("127.0.0.1", 0), upper, gate=first_line(timeout=5.0)).bind() as bound:
            for line in (b"one\n", b"two\n"):
                with socket.create_connection(bound.address, timeout=TIMEOUT) as client:
                    client.sendall(line)
                    assert bound.handle_request() is True
                    # Inline: answered and released before the call returned.
                    assert bound.connections() == []
                    assert recv_line(client) == line.upper()
                    assert client.recv(16) == b""
                assert not bound.closed
            stats = bound.stats()
            assert stats.connections_accepted_total == 2
            assert stats.handler_duration_seconds_count == 2

    def test_a_call_returns_once_the_gate_has_dispatched_to_a_worker(self) -> None:
        spec = server(tcp("127.0.0.1", 0), upper, dispatcher=threaded(), gate=first_line(timeout=5.0))
        with spec.bind() as bound, socket.create_connection(bound.address, timeout=TIMEOUT) as client:
            client.sendall(b"threaded\n")
            assert bound.handle_request() is True
            assert recv_line(client) == b"THREADED\n"

    def test_a_silent_client_is_held_for_the_next_call(self) -> None:
        spec = server(tcp("127.0.0.1", 0), upper, gate=first_line(timeout=5.0), timeout=SHORT)
        with spec.bind() as bound, socket.create_connection(bound.address, timeout=TIMEOUT) as client:
            assert bound.handle_request() is False  # taken, but still at the gate when the time ran out
            [held] = bound.connections()
            assert held.state == "parked"
            assert not bound.closed
            client.sendall(b"late\n")
            # The next call serves the held connection; it took no new one, so
            # it still waits out its timeout.
            assert bound.handle_request() is False
            assert recv_line(client) == b"LATE\n"
            assert bound.connections() == []
            assert bound.stats().handler_duration_seconds_count == 1

    def test_the_gate_timeout_runs_within_handle_request(self) -> None:
        """The gate's timer runs in a handle_request too: the silent connection is closed at the gate."""
        calls: list[Conn] = []
        spec = server(tcp("127.0.0.1", 0), calls.append, gate=first_line(timeout=SHORT), timeout=TIMEOUT)
        with spec.bind() as bound, socket.create_connection(bound.address, timeout=TIMEOUT) as client:
            assert bound.handle_request() is True  # settled: closed at the gate
            assert client.recv(16) == b""
            assert bound.connections() == []
            assert bound.stats().connections_gate_closed_total == 1
        assert calls == []
