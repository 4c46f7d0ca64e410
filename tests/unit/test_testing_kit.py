"""servekit.testing's handler driver and event log: socketpairs and threads, every wait bounded."""

from __future__ import annotations

import os
import re
import socket
import threading
import time

import pytest
from typing_extensions import assert_type

from servekit import DeadlineExceeded, Deadlines, StreamConnection
from servekit.events import (
    Accepted,
    ConnectionClosed,
    DrainStarted,
    HandlerFinished,
    HandlerStarted,
    Rejected,
)
from servekit.testing import EventLog, drive, driving, recv_line, serving, stream_exchange

TIMEOUT = 10.0


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0


def echo(conn: StreamConnection) -> None:
    """Write every line back until the peer half-closes."""
    for line in conn.rfile:
        conn.wfile.write(line)


def shout(conn: StreamConnection) -> None:
    """A line protocol: answer each line in capitals, ``bye`` ends the conversation."""
    for line in conn.rfile:
        if line == b"bye\n":
            conn.wfile.write(b"BYE\n")
            return
        conn.wfile.write(line.upper())


class Boom(Exception):
    pass


class TestDrive:
    def test_echo(self) -> None:
        """drive() sends the data, half-closes, and returns all the handler wrote."""
        assert drive(echo, b"one\ntwo\n") == b"one\ntwo\n"

    def test_empty_input(self) -> None:
        """With no data the handler reads EOF at once and its answer is empty."""
        assert drive(echo, b"") == b""

    def test_a_handler_that_closes_without_reading_still_answers(self) -> None:
        """A handler that hangs up early: what it wrote comes back, no error."""

        def early(conn: StreamConnection) -> None:
            conn.wfile.write(b"no thanks\n")
            conn.close()

        assert drive(early, b"x" * 1_000_000) == b"no thanks\n"

    def test_the_peer_and_the_connection(self) -> None:
        """The handler gets a StreamConnection from *peer*, closed after the block."""
        seen: list[StreamConnection] = []

        def remember(conn: StreamConnection) -> None:
            seen.append(conn)
            conn.wfile.write(repr(conn.client_address).encode())

        assert drive(remember, b"", peer="somebody") == b"'somebody'"
        assert seen[0].socket.fileno() == -1

    def test_no_thread_or_fd_is_left(self) -> None:
        """Threads and fds are back to where they started, failing handler or not."""
        threads, fds = threading.active_count(), _fd_count()
        for _ in range(5):
            assert drive(echo, b"x\n") == b"x\n"
            with pytest.raises(Boom):
                drive(_boom, b"")
        assert threading.active_count() == threads
        assert _fd_count() == fds


def _boom(conn: StreamConnection) -> None:
    conn.rfile.read()
    raise Boom("handler failed")


