"""The production example, run as a user would: slow clients, many connects, graceful drain.

examples/production_server.py is a fixed contract: ``--host H --port P
[--idle-timeout S] [--drain-seconds S]``; each line is echoed, ``SLEEP n``
answers ``SLEPT`` after n seconds, a connection that completes no line for
the idle timeout is closed, and SIGTERM drains and prints the report as one
JSON line on stdout, exit 0.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from servekit.testing import recv_line

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "production_server.py"
TIMEOUT = 20.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Example:
    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc = proc
        self.port = port
        self.address = ("127.0.0.1", port)

    def threads(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
        raise AssertionError("no Threads line")

    def terminate(self) -> tuple[int, dict[str, object], float]:
        """SIGTERM; the exit status, the JSON report and how long it took to exit."""
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=TIMEOUT)
        took = time.monotonic() - start
        lines = [line for line in out.splitlines() if line.strip()]
        assert len(lines) == 1, out + err
        return self.proc.returncode, json.loads(lines[0]), took


@contextmanager
def example(*args: str) -> Iterator[Example]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--host", "127.0.0.1", "--port", str(port), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()  # "listening on ..." once it listens
        assert first.startswith("listening on "), first + proc.stderr.read()
        yield Example(proc, port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)


def _ask(address: tuple[str, int], line: bytes) -> bytes:
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.sendall(line)
        return recv_line(sock)


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
        slow: list[socket.socket] = []
        try:
            opened = time.monotonic()
            for _ in range(1000):
                sock = socket.socket()
                sock.settimeout(TIMEOUT)
                sock.connect(ex.address)
                slow.append(sock)
            tricklers = slow[:500]
            closed_at: dict[int, float] = {}
            latencies: list[float] = []
            threads: list[int] = []
            end = opened + idle + 3.0
            next_trickle = time.monotonic()
            while time.monotonic() < end and len(closed_at) < len(slow):
                now = time.monotonic()
                if now >= next_trickle:  # a byte a second, never a full line
                    for sock in tricklers:
                        if sock.fileno() not in closed_at:
                            try:
                                sock.send(b"x")
                            except OSError:
                                closed_at[sock.fileno()] = now
                    next_trickle = now + 1.0
                    asked = time.monotonic()
                    assert _ask(ex.address, b"normal\n") == b"normal\n"
                    latencies.append(time.monotonic() - asked)
                    threads.append(ex.threads())
                ready, _, _ = select.select([s for s in slow if s.fileno() not in closed_at], [], [], 0.2)
                for sock in ready:
                    try:
                        data = sock.recv(16)
                    except OSError:
                        data = b""
                    if not data:
                        closed_at[sock.fileno()] = time.monotonic()
        finally:
            for sock in slow:
                sock.close()
        status, report, _ = ex.terminate()
    assert status == 0
    assert len(closed_at) == 1000, f"{1000 - len(closed_at)} slow connections were not closed"
    # The server's own books agree: the 1,000 were closed at the gate, no
    # worker ran for them, and every normal client was handled.
    stats = report["stats"]
    events = report["events"]
    assert isinstance(stats, dict) and isinstance(events, dict)
    normal = len(latencies)
    assert stats["connections_gate_closed_total"] == 1000, stats
    assert stats["connections_accepted_total"] == 1000 + normal, stats
    assert stats["handler_duration_seconds_count"] == normal, stats
    assert stats["connections_closed_total"] == 1000 + normal, stats
    assert stats["connections_active"] == 0, stats
    assert events["Accepted"] == events["ConnectionClosed"] == 1000 + normal, events
    assert events["HandlerStarted"] == events["HandlerFinished"] == normal, events
    # Closed within a few seconds of the deadline (counted from when all were open).
    assert max(closed_at.values()) - opened < idle + 3.0
    assert min(closed_at.values()) - opened >= idle - 0.5
    # Threads bounded by the configuration (16 workers), far below the connection count.
    assert max(threads) <= baseline + 2, (baseline, threads)
    assert max(latencies) < 1.0, latencies


def test_two_thousand_simultaneous_connects_are_all_answered() -> None:
    with example() as ex:
        socks = []
        try:
            for _ in range(2000):
                sock = socket.socket()
                sock.setblocking(False)
                err = sock.connect_ex(ex.address)
                assert err in (0, 115), os.strerror(err)  # 115: EINPROGRESS
                socks.append(sock)
            for i, sock in enumerate(socks):
                sock.settimeout(TIMEOUT)
                sock.sendall(b"n%d\n" % i)
            # Each client reads its answer and closes, in whatever order they come.
            answers: dict[int, bytes] = {}
            waiting = {sock.fileno(): (i, sock) for i, sock in enumerate(socks)}
            poller = select.poll()
            for fd in waiting:
                poller.register(fd, select.POLLIN)
            deadline = time.monotonic() + TIMEOUT
            while waiting and time.monotonic() < deadline:
                for fd, _ in poller.poll(1000):
                    i, sock = waiting.pop(fd)
                    poller.unregister(fd)
                    answers[i] = recv_line(sock)
                    sock.close()
            assert not waiting, f"{len(waiting)} connections were not answered"
        finally:
            for sock in socks:
                sock.close()
        status, report, _ = ex.terminate()
    assert [answers[i] for i in range(2000)] == [b"n%d\n" % i for i in range(2000)]
    assert status == 0 and report["cut"] == 0
    stats = report["stats"]
    assert isinstance(stats, dict)
    assert stats["connections_accepted_total"] == 2000 and stats["connections_rejected_total"] == 0, stats
    assert stats["handler_duration_seconds_count"] == 2000 and stats["handler_errors_total"] == 0, stats


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
