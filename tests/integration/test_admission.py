"""Admission control (servekit.Admission) on real loopback sockets: pause, busy, per peer, bad options.

Handlers are held on threading.Events the test sets; the tests wait on the
events the server reports (EventLog.wait_for) and on the clients' sockets,
every wait bounded.  The one deliberate timeout -- a client that must get no
answer while the server is full -- is the expected outcome of that check, not
a wait for the server.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import TypeVar

import pytest

from servekit import (
    Accepted,
    Admission,
    ConnectionClosed,
    HandlerStarted,
    IPAddress,
    Rejected,
    StreamConnection,
    first_line,
    server,
    tcp,
    threaded,
)
from servekit.abc import WorkerHost, Workers
from servekit.testing import EventLog, recv_line, serving, stream_exchange

_R = TypeVar("_R")

TIMEOUT = 10.0

#: How long a client waits for the answer it must not get.
NO_ANSWER = 0.3

Conn = StreamConnection[IPAddress]


def connect(address: IPAddress) -> socket.socket:
    return socket.create_connection(address, timeout=TIMEOUT)


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


class Held:
    """A handler that reads a line, waits until the test lets that line go, and echoes it.

    A gate may be opened before the handler gets to it (``let_go``, ``let_all_go``):
    the test does not know when a handler has read its line.

    It tracks how many handlers run at once, and the most ever.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gates: dict[bytes, threading.Event] = {}
        self._all_go = False  # let_all_go was called: every gate, even one made later, is open
        self.running = 0
        self.most = 0

    def gate(self, line: bytes) -> threading.Event:
        with self._lock:
            gate = self._gates.setdefault(line, threading.Event())
            if self._all_go:
                gate.set()
            return gate

    def let_go(self, line: bytes) -> None:
        self.gate(line).set()

    def let_all_go(self) -> None:
        with self._lock:
            self._all_go = True
            gates = list(self._gates.values())
        for gate in gates:
            gate.set()

    def __call__(self, conn: Conn) -> None:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            line = conn.rfile.readline()
            if line.startswith(b"hold"):
                assert self.gate(line).wait(TIMEOUT), f"never let go: {line!r}"
            conn.wfile.write(line)
        finally:
            with self._lock:
                self.running -= 1


class TestPause:
    def test_at_the_limit_the_server_stops_accepting_until_one_ends(self) -> None:
        log = EventLog()
        handler = Held()
        spec = server(
            tcp("127.0.0.1", 0), handler, dispatcher=threaded(), admission=Admission(max_connections=2), on_event=log
        )
        with serving(spec.bind(), poll_interval=0.05) as bound:
            clients: list[socket.socket] = []
            try:
                for i in (1, 2):
                    client = connect(bound.address)
                    clients.append(client)
                    client.sendall(b"hold %d\n" % i)
                log.wait_for(HandlerStarted, 2, timeout=TIMEOUT)

                third = connect(bound.address)  # the kernel's backlog takes it
                clients.append(third)
                third.sendall(b"three\n")
                third.settimeout(NO_ANSWER)
                with pytest.raises(TimeoutError):
                    third.recv(16)  # no answer while two are held: the expected outcome
                third.settimeout(TIMEOUT)
                assert len(log.of(Accepted)) == 2
                assert bound.stats().connections_accepted_total == 2
                assert len(bound.connections()) == 2

                handler.let_go(b"hold 1\n")
                assert recv_line(clients[0]) == b"hold 1\n"
                assert recv_line(third) == b"three\n"  # accepted once one ended
                log.wait_for(Accepted, 3, timeout=TIMEOUT)
                handler.let_go(b"hold 2\n")
                assert recv_line(clients[1]) == b"hold 2\n"
                log.wait_for(ConnectionClosed, 3, timeout=TIMEOUT)
            finally:
                handler.let_all_go()
                for client in clients:
                    client.close()
            stats = bound.stats()

        assert handler.most <= 2
        assert log.of(Rejected) == []
        assert stats.connections_rejected_total == 0
        assert stats.connections_accepted_total == 3
        assert stats.connections_active == 0


class TestBusy:
    def test_over_the_limit_with_busy_the_client_reads_busy_then_eof(self) -> None:
        log = EventLog()
        handler = Held()

        def busy(sock: socket.socket, peer: object) -> None:
            sock.sendall(b"busy\r\n")

        spec = server(
            tcp("127.0.0.1", 0),
            handler,
            dispatcher=threaded(),
            admission=Admission(max_connections=1, busy=busy),
            on_event=log,
        )
        with serving(spec.bind(), poll_interval=0.05) as bound:
            with connect(bound.address) as held:
                held.sendall(b"hold\n")
                log.wait_for(HandlerStarted, timeout=TIMEOUT)
                try:
                    with connect(bound.address) as refused:
                        peer = refused.getsockname()
                        assert read_all(refused) == b"busy\r\n"
                    [rejected] = log.wait_for(Rejected, timeout=TIMEOUT)
                finally:
                    handler.let_all_go()
                assert recv_line(held) == b"hold\n"
            log.wait_for(ConnectionClosed, timeout=TIMEOUT)
            stats = bound.stats()

        assert rejected == Rejected(peer, "max_connections")
        assert dict(stats.rejected_by_reason) == {"max_connections": 1}
        assert stats.connections_rejected_total == 1
        assert stats.connections_accepted_total == 1
        assert peer not in {a.peer for a in log.of(Accepted)}
        assert len(log.of(Accepted)) == 1
        assert handler.most == 1