class TestDriving:
    def test_a_conversation(self) -> None:
        """The block talks to the handler one line at a time."""
        with driving(shout) as client:
            assert client.gettimeout() == TIMEOUT
            client.sendall(b"hello\n")
            assert recv_line(client) == b"HELLO\n"
            client.sendall(b"again\n")
            assert recv_line(client) == b"AGAIN\n"
            client.sendall(b"bye\n")
            assert recv_line(client) == b"BYE\n"

    def test_the_connection_is_closed_on_leaving(self) -> None:
        """After the block the handler's socket is closed and the handler thread is gone."""
        conns: list[StreamConnection] = []

        def keep(conn: StreamConnection) -> None:
            conns.append(conn)
            conn.rfile.read()

        with driving(keep) as client:
            client.sendall(b"ignored")
        assert conns[0].socket.fileno() == -1
        assert client.fileno() == -1
        assert not any(t.name.startswith("servekit driving") for t in threading.enumerate())

    def test_the_client_reads_eof_when_the_handler_returns(self) -> None:
        """As in a server, the connection is released when the handler returns."""
        with driving(shout) as client:
            client.sendall(b"bye\n")
            assert recv_line(client) == b"BYE\n"
            assert client.recv(16) == b""

    def test_the_thread_is_named_after_the_handler_and_peer(self) -> None:
        """A stuck test's thread dump says which handler it was."""
        names: list[str] = []

        def named(conn: StreamConnection) -> None:
            names.append(threading.current_thread().name)

        with driving(named, peer="p1"):
            pass
        assert names == ["servekit driving TestDriving.test_the_thread_is_named_after_the_handler_and_peer.<locals>.named for 'p1'"]

    def test_the_handler_exception_is_raised_as_it_is(self) -> None:
        """The handler's own exception, with its traceback, reaches the test's thread."""
        with pytest.raises(Boom, match="handler failed") as info:  # noqa: PT012
            with driving(_boom) as client:
                client.sendall(b"data")
        assert any(entry.name == "_boom" for entry in info.traceback)

    def test_the_block_exception_takes_precedence(self) -> None:
        """An error in the block is not masked by the handler's."""
        with pytest.raises(KeyError) as info:  # noqa: PT012
            with driving(_boom):
                raise KeyError("from the block")
        notes = getattr(info.value, "__notes__", [])
        assert notes == ["(the handler raised too: Boom('handler failed'))"]

    def test_the_block_exception_cuts_the_handler_off(self) -> None:
        """A failing block does not wait for a handler still reading."""
        started = time.monotonic()
        with pytest.raises(ValueError, match="block"):  # noqa: PT012
            with driving(echo, timeout=TIMEOUT):
                raise ValueError("block")
        assert time.monotonic() - started < TIMEOUT / 2

    def test_a_handler_that_never_ends(self) -> None:
        """A handler still busy *timeout* after the block is cut off and reported, with nothing left open."""
        threads, fds = threading.active_count(), _fd_count()

        def flood(conn: StreamConnection) -> None:
            while True:  # the client never reads: this blocks once the buffers are full
                conn.wfile.write(b"x" * 65536)

        started = time.monotonic()
        with pytest.raises(RuntimeError, match=r"^handler .*flood for 'test-peer' did not return within 1\.0 s") as info:  # noqa: PT012
            with driving(flood, timeout=1.0) as client:
                client.sendall(b"go\n")
        elapsed = time.monotonic() - started
        assert 1.0 <= elapsed < TIMEOUT
        # The shutdown that unblocked it made its write fail.
        assert isinstance(info.value.__cause__, BrokenPipeError)
        assert threading.active_count() == threads
        assert _fd_count() == fds

    def test_deadlines_apply(self) -> None:
        """With Deadlines(idle=0.2) a silent client makes the handler's read raise DeadlineExceeded."""
        cut: list[DeadlineExceeded] = []
        done = threading.Event()

        def patient(conn: StreamConnection) -> None:
            try:
                conn.rfile.readline()
            except DeadlineExceeded as exc:
                cut.append(exc)
                assert conn.deadline_exceeded is exc
            finally:
                done.set()

        started = time.monotonic()
        with driving(patient, deadlines=Deadlines(idle=0.2)):
            assert done.wait(TIMEOUT)  # the client stays silent until the handler is cut
        assert [(exc.which, exc.seconds) for exc in cut] == [("idle", 0.2)]
        assert 0.2 <= time.monotonic() - started < TIMEOUT

    def test_without_deadlines_the_socket_blocks(self) -> None:
        """No deadlines: the handler's socket has no timeout of its own."""
        timeouts: list[float | None] = []
        drive(lambda conn: timeouts.append(conn.socket.gettimeout()), b"")
        assert timeouts == [None]


