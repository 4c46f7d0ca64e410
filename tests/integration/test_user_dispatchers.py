"""A dispatcher written to ``servekit.abc`` alone gets the books, events, drain and stats of the built-in one.

The dispatchers at the top of this file are written as a user writes them:
the documented calls only, nothing declared, and nothing of servekit used but
the protocol types their annotations name (``servekit.abc``).  Each scenario here
runs once with the built-in dispatcher of the kind and once with the user's,
on real loopback connections and real forks, and the two runs must agree.
Waits are bounded (``EventLog.wait_for``, socket timeouts); the handlers' own
sleeps are their workload.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import Generic, TypeVar

import pytest

from servekit import (
    ChildFailed,
    ConnectionClosed,
    Dispatcher,
    DrainReport,
    Event,
    HandlerFinished,
    IPAddress,
    Stats,
    StreamConnection,
    forked,
    inline,
    server,
    tcp,
)
from servekit.abc import WorkerHost, Workers
from servekit.testing import EventLog, recv_line, serving, stream_exchange


TIMEOUT = 10.0

# -- dispatchers as a user writes them -------------------------------------------------------

R = TypeVar("R")


class UserForking:
    """A process per request: ``close_inherited()`` and ``run()`` in the child, ``discard()`` in the parent.

    The workers reap their own children (``waitpid`` on each of their pids)
    and never tell the host: the server learns of the children's ends from
    their reports alone.
    """

    def start(self, host: WorkerHost[R], /) -> Workers[R]:
        return UserForkingWorkers(host)


class UserForkingWorkers(Generic[R]):
    def __init__(self, host: WorkerHost[R]) -> None:
        self.host = host
        self.pids: set[int] = set()

    def dispatch(self, request: R, /) -> None:
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                self.host.close_inherited()
                self.host.run(request)
                status = 0
            finally:
                os._exit(status)
        self.pids.add(pid)
        self.host.discard(request)

    def capacity(self) -> Sequence[int] | None:
        return None

    def service_actions(self) -> None:
        for pid in list(self.pids):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                self.pids.discard(pid)

    def close(self) -> None:
        for pid in list(self.pids):
            os.waitpid(pid, 0)
            self.pids.discard(pid)


class UserInline:
    """Each request handled at once, in the serving thread; nothing declared."""

    def start(self, host: WorkerHost[R], /) -> Workers[R]:
        return UserInlineWorkers(host)


class UserInlineWorkers(Generic[R]):
    def __init__(self, host: WorkerHost[R]) -> None:
        self.host = host

    def dispatch(self, request: R, /) -> None:
        self.host.run(request)

    def capacity(self) -> Sequence[int] | None:
        return None

    def service_actions(self) -> None:
        pass

    def close(self) -> None:
        pass


# -- the scenarios ---------------------------------------------------------------------------

Conn = StreamConnection[IPAddress]

pytestmark = [
    pytest.mark.fork,
    pytest.mark.skipif(not hasattr(os, "fork") or not hasattr(os, "pidfd_open"), reason="needs os.fork and pidfds"),
]

FORKING: list[Callable[[], Dispatcher]] = [forked, UserForking]


def summary(events: list[Event]) -> collections.Counter[tuple[str, str]]:
    """What the events say, without times or peers: (kind, reason or exception type), counted."""
    said: collections.Counter[tuple[str, str]] = collections.Counter()
    for event in events:
        if isinstance(event, ConnectionClosed):
            said[("ConnectionClosed", event.reason)] += 1
        elif isinstance(event, HandlerFinished):
            said[("HandlerFinished", type(event.exception).__name__)] += 1
        else:
            said[(type(event).__name__, "")] += 1
    return said


def counts(stats: Stats) -> Stats:
    """*stats* without the handlers' total run time (a duration, never the same twice)."""
    return stats._replace(handler_duration_seconds_sum=0.0)


