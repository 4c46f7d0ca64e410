"""The event-driven example, run as a user would: slow clients, many connects, offload, UDP, drain.

examples/evented_echo.py is a fixed contract: ``--host H --port P
[--idle-timeout S] [--udp] [--offload N]``; each line is echoed (each
datagram with ``--udp``), by a blocking function on a pool of N threads
with ``--offload N``; a connection that completes no line for the idle
timeout is closed; SIGTERM drains, prints the report as one JSON line on
stdout and exits 0.
"""

from __future__ import annotations

import socket
from contextlib import AbstractContextManager

from example_processes import TIMEOUT, Example, ask, closed_on_time, connects_all_answered, slow_clients
from example_processes import example as run_example
from servekit.testing import datagram_exchange, recv_exactly, recv_line

SCRIPT = "evented_echo.py"


def example(*args: str) -> AbstractContextManager[Example]:
    return run_example(SCRIPT, *args)


def test_slow_clients_cost_no_thread_and_are_closed_at_their_deadline() -> None:
    """500 trickling and 500 silent connections, idle timeout 3 s: one thread, normal clients answered within 1 s."""
    idle = 3.0
    with example("--idle-timeout", str(idle)) as ex:
        slow = slow_clients(ex, idle)
        status, report, _ = ex.terminate()
    assert status == 0
    closed_on_time(slow, idle)
    stats = report["stats"]
    events = report["events"]
    assert isinstance(stats, dict) and isinstance(events, dict)
    normal = len(slow.latencies)
    assert stats["closed_by_reason"] == {"deadline": 1000}, stats
    assert stats["connections_accepted_total"] == stats["connections_closed_total"] == 1000 + normal, stats
    assert stats["connections_active"] == 0 and stats["handler_errors_total"] == 0, stats
    assert events["Accepted"] == events["ConnectionClosed"] == 1000 + normal, events
    assert set(slow.threads) == {2}, slow.threads  # the main thread and the serving thread: none per connection


def test_two_thousand_simultaneous_connects_are_all_answered() -> None:
    with example() as ex:
        stats = connects_all_answered(ex)
    assert stats["connections_active"] == 0, stats


def test_offload_answers_on_a_pool_and_a_long_line_is_closed_alone() -> None:
    with example("--offload", "4", "--work-ms", "1", "--max-line", "100") as ex:
        with socket.create_connection(ex.address, timeout=TIMEOUT) as sock:
            sock.sendall(b"a\nb\nc\n")
            # (All six bytes, however they come: answers written one by one
            # may reach a busy client in one segment.)
            assert recv_exactly(sock, 6) == b"a\nb\nc\n"
            sock.sendall(b"x" * 101)
            assert sock.recv(10) == b""
        assert ask(ex.address, b"after\n") == b"after\n"
        assert ex.threads() == 6  # the main thread, the serving thread and the pool of 4
        status, report, _ = ex.terminate()
    stats = report["stats"]
    assert status == 0 and isinstance(stats, dict)
    assert stats["closed_by_reason"] == {"too_long": 1}, stats


def test_udp_datagrams_are_echoed() -> None:
    with example("--udp") as ex:
        assert datagram_exchange(ex.address, b"datagram") == b"datagram"
        status, report, _ = ex.terminate()
    assert status == 0 and report["cut"] == 0


def test_sigterm_closes_waiting_connections_at_once_and_exits_zero() -> None:
    with example("--drain-seconds", "10") as ex:
        with socket.create_connection(ex.address, timeout=TIMEOUT) as sock:
            sock.sendall(b"hello\n")
            assert recv_line(sock) == b"hello\n"
            status, report, took = ex.terminate()
            assert sock.recv(10) == b""
    assert status == 0 and report["cut"] == 0 and report["finished"] == 1, report
    assert took < 5.0, took
