"""The route's worker-side stages: run in order before the handler; a failing one is its own kind of end.

The stages are private (servekit composes them: the deadline clock today, a
TLS handshake next), so these tests build a runtime from the private wiring,
over a real loopback listener.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from servekit import (
    ChildFailed,
    ConnectionClosed,
    Dispatcher,
    HandlerFinished,
    HandlerStarted,
    IPAddress,
    StageFailed,
    StreamConnection,
    forked,
    tcp,
)
from servekit._runtime.lifecycle import Runtime
from servekit._runtime.wiring import Intake, Stage, Wiring
from servekit.dispatchers import threaded
from servekit.testing import EventLog, recv_line

TIMEOUT = 10.0

Conn = StreamConnection[IPAddress]


@contextmanager
def running(
    stages: tuple[Stage[Conn], ...],
    handler: Callable[[Conn], object],
    log: EventLog,
    dispatcher: Dispatcher = threaded(),
    failures: list[BaseException] | None = None,
) -> Iterator[Runtime[Conn, IPAddress]]:
    transport = tcp("127.0.0.1", 0)
    errors: list[Exception] = []
    wiring: Wiring[Conn] = Wiring(
        handler=handler,
        stages=stages,
        loop_stages=(),
        verify=None,
        report=lambda request, exc: errors.append(exc),
        emit=log,
        routine=True,
        admission=None,
        timeout=None,
        service_actions=None,
    )
    runtime: Runtime[Conn, IPAddress] = Runtime([Intake(transport.listen(), transport.acceptor())], dispatcher, wiring)

    def serve() -> None:
        try:
            runtime.serve_forever(0.05)
        except BaseException as exc:  # noqa: BLE001 - what a test expects to leave the loop
            if failures is None:
                raise
            failures.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        yield runtime
    finally:
        runtime.close()
        thread.join(TIMEOUT)
    assert errors == []  # a stage's failure is not a handler error


def test_stages_run_in_order_before_the_handler() -> None:
    order: list[str] = []

    def stage(name: str) -> Stage[Conn]:
        def apply(conn: Conn) -> Conn:
            order.append(name)
            return conn

        return Stage(name, apply)

    def handler(conn: Conn) -> None:
        order.append("handler")
        conn.wfile.write(b"ok\n")

    log = EventLog()
    with running((stage("first"), stage("second")), handler, log) as runtime:
        with socket.create_connection(runtime.listeners[0].address, timeout=TIMEOUT) as client:
            assert recv_line(client) == b"ok\n"
        log.wait_for(ConnectionClosed, timeout=TIMEOUT)
    assert order == ["first", "second", "handler"]


def test_a_failing_stage_ends_the_request_with_its_name_and_is_counted_apart() -> None:
    ran: list[Conn] = []

    def refuse(conn: Conn) -> Conn:
        raise ConnectionError("no handshake")

    log = EventLog()
    with running((Stage("handshake", refuse),), ran.append, log) as runtime:
        with socket.create_connection(runtime.listeners[0].address, timeout=TIMEOUT) as client:
            assert client.recv(1) == b""  # closed without an answer
        [closed] = log.wait_for(ConnectionClosed, timeout=TIMEOUT)
        stats = runtime.stats()
    [failed] = log.of(StageFailed)
    assert ran == []
    assert failed.stage == "handshake" and isinstance(failed.exception, ConnectionError)
    assert closed.reason == "handshake"
    assert log.of(HandlerStarted) == [] and log.of(HandlerFinished) == []
    assert stats.stage_errors_total == 1 and dict(stats.stage_errors_by_stage) == {"handshake": 1}
    assert stats.handler_errors_total == 0 and stats.handler_duration_seconds_count == 0
    assert stats.connections_closed_total == 1 and stats.connections_active == 0
    assert 'servekit_stage_errors_total{stage="handshake"} 1' in stats.prometheus()


def test_a_stage_that_raises_system_exit_ends_its_request_and_stops_the_server() -> None:
    def leave(conn: Conn) -> Conn:
        raise SystemExit(4)

    log = EventLog()
    failures: list[BaseException] = []
    with running((Stage("leaving", leave),), print, log, failures=failures) as runtime:
        with socket.create_connection(runtime.listeners[0].address, timeout=TIMEOUT) as client:
            assert client.recv(1) == b""  # released: closed, not left open
        [closed] = log.wait_for(ConnectionClosed, timeout=TIMEOUT)
        stats = runtime.stats()
    assert closed.reason == "leaving"
    assert stats.connections_active == 0
    assert [type(f) for f in failures] == [SystemExit]


@pytest.mark.fork
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_stage_failing_in_a_child_is_reported_by_the_parent() -> None:
    """The child keeps no books and makes no events: the parent reports the stage's failure."""

    def refuse(conn: Conn) -> Conn:
        raise ConnectionError("no handshake")

    log = EventLog()
    with running((Stage("handshake", refuse),), print, log, dispatcher=forked()) as runtime:
        with socket.create_connection(runtime.listeners[0].address, timeout=TIMEOUT) as client:
            assert client.recv(1) == b""
        [closed] = log.wait_for(ConnectionClosed, timeout=TIMEOUT)
        stats = runtime.stats()
    [failed] = log.of(StageFailed)
    assert failed.stage == "handshake"
    assert isinstance(failed.exception, ChildFailed) and str(failed.exception) == "the handshake stage raised ConnectionError"
    assert closed.reason == "handshake" and log.of(HandlerFinished) == []
    assert stats.stage_errors_total == 1 and stats.handler_duration_seconds_count == 0
