"""The production example, run as a user would: slow clients, many connects, graceful drain.

examples/production_server.py is a fixed contract: ``--host H --port P
[--idle-timeout S] [--drain-seconds S]``; each line is echoed, ``SLEEP n``
answers ``SLEPT`` after n seconds, a connection that completes no line for
the idle timeout is closed, and SIGTERM drains and prints the report as one
JSON line on stdout, exit 0.
"""

from __future__ import annotations

import socket
import threading
from contextlib import AbstractContextManager

from example_processes import TIMEOUT, Example, closed_on_time, connects_all_answered, slow_clients
from example_processes import example as run_example
from servekit.testing import recv_line

SCRIPT = "production_server.py"


def example(*args: str) -> AbstractContextManager[Example]:
    return run_example(SCRIPT, *args)


def test_echo_sleep_and_terminate() -> None:
    with example() as ex:
        with socket.create_connection(ex.address, timeout=TIMEOUT) as sock:
            sock.sendall(b"hello\n")
            assert recv_line(sock) == b"hello\n"
            sock.sendall(b"SLEEP 0.1\n")
            assert recv_line(sock) == b"SLEPT\n"
        status, report, _ = ex.terminate()
    assert status == 0
    assert isinstance(report["finished"], int) and isinstance(report["cut"], int)
    assert report["cut"] == 0


def test_slow_clients_are_held_without_workers_and_closed_at_their_deadline() -> None:
    """500 trickling and 500 silent connections, idle timeout 3 s: few threads, normal clients served."""
    idle = 3.0
    with example("--idle-timeout", str(idle), "--workers", "16") as ex:
        baseline = ex.threads()
        slow = slow_clients(ex, idle)
        status, report, _ = ex.terminate()
    assert status == 0
    closed_on_time(slow, idle)
    # The server's own books agree: the 1,000 were closed at the gate, no
    # worker ran for them, and every normal client was handled.
    stats = report["stats"]
    events = report["events"]
    assert isinstance(stats, dict) and isinstance(events, dict)
    normal = len(slow.latencies)
    assert stats["connections_gate_closed_total"] == 1000, stats
    assert stats["connections_accepted_total"] == 1000 + normal, stats
    assert stats["handler_duration_seconds_count"] == normal, stats
    assert stats["connections_closed_total"] == 1000 + normal, stats
    assert stats["connections_active"] == 0, stats
    assert events["Accepted"] == events["ConnectionClosed"] == 1000 + normal, events
    assert events["HandlerStarted"] == events["HandlerFinished"] == normal, events
    # Threads bounded by the configuration (16 workers), far below the connection count.
    assert max(slow.threads) <= baseline + 2, (baseline, slow.threads)


def test_two_thousand_simultaneous_connects_are_all_answered() -> None:
    with example() as ex:
        stats = connects_all_answered(ex)
    assert stats["handler_duration_seconds_count"] == 2000, stats


def test_drain_answers_everything_in_flight_and_queued() -> None:
    """50 requests in flight (SLEEP 1) and 20 connecting just before SIGTERM: all answered, none cut."""
    with example() as ex:
        answers: list[bytes] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        sent = threading.Barrier(71)

        def client(line: bytes) -> None:
            try:
                with socket.create_connection(ex.address, timeout=TIMEOUT) as sock:
                    sock.sendall(line)
                    sent.wait(TIMEOUT)
                    answer = recv_line(sock)
                with lock:
                    answers.append(answer)
            except BaseException as exc:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(exc)

        threads = [threading.Thread(target=client, args=(b"SLEEP 1\n",)) for _ in range(50)]
        threads += [threading.Thread(target=client, args=(b"late %d\n" % i,)) for i in range(20)]
        for thread in threads:
            thread.start()
        sent.wait(TIMEOUT)  # every client has connected and sent its line
        status, report, took = ex.terminate()
        for thread in threads:
            thread.join(TIMEOUT)
    assert not errors, errors
    assert sorted(answers) == sorted([b"SLEPT\n"] * 50 + [b"late %d\n" % i for i in range(20)])
    assert status == 0
    assert report["cut"] == 0 and isinstance(report["finished"], int) and report["finished"] >= 70, report


def test_drain_deadline_cuts_what_is_left() -> None:
    """--drain-seconds 1 with 5 handlers sleeping 5 s: exit 0 within about 3 s, 5 cut."""
    with example("--drain-seconds", "1") as ex:
        socks = []
        try:
            for _ in range(5):
                sock = socket.create_connection(ex.address, timeout=TIMEOUT)
                sock.sendall(b"SLEEP 5\n")
                socks.append(sock)
            with socket.create_connection(ex.address, timeout=TIMEOUT) as probe:  # the loop has taken them all
                probe.sendall(b"ping\n")
                assert recv_line(probe) == b"ping\n"
            status, report, took = ex.terminate()
        finally:
            for sock in socks:
                sock.close()
    assert status == 0
    assert report["cut"] == 5, report
    assert took < 3.5, took
    stats = report["stats"]
    assert isinstance(stats, dict) and stats["connections_cut_total"] == 5, stats


def test_an_idle_server_drains_at_once() -> None:
    with example("--drain-seconds", "0") as ex:
        status, report, took = ex.terminate()
    assert status == 0 and report["finished"] == 0 and report["cut"] == 0 and report["cut_connections"] == []
    assert report["events"] == {"DrainStarted": 1, "DrainFinished": 1}, report