class TestEventLog:
    def test_records_in_order(self) -> None:
        """Events are kept oldest first; events is a copy."""
        log = EventLog()
        log(Accepted("a", "tcp"))
        log(HandlerStarted("a"))
        snapshot = log.events
        snapshot.clear()
        assert log.events == [Accepted("a", "tcp"), HandlerStarted("a")]
        assert len(log) == 2

    def test_of_filters_and_is_typed(self) -> None:
        """of() keeps one type, and the type checker knows which."""
        log = EventLog()
        log(Accepted("a", "tcp"))
        log(Rejected("b", "verify"))
        log(Rejected("c", "per_peer"))
        rejected = log.of(Rejected)
        assert_type(rejected, list[Rejected])
        assert [r.reason for r in rejected] == ["verify", "per_peer"]
        assert log.of(DrainStarted) == []

    def test_many_threads(self) -> None:
        """Events from several threads are all recorded, and a waiter sees them as they come."""
        log = EventLog()
        go = threading.Event()

        def record(n: int) -> None:
            assert go.wait(TIMEOUT)
            for i in range(100):
                log(HandlerStarted((n, i)))

        threads = [threading.Thread(target=record, args=(n,), name=f"recorder {n}") for n in range(8)]
        for thread in threads:
            thread.start()
        go.set()
        assert len(log.wait_for(HandlerStarted, 800, timeout=TIMEOUT)) == 800
        for thread in threads:
            thread.join(TIMEOUT)
        peers = [e.peer for e in log.of(HandlerStarted)]
        assert len(peers) == 800
        assert set(peers) == {(n, i) for n in range(8) for i in range(100)}

    def test_wait_for_with_count_and_where(self) -> None:
        """wait_for blocks until enough matching events are there, then returns them all."""
        log = EventLog()
        log(Rejected("x", "verify"))

        def later() -> None:
            for peer, reason in (("y", "verify"), ("z", "per_peer"), ("w", "per_peer")):
                log(Rejected(peer, reason))

        thread = threading.Thread(target=later, name="later events")
        thread.start()
        per_peer = log.wait_for(Rejected, 2, where=lambda e: e.reason == "per_peer", timeout=TIMEOUT)
        thread.join(TIMEOUT)
        assert_type(per_peer, list[Rejected])
        assert [e.peer for e in per_peer] == ["z", "w"]
        # Events recorded before the call count.
        assert log.wait_for(Rejected, 4, timeout=0.0) == log.of(Rejected)

    def test_wait_for_times_out_with_what_it_saw(self) -> None:
        """The TimeoutError names the kind, the count and what the log holds."""
        log = EventLog()
        log(Accepted("a", "tcp"))
        log(Accepted("b", "tcp"))
        log(Rejected("c", "verify"))
        started = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            log.wait_for(Rejected, 2, timeout=0.1)
        assert 0.1 <= time.monotonic() - started < TIMEOUT
        assert str(info.value) == (
            "waited 0.1 s for 2 Rejected events, saw 1 (Rejected(peer='c', reason='verify'));"
            " the log holds 3 events (Accepted 2, Rejected 1)"
        )
        with pytest.raises(TimeoutError, match=re.escape("for 1 HandlerFinished event matching where, saw 0;")):
            log.wait_for(HandlerFinished, where=lambda e: e.exception is None, timeout=0.0)

    def test_clear_and_repr(self) -> None:
        """clear() forgets; the repr counts events per kind."""
        log = EventLog()
        assert repr(log) == "<EventLog of 0 events>"
        log(Accepted("a", "tcp"))
        log(HandlerStarted("a"))
        log(HandlerStarted("b"))
        assert repr(log) == "<EventLog of 3 events (Accepted 1, HandlerStarted 2)>"
        log.clear()
        assert log.events == [] and len(log) == 0

    def test_a_cleared_log_is_waited_on_afresh(self) -> None:
        """An event cleared while a wait goes on does not count."""
        log = EventLog()
        log(HandlerStarted("old"))
        log.clear()
        log(HandlerStarted("new"))
        assert log.wait_for(HandlerStarted, timeout=0.0) == [HandlerStarted("new")]

    def test_on_a_composed_server(self) -> None:
        """Passed as on_event, the log sees a connection's life, in order."""
        from servekit import server, tcp

        log = EventLog()
        with serving(server(tcp("127.0.0.1", 0), echo, on_event=log).bind(), poll_interval=0.01) as bound:
            assert stream_exchange(bound.address, b"hi\n") == b"hi\n"
            [closed] = log.wait_for(ConnectionClosed, timeout=TIMEOUT)
        assert closed.reason == "finished"
        kinds = [type(e) for e in log.events]
        assert kinds[:4] == [Accepted, HandlerStarted, HandlerFinished, ConnectionClosed]
        [finished] = log.of(HandlerFinished)
        assert finished.exception is None
        assert finished.peer == closed.peer == log.of(Accepted)[0].peer


def test_the_kit_exports_its_names() -> None:
    import servekit.testing

    for name in ("EventLog", "drive", "driving"):
        assert name in servekit.testing.__all__
    assert list(servekit.testing.__all__) == sorted(servekit.testing.__all__)


def test_socketpair_peer_is_not_a_real_address() -> None:
    """The client socket is an AF_UNIX socketpair end, as the docs say."""
    with driving(echo) as client:
        assert client.family == socket.AF_UNIX
