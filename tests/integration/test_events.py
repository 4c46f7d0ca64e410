"""Lifecycle events, stats(), close_clients/abort_clients and drain events, on real loopback sockets.

Every server listens on 127.0.0.1 port 0 and runs under ``servekit.testing.serving``.
The tests synchronise on the events the server reports (``EventLog.wait_for``) and
on the clients' sockets, every wait bounded by TIMEOUT; none sleeps to wait for
the server.  (Some handlers sleep: that is their workload.)  The conftest's
``no_leaks`` fixture fails a test that leaves a thread, a child or an fd behind.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time

import pytest

from servekit import (
    Accepted,
    ChildFailed,
    ConnectionClosed,
    Datagram,
    Deadlines,
    Dispatcher,
    DrainFinished,
    DrainStarted,
    Event,
    HandlerFinished,
    HandlerStarted,
    IPAddress,
    Rejected,
    StreamConnection,
    first_line,
    forked,
    inline,
    pooled,
    server,
    tcp,
    threaded,
    udp,
)
from servekit.testing import EventLog, recv_line, serving, stream_exchange

TIMEOUT = 10.0

#: How many connections the plain-exchange tests make.
N = 20

Conn = StreamConnection[IPAddress]

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def echo(conn: Conn) -> None:
    """Echo lines until the client half-closes."""
    for line in conn.rfile:
        conn.wfile.write(line)


def read_all(sock: socket.socket) -> bytes:
    """Everything *sock* receives until EOF (each recv bounded by the socket's timeout)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def connect(address: IPAddress) -> socket.socket:
    return socket.create_connection(address, timeout=TIMEOUT)


class TestPlainExchange:
    @pytest.mark.parametrize("dispatcher", [threaded(), pooled(workers=4)], ids=["threaded", "pooled"])
    def test_one_event_of_each_kind_per_connection_and_stats_agree(self, dispatcher: Dispatcher) -> None:
        log = EventLog()
        spec = server(tcp("127.0.0.1", 0), echo, dispatcher=dispatcher, on_event=log)
        with serving(spec.bind(), poll_interval=0.05) as bound:
            clients = [connect(bound.address) for _ in range(N)]
            try:
                peers = {client.getsockname() for client in clients}
                for i, client in enumerate(clients):
                    client.sendall(b"line %d\n" % i)
                    client.shutdown(socket.SHUT_WR)
                answers = [read_all(client) for client in clients]
            finally:
                for client in clients:
                    client.close()
            assert answers == [b"line %d\n" % i for i in range(N)]
            closed = log.wait_for(ConnectionClosed, N, timeout=TIMEOUT)
            stats = bound.stats()
            text = stats.prometheus()

        assert len(closed) == N
        assert {c.reason for c in closed} == {"finished"}
        assert all(c.seconds >= 0 for c in closed)
        accepted = log.of(Accepted)
        started = log.of(HandlerStarted)
        finished = log.of(HandlerFinished)
        assert (len(accepted), len(started), len(finished)) == (N, N, N)
        assert all(f.exception is None and f.seconds >= 0 for f in finished)
        for events in (accepted, started, finished, closed):
            assert {e.peer for e in events} == peers
        assert log.of(Rejected) == []

        assert stats.connections_accepted_total == N
        assert stats.handler_duration_seconds_count == N
        assert stats.handler_duration_seconds_sum >= 0
        assert stats.connections_closed_total == N
        assert stats.connections_active == 0
        assert stats.handler_errors_total == 0
        assert stats.connections_rejected_total == 0
        assert dict(stats.rejected_by_reason) == {}

        lines = text.splitlines()
        assert f"servekit_connections_accepted_total {N}" in lines
        assert "# TYPE servekit_connections_active gauge" in lines
        assert "servekit_connections_active 0" in lines
        assert f"servekit_handler_duration_seconds_count {N}" in lines

    def test_a_handler_that_raises_is_reported_and_counted_and_the_server_goes_on(self) -> None:
        log = EventLog()
        raised: list[Exception] = []
        reported: list[Exception] = []

        def handler(conn: Conn) -> None:
            line = conn.rfile.readline()
            if line == b"boom\n":
                exc = ValueError("boom")
                raised.append(exc)
                raise exc
            conn.wfile.write(line)

        spec = server(
            tcp("127.0.0.1", 0),
            handler,
            dispatcher=threaded(),
            on_event=log,
            on_error=lambda request, exc: reported.append(exc),
        )
        with serving(spec.bind(), poll_interval=0.05) as bound:
            assert stream_exchange(bound.address, b"boom\n", timeout=TIMEOUT) == b""
            [failed] = log.wait_for(HandlerFinished, timeout=TIMEOUT)
            # The server keeps serving.
            assert stream_exchange(bound.address, b"still here\n", timeout=TIMEOUT) == b"still here\n"
            log.wait_for(ConnectionClosed, 2, timeout=TIMEOUT)
            stats = bound.stats()

        assert len(raised) == 1
        assert failed.exception is raised[0]
        assert reported == raised
        assert [f.exception for f in log.of(HandlerFinished)][1:] == [None]
        assert [c.reason for c in log.of(ConnectionClosed)] == ["finished", "finished"]
        assert stats.handler_errors_total == 1
        assert stats.handler_duration_seconds_count == 2
        assert stats.connections_accepted_total == 2
        assert stats.connections_active == 0


@needs_fork
@pytest.mark.fork
def pong(datagram: Datagram[IPAddress]) -> None:
    datagram.reply(datagram.data)


class TestDatagrams:
    @pytest.mark.parametrize("dispatcher", [inline(), pooled(workers=4)], ids=["inline", "pooled"])
    @pytest.mark.parametrize("with_events", [False, True], ids=["no-sink", "sink"])
    def test_each_datagram_is_counted_once_and_none_stays_active(self, dispatcher: Dispatcher, with_events: bool) -> None:
        log = EventLog()
        spec = server(udp("127.0.0.1", 0), pong, dispatcher=dispatcher, on_event=log if with_events else None)
        with serving(spec.bind(), poll_interval=0.05) as bound:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.settimeout(TIMEOUT)
                for k in range(N):
                    client.sendto(b"ping %d" % k, bound.address)
                    assert client.recv(64) == b"ping %d" % k
            if with_events:
                log.wait_for(ConnectionClosed, N, timeout=TIMEOUT)
                assert len(log.of(Accepted)) == len(log.of(HandlerFinished)) == N
        stats = bound.stats()  # the server has stopped: its books are final
        assert stats.connections_accepted_total == stats.connections_closed_total == N
        assert stats.handler_duration_seconds_count == N
        assert stats.connections_active == 0 and stats.handler_errors_total == 0
        assert stats.handler_duration_seconds_sum >= 0.0


class TestForked:
    """The parent keeps the books of its children: events and counts come from their reports."""

    def test_the_parent_sees_every_child_s_events_and_counts_them(self) -> None:
        log = EventLog()
        spec = server(tcp("127.0.0.1", 0), echo, dispatcher=forked(), on_event=log)
        with serving(spec.bind(), poll_interval=0.05) as bound:
            for i in range(5):
                assert stream_exchange(bound.address, b"child %d\n" % i, timeout=TIMEOUT) == b"child %d\n" % i
            closed = log.wait_for(ConnectionClosed, 5, timeout=TIMEOUT)
            # Every report is in before its ConnectionClosed: the counts are final.
            stats = bound.stats()

        assert [c.reason for c in closed] == ["finished"] * 5
        assert len(log.of(Accepted)) == 5
        assert len(log.of(HandlerStarted)) == 5
        finished = log.of(HandlerFinished)
        assert len(finished) == 5
        assert all(f.exception is None and f.seconds >= 0 for f in finished)
        assert stats.connections_accepted_total == 5
        assert stats.handler_duration_seconds_count == 5
        assert stats.connections_closed_total == 5
        assert stats.connections_active == 0
        assert stats.handler_errors_total == 0

    def test_a_child_whose_handler_raises_reports_a_child_failed(self) -> None:
        log = EventLog()

        def handler(conn: Conn) -> None:
            if conn.rfile.readline() == b"boom\n":
                raise KeyError("in the child")
            conn.wfile.write(b"ok\n")

        spec = server(
            tcp("127.0.0.1", 0), handler, dispatcher=forked(), on_event=log, on_error=lambda request, exc: None
        )
        with serving(spec.bind(), poll_interval=0.05) as bound:
            stream_exchange(bound.address, b"boom\n", timeout=TIMEOUT)
            [failed] = log.wait_for(HandlerFinished, timeout=TIMEOUT)
            assert stream_exchange(bound.address, b"fine\n", timeout=TIMEOUT) == b"ok\n"
            log.wait_for(ConnectionClosed, 2, timeout=TIMEOUT)
            stats = bound.stats()

        assert isinstance(failed.exception, ChildFailed)
        assert stats.handler_errors_total == 1
        assert stats.handler_duration_seconds_count == 2
        assert stats.connections_closed_total == 2
        assert stats.connections_active == 0

    def test_a_child_failed_names_the_exception_type(self) -> None:
        """HandlerFinished's docstring: for forked, the exception is "the exception's type name in a ChildFailed"."""
        log = EventLog()

        def handler(conn: Conn) -> None:
            conn.rfile.readline()
            raise KeyError("in the child")

        spec = server(
            tcp("127.0.0.1", 0), handler, dispatcher=forked(), on_event=log, on_error=lambda request, exc: None
        )
        with serving(spec.bind(), poll_interval=0.05) as bound:
            stream_exchange(bound.address, b"boom\n", timeout=TIMEOUT)
            [failed] = log.wait_for(HandlerFinished, timeout=TIMEOUT)
            log.wait_for(ConnectionClosed, timeout=TIMEOUT)

        assert isinstance(failed.exception, ChildFailed)
        assert "KeyError" in str(failed.exception), f"ChildFailed does not name the type: {failed.exception!r}"

    def test_a_killed_child_is_reported_with_its_status_and_counted_closed(self) -> None:
        log = EventLog()

        def handler(conn: Conn) -> None:
            if conn.rfile.readline() == b"die\n":
                os.kill(os.getpid(), signal.SIGKILL)
            conn.wfile.write(b"alive\n")

        spec = server(tcp("127.0.0.1", 0), handler, dispatcher=forked(), on_event=log)
        with serving(spec.bind(), poll_interval=0.05) as bound:
            assert stream_exchange(bound.address, b"die\n", timeout=TIMEOUT) == b""
            # Known only when the serve loop reaps the child (its service actions).
            [died] = log.wait_for(HandlerFinished, timeout=TIMEOUT)
            [closed] = log.wait_for(ConnectionClosed, timeout=TIMEOUT)
            stats = bound.stats()
            assert stream_exchange(bound.address, b"live\n", timeout=TIMEOUT) == b"alive\n"
            log.wait_for(ConnectionClosed, 2, timeout=TIMEOUT)

        assert isinstance(died.exception, ChildFailed)
        message = str(died.exception)
        assert "status" in message and str(int(signal.SIGKILL)) in message, message
        assert died.peer == closed.peer
        assert closed.reason == "finished"
        assert stats.connections_closed_total == 1
        assert stats.handler_duration_seconds_count == 1
        assert stats.connections_active == 0


class TestBytes:
    @pytest.mark.parametrize(
        "dispatcher",
        [threaded(), pytest.param(forked(), marks=[needs_fork, pytest.mark.fork])],
        ids=["threaded", "forked"],
    )
    def test_with_deadlines_closed_carries_the_bytes_in_and_out(self, dispatcher: Dispatcher) -> None:
        log = EventLog()

        def answer(conn: Conn) -> None:
            for line in conn.rfile:
                conn.wfile.write(b"> " + line)

        sent = b"hello\nworld, again\n"
        spec = server(
            tcp("127.0.0.1", 0), answer, dispatcher=dispatcher, deadlines=Deadlines(idle=5), on_event=log
        )
        with serving(spec.bind(), poll_interval=0.05) as bound:
            got = stream_exchange(bound.address, sent, timeout=TIMEOUT)
            [closed] = log.wait_for(ConnectionClosed, timeout=TIMEOUT)
        assert got == b"> hello\n> world, again\n"
        assert (closed.bytes_in, closed.bytes_out) == (len(sent), len(got))

    def test_without_deadlines_the_bytes_are_none(self) -> None:
        log = EventLog()
        spec = server(tcp("127.0.0.1", 0), echo, dispatcher=threaded(), on_event=log)
        with serving(spec.bind(), poll_interval=0.05) as bound:
            assert stream_exchange(bound.address, b"abc\n", timeout=TIMEOUT) == b"abc\n"
            [closed] = log.wait_for(ConnectionClosed, timeout=TIMEOUT)
        assert (closed.bytes_in, closed.bytes_out) == (None, None)


class TestRefusedAtTheDoor:
    def test_a_silent_client_is_closed_at_the_gate(self) -> None:
        log = EventLog()
        spec = server(tcp("127.0.0.1", 0), echo, dispatcher=threaded(), gate=first_line(timeout=0.3), on_event=log)
        with serving(spec.bind(), poll_interval=0.05) as bound:
            with connect(bound.address) as silent:
                peer = silent.getsockname()
                assert silent.recv(16) == b""  # the server closed it at the gate's timeout
            [closed] = log.wait_for(ConnectionClosed, timeout=TIMEOUT)
            stats = bound.stats()

        assert closed.peer == peer
        assert closed.reason == "gate"
        assert closed.seconds >= 0.25
        assert [a.peer for a in log.of(Accepted)] == [peer]
        assert log.of(HandlerStarted) == [] and log.of(HandlerFinished) == []
        assert stats.connections_gate_closed_total == 1
        assert stats.connections_closed_total == 1
        assert stats.connections_active == 0
        assert stats.handler_duration_seconds_count == 0

    def test_verify_refusing_is_a_rejected_event_and_no_accepted(self) -> None:
        log = EventLog()
        spec = server(tcp("127.0.0.1", 0), echo, dispatcher=threaded(), verify=lambda addr: False, on_event=log)
        with serving(spec.bind(), poll_interval=0.05) as bound:
            with connect(bound.address) as client:
                peer = client.getsockname()
                assert client.recv(16) == b""
            [rejected] = log.wait_for(Rejected, timeout=TIMEOUT)
            stats = bound.stats()

        assert rejected == Rejected(peer, "verify")
        assert log.of(Accepted) == [] and log.of(HandlerStarted) == [] and log.of(ConnectionClosed) == []
        assert dict(stats.rejected_by_reason) == {"verify": 1}
        assert stats.connections_rejected_total == 1
        assert stats.connections_accepted_total == 0
        assert stats.connections_active == 0
        assert 'servekit_connections_rejected_total{reason="verify"} 1' in stats.prometheus().splitlines()


def line_reader(conn: Conn) -> None:
    """Echo lines until the client (or the server) ends the connection."""
    while line := conn.rfile.readline():
        conn.wfile.write(line)


class TestCloseClients:
    def test_close_clients_closes_the_chosen_ones_only(self) -> None:
        log = EventLog()
        spec = server(tcp("127.0.0.1", 0), line_reader, dispatcher=threaded(), on_event=log)
        with serving(spec.bind(), poll_interval=0.05) as bound:
            clients = [connect(bound.address) for _ in range(3)]
            try:
                for i, client in enumerate(clients):  # each one is with its handler now
                    client.sendall(b"hi %d\n" % i)
                    assert recv_line(client) == b"hi %d\n" % i
                first_peer = clients[0].getsockname()

                chosen = bound.close_clients(lambda c: c.peer == first_peer)
                assert [(c.peer, c.state) for c in chosen] == [(first_peer, "running")]
                assert clients[0].recv(16) == b""
                for client in clients[1:]:  # the others are untouched
                    client.sendall(b"again\n")
                    assert recv_line(client) == b"again\n"
                [first] = log.wait_for(ConnectionClosed, timeout=TIMEOUT)
                assert (first.peer, first.reason) == (first_peer, "closed")

                rest = bound.close_clients()
                assert {c.peer for c in rest} == {c.getsockname() for c in clients[1:]}
                for client in clients[1:]:
                    assert client.recv(16) == b""
                closed = log.wait_for(ConnectionClosed, 3, timeout=TIMEOUT)
                assert bound.connections() == []
                # The server goes on serving.
                assert stream_exchange(bound.address, b"new\n", timeout=TIMEOUT) == b"new\n"
            finally:
                for client in clients:
                    client.close()
        assert [c.reason for c in closed] == ["closed"] * 3
        assert bound.stats().connections_closed_total == 4

    def test_abort_clients_resets_the_connection(self) -> None:
        log = EventLog()
        spec = server(tcp("127.0.0.1", 0), line_reader, dispatcher=threaded(), on_event=log)
        with serving(spec.bind(), poll_interval=0.05) as bound:
            with connect(bound.address) as aborted, connect(bound.address) as kept:
                for client in (aborted, kept):
                    client.sendall(b"hi\n")
                    assert recv_line(client) == b"hi\n"
                peer = aborted.getsockname()
                chosen = bound.abort_clients(lambda c: c.peer == peer)
                assert [c.peer for c in chosen] == [peer]
                [closed] = log.wait_for(ConnectionClosed, timeout=TIMEOUT)  # released: the reset is out
                with pytest.raises(ConnectionResetError):
                    aborted.recv(16)
                kept.sendall(b"still\n")
                assert recv_line(kept) == b"still\n"
        assert (closed.peer, closed.reason) == (peer, "aborted")

    def test_close_clients_closes_a_connection_held_at_the_gate(self) -> None:
        log = EventLog()
        spec = server(tcp("127.0.0.1", 0), line_reader, dispatcher=threaded(), gate=first_line(), on_event=log)
        with serving(spec.bind(), poll_interval=0.05) as bound:
            with connect(bound.address) as silent:
                peer = silent.getsockname()
                # Taken in order: once a later client is answered, the silent one is parked.
                with connect(bound.address) as later:
                    later_peer = later.getsockname()
                    later.sendall(b"go\n")
                    assert recv_line(later) == b"go\n"
                    chosen = bound.close_clients(lambda c: c.state == "parked")
                    assert [(c.peer, c.state) for c in chosen] == [(peer, "parked")]
                    assert silent.recv(16) == b""
                    [closed] = log.wait_for(ConnectionClosed, timeout=TIMEOUT)
                    later.sendall(b"on\n")
                    assert recv_line(later) == b"on\n"
            stats = bound.stats()
        assert (closed.peer, closed.reason) == (peer, "closed")
        assert [s.peer for s in log.of(HandlerStarted)] == [later_peer]
        assert stats.connections_gate_closed_total == 0


class TestDrainEvents:
    def test_drain_reports_its_start_and_its_end(self) -> None:
        log = EventLog()
        spec = server(tcp("127.0.0.1", 0), echo, dispatcher=threaded(), on_event=log)
        with serving(spec.bind(), poll_interval=0.05) as bound:
            assert stream_exchange(bound.address, b"x\n", timeout=TIMEOUT) == b"x\n"
            log.wait_for(ConnectionClosed, timeout=TIMEOUT)
            report = bound.drain(1.5)
        [started] = log.of(DrainStarted)
        [finished] = log.of(DrainFinished)
        assert started == DrainStarted(1.5)
        assert finished.report == report
        assert (report.finished, report.cut) == (1, 0)
        kinds = [type(e) for e in log.events]
        assert kinds.index(DrainStarted) < kinds.index(DrainFinished) == len(kinds) - 1

    @needs_fork
    @pytest.mark.fork
    def test_a_forked_drain_cuts_sleeping_children_and_reaps_them(self) -> None:
        log = EventLog()

        def sleeper(conn: Conn) -> None:
            conn.socket.sendall(b"%d\n" % os.getpid())
            time.sleep(5)  # the workload: a handler that does not touch its socket

        spec = server(tcp("127.0.0.1", 0), sleeper, dispatcher=forked(), on_event=log)
        with serving(spec.bind(), poll_interval=0.05) as bound:
            clients = [connect(bound.address) for _ in range(3)]
            try:
                pids = [int(recv_line(client)) for client in clients]  # each child is in its handler
                started = time.monotonic()
                report = bound.drain(0.5)
                took = time.monotonic() - started
                for client in clients:  # each child is gone: its end of the connection closed
                    assert read_all(client) == b""
                closed = log.wait_for(ConnectionClosed, 3, timeout=TIMEOUT)
            finally:
                for client in clients:
                    client.close()
            stats = bound.stats()

        assert report.cut == 3 and report.finished == 0
        assert took < 3.0, f"drain(0.5) took {took:.2f} s"
        assert [c.reason for c in closed] == ["cut"] * 3
        assert stats.connections_cut_total == 3
        assert stats.connections_active == 0
        for pid in pids:  # reaped by the workers: no zombie left
            with pytest.raises(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        assert len(log.of(DrainFinished)) == 1

    @needs_fork
    @pytest.mark.fork
    @pytest.mark.parametrize("poll_interval", [0.05, 3.0], ids=["poll-0.05", "poll-3"])
    def test_a_forked_drain_waits_for_children_and_returns_when_they_end(self, poll_interval: float) -> None:
        """The parent learns of each end through the children's report pipe: the drain returns soon.

        With a poll interval of 3 s the serve loop's periodic reaping comes too
        late to explain a quick return: only the report pipe can.
        """
        log = EventLog()

        def short(conn: Conn) -> None:
            conn.socket.sendall(b"started\n")
            time.sleep(0.3)  # the workload
            conn.socket.sendall(b"done\n")

        spec = server(tcp("127.0.0.1", 0), short, dispatcher=forked(), on_event=log)
        with serving(spec.bind(), poll_interval=poll_interval) as bound:
            clients = [connect(bound.address) for _ in range(3)]
            try:
                for client in clients:
                    assert recv_line(client) == b"started\n"
                started = time.monotonic()
                report = bound.drain(5)
                took = time.monotonic() - started
                answers = [read_all(client) for client in clients]
            finally:
                for client in clients:
                    client.close()
        assert answers == [b"done\n"] * 3
        assert report.finished >= 3 and report.cut == 0, report
        assert took < 2.0, f"drain(5) returned {took:.2f} s after it began; the handlers took 0.3 s"
        assert [c.reason for c in log.of(ConnectionClosed)] == ["finished"] * 3


class TestSinkFailures:
    def test_a_sink_that_raises_is_logged_and_the_server_goes_on(self, caplog: pytest.LogCaptureFixture) -> None:
        log = EventLog()

        def broken(event: Event) -> None:
            log(event)
            raise RuntimeError("the sink broke")

        spec = server(tcp("127.0.0.1", 0), echo, dispatcher=threaded(), on_event=broken)
        with caplog.at_level(logging.ERROR, logger="servekit.server"):
            with serving(spec.bind(), poll_interval=0.05) as bound:
                assert stream_exchange(bound.address, b"one\n", timeout=TIMEOUT) == b"one\n"
                assert stream_exchange(bound.address, b"two\n", timeout=TIMEOUT) == b"two\n"
                log.wait_for(ConnectionClosed, 2, timeout=TIMEOUT)
        failures = [r for r in caplog.records if r.name == "servekit.server" and "on_event failed" in r.getMessage()]
        # Accepted is emitted before the connection is dispatched: both are logged by now.
        assert sum("Accepted(" in r.getMessage() for r in failures) == 2
        assert all(r.exc_info is not None and isinstance(r.exc_info[1], RuntimeError) for r in failures)
        assert len(log.of(HandlerFinished)) == 2