class TestPerPeer:
    def test_a_second_connection_from_the_same_host_is_refused_until_the_first_ends(self) -> None:
        log = EventLog()
        handler = Held()
        spec = server(
            tcp("127.0.0.1", 0), handler, dispatcher=threaded(), admission=Admission(per_peer=1), on_event=log
        )
        with serving(spec.bind(), poll_interval=0.05) as bound:
            with connect(bound.address) as first:
                first_peer = first.getsockname()
                first.sendall(b"hold\n")
                log.wait_for(HandlerStarted, timeout=TIMEOUT)
                try:
                    with connect(bound.address) as second:
                        second_peer = second.getsockname()
                        try:
                            answer = second.recv(16)
                        except ConnectionResetError:
                            answer = b""
                        assert answer == b""  # closed at once, unanswered
                    [rejected] = log.wait_for(Rejected, timeout=TIMEOUT)
                finally:
                    handler.let_all_go()
                assert recv_line(first) == b"hold\n"
            # Once the first is released, the host's count is back down.
            [closed] = log.wait_for(ConnectionClosed, timeout=TIMEOUT)
            assert closed.peer == first_peer
            assert stream_exchange(bound.address, b"again\n", timeout=TIMEOUT) == b"again\n"
            log.wait_for(ConnectionClosed, 2, timeout=TIMEOUT)
            stats = bound.stats()

        assert rejected == Rejected(second_peer, "per_peer")
        assert dict(stats.rejected_by_reason) == {"per_peer": 1}
        assert stats.connections_accepted_total == 2
        assert second_peer not in {a.peer for a in log.of(Accepted)}
        assert len(log.of(Rejected)) == 1


class TestOptions:
    def test_max_connections_must_be_at_least_one(self) -> None:
        with pytest.raises(ValueError, match=r"max_connections.*\b0\b"):
            Admission(max_connections=0)

    def test_per_peer_must_be_an_int(self) -> None:
        with pytest.raises(TypeError, match=r"per_peer.*'x'"):
            Admission(per_peer="x")  # type: ignore[arg-type]

    def test_busy_must_be_callable(self) -> None:
        with pytest.raises(TypeError, match=r"busy.*\b3\b"):
            Admission(busy=3)  # type: ignore[arg-type]

    def test_a_bool_is_not_a_count(self) -> None:
        with pytest.raises(TypeError, match=r"max_connections.*True"):
            Admission(max_connections=True)


class TestStartFailures:
    """A server whose workers cannot start leaves nothing behind: listeners, admission fds, workers."""

    class Refusing:
        """A dispatcher whose start raises (no thread left, say)."""

        def start(self, host: WorkerHost[_R], /) -> Workers[_R]:
            raise RuntimeError("cannot start workers")

    @staticmethod
    def open_fds() -> set[str]:
        return set(os.listdir("/proc/self/fd"))

    def test_a_dispatcher_whose_start_raises_leaks_no_fd(self) -> None:
        before = self.open_fds()
        spec = server(
            tcp("127.0.0.1", 0), lambda conn: None, dispatcher=self.Refusing(), admission=Admission(max_connections=2)
        )
        for _ in range(3):
            with pytest.raises(RuntimeError, match="cannot start workers"):
                spec.bind()
        assert self.open_fds() - before == set()

    def test_workers_with_a_wrong_declaration_are_refused_and_closed(self) -> None:
        closed: list[bool] = []

        class Declaring:
            traits = "processes"

            def dispatch(self, request: object, /) -> None: ...

            def capacity(self) -> None:
                return None

            def service_actions(self) -> None: ...

            def close(self) -> None:
                closed.append(True)

        class Dispatching:
            def start(self, host: WorkerHost[_R], /) -> Workers[_R]:
                return Declaring()

        before = self.open_fds()
        with pytest.raises(TypeError, match="Declaring.traits must be a servekit.abc.WorkerTraits or absent, not str"):
            server(tcp("127.0.0.1", 0), lambda conn: None, dispatcher=Dispatching()).bind()
        assert closed == [True]
        assert self.open_fds() - before == set()


class TestGateAndLimit:
    def test_what_passed_the_gate_is_served_when_the_server_holds_its_limit(self) -> None:
        """A connection past the gate was admitted already: the limit holds back the intake, not it."""

        def echo(conn: Conn) -> None:
            conn.wfile.write(conn.rfile.readline())

        spec = server(
            tcp("127.0.0.1", 0),
            echo,
            dispatcher=threaded(),
            gate=first_line(timeout=TIMEOUT),
            admission=Admission(max_connections=1),
        )
        with serving(spec.bind(), poll_interval=0.05) as bound:
            for _ in range(2):  # the limit held, then free again
                assert stream_exchange(bound.address, b"through\n", timeout=TIMEOUT) == b"through\n"