def exchanges(dispatcher: Callable[[], Dispatcher]) -> tuple[EventLog, Stats]:
    """Five echoes, a handler that raises, a child that is killed: the events and the counts."""
    log = EventLog()

    def handler(conn: Conn) -> None:
        line = conn.rfile.readline()
        if line == b"boom\n":
            raise KeyError("in the child")
        if line == b"die\n":
            os.kill(os.getpid(), signal.SIGKILL)
        conn.wfile.write(line)

    spec = server(tcp("127.0.0.1", 0), handler, dispatcher=dispatcher(), on_event=log, on_error=lambda r, e: None)
    with serving(spec.bind(), poll_interval=0.05) as bound:
        for i in range(5):
            assert stream_exchange(bound.address, b"line %d\n" % i, timeout=TIMEOUT) == b"line %d\n" % i
        assert stream_exchange(bound.address, b"boom\n", timeout=TIMEOUT) == b""
        assert stream_exchange(bound.address, b"die\n", timeout=TIMEOUT) == b""
        log.wait_for(ConnectionClosed, 7, timeout=TIMEOUT)
        stats = bound.stats()
    return log, stats


def test_exchanges_are_booked_as_the_built_in_dispatcher_books_them() -> None:
    builtin_log, builtin_stats = exchanges(forked)
    user_log, user_stats = exchanges(UserForking)

    assert summary(user_log.events) == summary(builtin_log.events)
    assert summary(user_log.events) == {
        ("Accepted", ""): 7,
        ("HandlerStarted", ""): 7,
        ("HandlerFinished", "NoneType"): 5,
        ("HandlerFinished", "ChildFailed"): 2,
        ("ConnectionClosed", "finished"): 7,
    }
    assert counts(user_stats) == counts(builtin_stats)
    assert builtin_stats.handler_duration_seconds_count == 7
    assert builtin_stats.handler_errors_total == 2
    assert builtin_stats.connections_closed_total == 7
    assert builtin_stats.connections_active == 0
    for log in (builtin_log, user_log):
        failures = [str(e.exception) for e in log.of(HandlerFinished) if e.exception is not None]
        assert any("KeyError" in message for message in failures), failures
        assert any("the child exited" in message for message in failures), failures
    # The built-in dispatcher reaps and says so (child_exited): the status is exact.
    killed = [str(e.exception) for e in builtin_log.of(HandlerFinished) if "exited" in str(e.exception)]
    assert killed == [f"the child exited with status {-signal.SIGKILL}"]


