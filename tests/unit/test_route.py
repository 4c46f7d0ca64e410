"""The route's worker-side stages: run in order before the handler; a failing one is its own kind of end.

The stages are private (servekit composes them: the deadline clock today, a
TLS handshake next), so these tests build a runtime from the private wiring,
over a real loopback listener.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from servekit import ConnectionClosed, HandlerFinished, HandlerStarted, IPAddress, StageFailed, StreamConnection, tcp
from servekit._runtime.lifecycle import Runtime
from servekit._runtime.wiring import Intake, Stage, Wiring
from servekit.dispatchers import threaded
from servekit.testing import EventLog, recv_line

TIMEOUT = 10.0

Conn = StreamConnection[IPAddress]


@contextmanager
def running(stages: tuple[Stage[Conn], ...], handler: Callable[[Conn], object], log: EventLog) -> Iterator[Runtime[Conn, IPAddress]]:
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
    runtime: Runtime[Conn, IPAddress] = Runtime([Intake(transport.listen(), transport.acceptor())], threaded(), wiring)
    thread = threading.Thread(target=runtime.serve_forever, args=(0.05,))
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
