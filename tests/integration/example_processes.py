"""Running an example server as a user would, and the slow and many clients its tests throw at it.

Shared by the tests of the examples with fixed command lines
(``production_server.py``, ``evented_echo.py``): each is started as a
process with ``--host 127.0.0.1 --port P``, says ``listening on ...`` on
stderr once it listens, and on SIGTERM drains and prints one JSON line.
(On pytest's path through ``pythonpath`` in pyproject.toml.)
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

from servekit.testing import recv_line

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Example:
    """An example server process."""

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

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS line")

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
def example(script: str, *args: str) -> Iterator[Example]:
    """Run ``examples/<script>`` on a free loopback port until the block ends (killed if still running)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), "--host", "127.0.0.1", "--port", str(port), *args],
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


def ask(address: tuple[str, int], line: bytes) -> bytes:
    """One line over a new connection; the answer."""
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.sendall(line)
        return recv_line(sock)


class SlowClients(NamedTuple):
    """What :func:`slow_clients` saw: when each was closed, and the normal clients' latencies and the threads."""

    opened: float
    closed_at: dict[int, float]
    latencies: list[float]
    threads: list[int]


def slow_clients(ex: Example, idle: float, count: int = 1000) -> SlowClients:
    """*count* connections, half trickling a byte a second (never a whole line), half silent.

    Every second meanwhile a normal client asks a line and its latency is
    noted, with the server's thread count.  Returns once every slow
    connection was closed by the server, or *idle* + 3 s after they were
    all open.
    """
    slow: list[socket.socket] = []
    closed_at: dict[int, float] = {}
    latencies: list[float] = []
    threads: list[int] = []
    try:
        opened = time.monotonic()
        for _ in range(count):
            sock = socket.socket()
            sock.settimeout(TIMEOUT)
            sock.connect(ex.address)
            slow.append(sock)
        tricklers = slow[: count // 2]
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
                assert ask(ex.address, b"normal\n") == b"normal\n"
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
    return SlowClients(opened, closed_at, latencies, threads)


def closed_on_time(slow: SlowClients, idle: float, count: int = 1000) -> None:
    """Every slow connection was closed, within a few seconds of its deadline and not before it
    (counted from when all were open), and every normal client was answered within 1 s."""
    assert len(slow.closed_at) == count, f"{count - len(slow.closed_at)} slow connections were not closed"
    assert max(slow.closed_at.values()) - slow.opened < idle + 3.0
    assert min(slow.closed_at.values()) - slow.opened >= idle - 0.5
    assert max(slow.latencies) < 1.0, slow.latencies


def many_connects(address: tuple[str, int], count: int = 2000) -> dict[int, bytes]:
    """*count* connections opened at once, each sending ``n<i>\\n``; each answer, by *i*."""
    socks = []
    answers: dict[int, bytes] = {}
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.setblocking(False)
            err = sock.connect_ex(address)
            assert err in (0, 115), os.strerror(err)  # 115: EINPROGRESS
            socks.append(sock)
        for i, sock in enumerate(socks):
            sock.settimeout(TIMEOUT)
            sock.sendall(b"n%d\n" % i)
        # Each client reads its answer and closes, in whatever order they come.
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
    return answers


def connects_all_answered(ex: Example, count: int = 2000) -> dict[str, object]:
    """:func:`many_connects` against *ex*, then SIGTERM: every answer right, exit 0, nothing cut or
    refused; the server's counters (for what a test checks beyond)."""
    answers = many_connects(ex.address, count)
    status, report, _ = ex.terminate()
    assert [answers[i] for i in range(count)] == [b"n%d\n" % i for i in range(count)]
    assert status == 0 and report["cut"] == 0
    stats = report["stats"]
    assert isinstance(stats, dict)
    assert stats["connections_accepted_total"] == count and stats["connections_rejected_total"] == 0, stats
    assert stats["handler_errors_total"] == 0, stats
    return stats