@pytest.fixture
def python_sigterm_handler() -> Iterator[list[int]]:
    """A Python SIGTERM handler in this process (as servekit.run() installs), restored afterwards."""
    calls: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        calls.append(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield calls
    finally:
        signal.signal(signal.SIGTERM, previous)


def drained(dispatcher: Callable[[], Dispatcher]) -> tuple[EventLog, Stats, DrainReport, float, list[int]]:
    """Three children in their handlers at a drain's deadline, one of them ignoring SIGTERM."""
    log = EventLog()

    def sleeper(conn: Conn) -> None:
        if conn.rfile.readline() == b"stubborn\n":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        conn.socket.sendall(b"%d\n" % os.getpid())
        time.sleep(30)  # the workload: a handler that does not touch its socket

    spec = server(tcp("127.0.0.1", 0), sleeper, dispatcher=dispatcher(), on_event=log)
    with serving(spec.bind(), poll_interval=0.05) as bound:
        clients = [socket.create_connection(bound.address, timeout=TIMEOUT) for _ in range(3)]
        try:
            for client, line in zip(clients, (b"meek\n", b"meek\n", b"stubborn\n"), strict=True):
                client.sendall(line)
            pids = [int(recv_line(client)) for client in clients]  # each child is in its handler
            started = time.monotonic()
            report = bound.drain(0.3)
            took = time.monotonic() - started
            for client in clients:  # each child is gone: its end of the connection closed
                assert client.recv(1) == b""
            log.wait_for(ConnectionClosed, 3, timeout=TIMEOUT)
        finally:
            for client in clients:
                client.close()
        stats = bound.stats()
    return log, stats, report, took, pids


@pytest.mark.parametrize("dispatcher", FORKING, ids=["forked", "user-forking"])
def test_a_drain_cuts_the_children_left_and_stops_them(
    dispatcher: Callable[[], Dispatcher], python_sigterm_handler: list[int]
) -> None:
    """At the deadline each child still running is cut: SIGTERM (which ends it although the parent
    has a Python handler for it), SIGKILL after a grace for one that ignores it; all reaped."""
    log, stats, report, took, pids = drained(dispatcher)

    assert report.cut == 3 and report.finished == 0, report
    assert took < 5.0, f"drain(0.3) with a grace of 1 s took {took:.2f} s"
    assert [c.reason for c in log.of(ConnectionClosed)] == ["cut"] * 3
    ends = sorted(str(e.exception) for e in log.of(HandlerFinished))
    assert ends == sorted(
        [f"the child exited with status {-signal.SIGTERM}"] * 2 + [f"the child exited with status {-signal.SIGKILL}"]
    )
    assert all(isinstance(e.exception, ChildFailed) for e in log.of(HandlerFinished))
    assert stats.connections_cut_total == 3
    assert stats.connections_active == 0
    assert stats.connections_closed_total == 3
    for pid in pids:  # reaped by the workers: no zombie left
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    assert python_sigterm_handler == []  # the parent itself was not signalled


def test_a_drain_is_booked_as_the_built_in_dispatcher_books_it(python_sigterm_handler: list[int]) -> None:
    builtin = drained(forked)
    user = drained(UserForking)
    assert summary(user[0].events) == summary(builtin[0].events)
    assert counts(user[1]) == counts(builtin[1])
    assert (user[2].cut, user[2].finished) == (builtin[2].cut, builtin[2].finished)


def test_an_undeclared_inline_dispatcher_is_booked_as_inline() -> None:
    """Without traits the server assumes the most it must; the books come out the same."""
    results = []
    for dispatcher in (inline, UserInline):
        log = EventLog()
        spec = server(tcp("127.0.0.1", 0), lambda conn: conn.wfile.write(conn.rfile.readline()),
                      dispatcher=dispatcher(), on_event=log)
        with serving(spec.bind(), poll_interval=0.05) as bound:
            for i in range(3):
                assert stream_exchange(bound.address, b"%d\n" % i, timeout=TIMEOUT) == b"%d\n" % i
            log.wait_for(ConnectionClosed, 3, timeout=TIMEOUT)
            results.append((summary(log.events), counts(bound.stats())))
    assert results[0] == results[1]


class DyingForking:
    """A process per request whose child dies before it runs the request (a dispatcher's bug, an OOM kill)."""

    def start(self, host: WorkerHost[R], /) -> Workers[R]:
        return DyingWorkers(host)


class DyingWorkers(UserForkingWorkers[R]):
    def dispatch(self, request: R, /) -> None:
        pid = os.fork()
        if pid == 0:
            try:
                self.host.close_inherited()
            finally:
                os._exit(3)
        self.pids.add(pid)
        self.host.discard(request)


def test_a_child_that_dies_before_it_runs_its_request_ends_that_request() -> None:
    log = EventLog()
    spec = server(tcp("127.0.0.1", 0), lambda conn: None, dispatcher=DyingForking(), on_event=log)
    with serving(spec.bind(), poll_interval=0.05) as bound:
        with socket.create_connection(bound.address, timeout=TIMEOUT) as client:
            assert client.recv(1) == b""
        [closed] = log.wait_for(ConnectionClosed, timeout=TIMEOUT)
        stats = bound.stats()
    [ended] = log.of(HandlerFinished)
    assert isinstance(ended.exception, ChildFailed) and "exited" in str(ended.exception)
    assert closed.reason == "finished"
    assert stats.connections_active == 0 and stats.connections_closed_total == 1


@pytest.mark.parametrize("dispatcher", FORKING, ids=["forked", "user-forking"])
def test_close_books_the_children_it_waited_for(dispatcher: Callable[[], Dispatcher]) -> None:
    """close() waits for the children (block_on_close); their ends are booked before it returns."""
    log = EventLog()

    def slow(conn: Conn) -> None:
        conn.socket.sendall(b"started\n")
        conn.rfile.readline()
        conn.wfile.write(b"done\n")

    bound = server(tcp("127.0.0.1", 0), slow, dispatcher=dispatcher(), on_event=log).bind()
    with serving(bound, poll_interval=0.05), socket.create_connection(bound.address, timeout=TIMEOUT) as client:
        assert recv_line(client) == b"started\n"
        bound.shutdown()
        closer = threading.Thread(target=bound.close)
        closer.start()
        client.sendall(b"go\n")
        assert recv_line(client) == b"done\n"
        closer.join(TIMEOUT)
        assert not closer.is_alive()
        stats = bound.stats()
    assert stats.connections_active == 0 and stats.connections_closed_total == 1
    assert [c.reason for c in log.of(ConnectionClosed)] == ["finished"]
