"""Run one server in a process whose file descriptors run out; print what happened as JSON.

Run by tests/integration/test_fd_exhaustion.py in a subprocess, as::

    python fd_exhaustion_server.py KIND LOGGING WHEN

KIND is one of :data:`KINDS`; LOGGING is ``logging`` (the program imports and
configures :mod:`logging` before anything else) or ``no-logging`` (it never
imports it); WHEN is ``while-serving`` (the fds run out while
``serve_forever`` runs) or ``before-serving`` (they are gone before it starts).

The scenario, all bounded: serve (and answer one warm-up client), lower
``RLIMIT_NOFILE`` and open ``/dev/null`` until no fd is left, connect a client
(its socket was made beforehand), wait for the server to report the failed
accept, hold the condition for :data:`HOLD` seconds while counting the serve
loop's wake-ups and the process's CPU time, release the fds, and time the
client's answer.  Everything the process writes on stderr is recorded too.
"""

from __future__ import annotations

import io
import json
import os
import resource
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

KINDS = (
    "classic-TCPServer",
    "classic-ThreadingTCPServer",
    "classic-ForkingTCPServer",
    "composed-inline",
    "composed-threaded",
    "composed-forked",
)

#: How long the exhaustion is held while the loop is watched, in seconds.
HOLD = 0.3
#: The bound on every wait here, in seconds.
TIMEOUT = 5.0
#: The soft RLIMIT_NOFILE while the fds are filled (only its few free fds are opened).
LIMIT = 256


class _Tee(io.StringIO):
    """``sys.stderr``: records what is written, passes it on, and signals each write."""

    def __init__(self, real: TextIO, written: threading.Event) -> None:
        super().__init__()
        self._real = real
        self._written = written

    def write(self, text: str) -> int:
        count = super().write(text)
        self._real.write(text)
        self._real.flush()
        self._written.set()
        return count

    def lines(self) -> list[str]:
        return self.getvalue().splitlines()


class _Run:
    """One server: what the scenario needs of it, classic or composed alike."""

    def __init__(self, kind: str, on_wake: Callable[[], None]) -> None:
        self.kind = kind
        self.serve_forever: Callable[[float], None]
        self.shutdown: Callable[[], None]
        self.close: Callable[[], None]
        self.address: tuple[str, int]
        family, _, name = kind.partition("-")
        if family == "classic":
            import servekit.classic as classic

            class Handler(classic.StreamRequestHandler):
                def handle(self) -> None:
                    self.wfile.write(self.rfile.readline().upper())

            base: Any = getattr(classic, name)

            class Server(base):  # type: ignore[misc]
                def service_actions(self) -> None:
                    on_wake()
                    super().service_actions()

            srv: Any = Server(("127.0.0.1", 0), Handler)
            self.serve_forever = srv.serve_forever
            self.shutdown = srv.shutdown
            self.close = srv.server_close
            self.address = srv.server_address
        else:
            from servekit import Dispatcher, StreamConnection, forked, inline, server, tcp, threaded

            def handler(conn: StreamConnection) -> None:
                conn.wfile.write(conn.rfile.readline().upper())

            dispatcher: Dispatcher = inline() if name == "inline" else threaded() if name == "threaded" else forked()
            bound = server(tcp("127.0.0.1", 0), handler, dispatcher=dispatcher, service_actions=on_wake).bind()
            self.serve_forever = bound.serve_forever
            self.shutdown = bound.shutdown
            self.close = bound.close
            address = bound.address
            assert isinstance(address, tuple)
            self.address = (address[0], address[1])


def _exchange(sock: socket.socket, address: tuple[str, int], line: bytes) -> bytes:
    sock.settimeout(TIMEOUT)
    sock.connect(address)
    sock.sendall(line)
    with sock.makefile("rb") as reader:
        return reader.readline()


def _fill() -> list[int]:
    """Open /dev/null until no fd is left (under a lowered soft limit); the fds opened."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(LIMIT, hard), hard))
    filler: list[int] = []
    while True:
        try:
            filler.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            return filler


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _settle(count: int) -> bool:
    """Poll (bounded) until the process holds *count* fds."""
    deadline = time.monotonic() + TIMEOUT
    pause = threading.Event()  # never set: a poll interval, not a synchronisation
    while _open_fds() != count:
        if time.monotonic() > deadline:
            return False
        pause.wait(0.001)
    return True


def _wait(condition: Callable[[], bool], event: threading.Event) -> bool:
    """Wait (bounded) until *condition* holds, re-checking whenever *event* is set."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        event.clear()  # before the check: a write after it sets the event again
        if condition():
            return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        event.wait(left)


def main(kind: str, mode: str, when: str) -> dict[str, Any]:
    written = threading.Event()  # stderr written, or the serving thread ended
    tee = _Tee(sys.stderr, written)
    sys.stderr = tee
    if mode == "logging":
        import logging

        logging.basicConfig(format="LOG %(levelname)s %(name)s: %(message)s")

    wakes = [0]

    def on_wake() -> None:
        wakes[0] += 1

    run = _Run(kind, on_wake)
    port = str(run.address[1])
    failure: list[str] = []

    def serve() -> None:
        try:
            run.serve_forever(0.5)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            failure.append(repr(exc))
        finally:
            written.set()

    def episode() -> list[str]:
        return [line for line in tee.lines() if port in line]

    result: dict[str, Any] = {"kind": kind, "logging": mode, "when": when}
    thread = threading.Thread(target=serve, name="serving")
    client = socket.socket()  # made while fds are free: connect() needs none
    filler: list[int] = []
    try:
        if when == "while-serving":
            before = _open_fds()
            thread.start()
            with socket.socket() as warm:
                result["warm_up"] = _exchange(warm, run.address, b"warm\n").decode()
            # The server may close its side of the warm-up connection after
            # the client has read the answer: an fd freed after the fill would
            # let the next accept() succeed.  Steady state: the wake-up pair.
            result["settled"] = _settle(before + 2)
            filler = _fill()
        else:
            filler = _fill()
            thread.start()
        result["filled"] = len(filler)
        client.settimeout(TIMEOUT)
        client.connect(run.address)
        client.sendall(b"ping\n")
        result["reported"] = _wait(lambda: bool(episode()) or not thread.is_alive(), written)

        wakes_before, cpu_before, wall_before = wakes[0], time.process_time(), time.monotonic()
        thread.join(HOLD)  # the measured hold; returns early only if serve_forever ended
        result["held_wall"] = time.monotonic() - wall_before
        result["held_cpu"] = time.process_time() - cpu_before
        result["held_wakeups"] = wakes[0] - wakes_before
        result["alive_after_hold"] = thread.is_alive()

        while filler:
            os.close(filler.pop())
        released = time.monotonic()
        try:
            with client.makefile("rb") as reader:
                result["reply"] = reader.readline().decode()
        except OSError as exc:
            result["reply"] = repr(exc)
        result["latency"] = time.monotonic() - released
        # The end of the episode is reported once the accept has succeeded.
        _wait(lambda: len(episode()) >= 2 or not thread.is_alive(), written)
        result["alive_at_end"] = thread.is_alive()
    finally:
        for fd in filler:
            os.close(fd)
        client.close()
        if thread.is_alive():
            run.shutdown()
            thread.join(TIMEOUT)
        run.close()
    result["stopped"] = not thread.is_alive()
    result["serve_forever_raised"] = failure[0] if failure else None
    result["episode"] = episode()
    result["stderr"] = tee.lines()
    result["logging_loaded"] = "logging" in sys.modules
    return result


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])), flush=True)
