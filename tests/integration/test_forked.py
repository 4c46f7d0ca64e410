"""The forked dispatcher: what the child closes, what the parent closes, reaping, max_children."""

from __future__ import annotations

import fcntl
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from servekit import Accepted, Bound, ConnectionClosed, IPAddress, StreamConnection, first_line, forked, server, tcp
from servekit.testing import EventLog, recv_line, serving, stream_exchange

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs os.fork and os.pidfd_open (Linux)")

TIMEOUT = 10.0


def _wait_exit(pid: int) -> None:
    """Wait (bounded) until process *pid* has exited -- it may still be a zombie."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:  # exited and already reaped
        return
    try:
        ready, _, _ = select.select([fd], [], [], TIMEOUT)
        assert ready, f"child {pid} did not exit"
    finally:
        os.close(fd)


def _two_fresh_passes(ticks: threading.Semaphore) -> None:
    """Wait until the loop has run its service actions twice from now on."""
    while ticks.acquire(blocking=False):
        pass
    for _ in range(2):
        assert ticks.acquire(timeout=TIMEOUT)


def _exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


class TestChildAndParent:
    def test_child_closes_listener_and_parent_closes_its_copy(self) -> None:
        """The handler runs in a child without the listening socket; the parent keeps no request fd."""
        listener_fd: list[int] = []

        def report(conn: StreamConnection) -> None:
            try:
                os.fstat(listener_fd[0])
                state = b"open"
            except OSError:
                state = b"closed"
            conn.socket.sendall(b"%d %s" % (os.getpid(), state))

        with server(tcp("127.0.0.1", 0), report, dispatcher=forked(), timeout=TIMEOUT).bind() as bound:
            listener_fd.append(bound.fileno())
            fds = len(os.listdir("/proc/self/fd"))
            with socket.create_connection(("127.0.0.1", bound.port), timeout=TIMEOUT) as client:
                assert bound.handle_request()
                # Only the client's end is new: the parent closed its copy of the request.
                assert len(os.listdir("/proc/self/fd")) == fds + 1
                pid, state = client.recv(64).split()
            assert int(pid) != os.getpid()
            assert state == b"closed"

    def test_children_are_reaped_while_serving(self) -> None:
        """service_actions reaps each child once it has exited: no zombie stays."""
        ticks = threading.Semaphore(0)

        def pid_of_child(conn: StreamConnection) -> None:
            conn.socket.sendall(b"%d" % os.getpid())

        srv = server(tcp("127.0.0.1", 0), pid_of_child, dispatcher=forked(), service_actions=ticks.release)
        with serving(srv.bind(), poll_interval=0.01) as bound:
            pids = [int(stream_exchange(bound.address, b"", timeout=TIMEOUT)) for _ in range(3)]
            for pid in pids:
                _wait_exit(pid)
            _two_fresh_passes(ticks)
            assert [pid for pid in pids if _exists(pid)] == []

    def test_reaps_only_its_own_children(self) -> None:
        """A child the server did not fork is left for its owner to wait for."""
        stranger = os.fork()
        if stranger == 0:
            os._exit(7)
        try:
            _wait_exit(stranger)
            ticks = threading.Semaphore(0)
            srv = server(
                tcp("127.0.0.1", 0),
                lambda conn: conn.socket.sendall(b"ok"),
                dispatcher=forked(max_children=1),
                service_actions=ticks.release,
            )
            with serving(srv.bind(), poll_interval=0.01) as bound:
                for _ in range(3):
                    assert stream_exchange(bound.address, b"", timeout=TIMEOUT) == b"ok"
                _two_fresh_passes(ticks)
        finally:
            _, status = os.waitpid(stranger, 0)
        assert os.waitstatus_to_exitcode(status) == 7

    def test_close_waits_for_children(self) -> None:
        """With block_on_close (the default), close() returns after every child has exited."""
        pids: list[int] = []
        with server(tcp("127.0.0.1", 0), lambda conn: conn.socket.sendall(b"%d" % os.getpid()), dispatcher=forked(), timeout=TIMEOUT).bind() as bound:
            for _ in range(3):
                with socket.create_connection(("127.0.0.1", bound.port), timeout=TIMEOUT) as client:
                    assert bound.handle_request()
                    pids.append(int(client.recv(64)))
        assert [pid for pid in pids if _exists(pid)] == []


class TestMaxChildren:
    @pytest.fixture
    def lock_path(self, short_tmp: Path) -> Path:
        path = short_tmp / "lock"
        path.touch()
        return path

    def _server(self, lock_path: Path) -> Bound[StreamConnection[IPAddress], IPAddress]:
        def exclusive(conn: StreamConnection) -> None:
            with open(lock_path, "rb") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    conn.socket.sendall(b"overlap\n")
                    return
                conn.socket.sendall(b"%d\n" % os.getpid())
                conn.rfile.readline()  # hold the lock until the client says go

        return server(tcp("127.0.0.1", 0), exclusive, dispatcher=forked(max_children=1)).bind()

    def test_stops_accepting_at_max_children(self, lock_path: Path) -> None:
        """At max_children the next client waits in the backlog; it is served when a child exits."""
        with serving(self._server(lock_path), poll_interval=0.01) as bound:
            first = socket.create_connection(("127.0.0.1", bound.port), timeout=TIMEOUT)
            second = socket.create_connection(("127.0.0.1", bound.port), timeout=TIMEOUT)
            with first, second:
                first_pid = first.makefile("rb").readline()
                assert first_pid.strip().isdigit()
                second.sendall(b"go\n")
                # Nothing may answer the second client while the first child runs.
                ready, _, _ = select.select([second], [], [], 0.2)
                assert ready == []
                first.sendall(b"go\n")
                second_pid = second.makefile("rb").readline()
                assert second_pid.strip().isdigit(), second_pid
                assert second_pid != first_pid

    def test_shutdown_is_not_blocked_by_a_full_house(self, lock_path: Path) -> None:
        """With max_children busy children the loop still answers shutdown() at once."""
        bound = self._server(lock_path)
        thread = threading.Thread(target=bound.serve_forever, kwargs={"poll_interval": 60})
        thread.start()
        with socket.create_connection(("127.0.0.1", bound.port), timeout=TIMEOUT) as first:
            assert first.makefile("rb").readline().strip().isdigit()
            stopper = threading.Thread(target=bound.shutdown)
            stopper.start()
            stopper.join(TIMEOUT)
            assert not stopper.is_alive()
            thread.join(TIMEOUT)
            assert not thread.is_alive()
            first.sendall(b"go\n")
        bound.close()


_STDIO_SCRIPT = """
import socket
from servekit import StreamConnection, forked, server, tcp

def handler(conn: StreamConnection) -> None:
    print("written by the child")
    conn.socket.sendall(b"ok")

print("buffered by the parent")  # stdout is a pipe: held in the buffer, not written yet
with server(tcp("127.0.0.1", 0), handler, dispatcher=forked()).bind() as bound:
    with socket.create_connection(("127.0.0.1", bound.port), timeout=10) as client:
        assert bound.handle_request()
        assert client.recv(2) == b"ok"
"""


def test_child_output_is_neither_lost_nor_doubled() -> None:
    # The parent flushes stdio before forking (else the child would inherit
    # its buffer and write it again) and the child before os._exit (which
    # would drop what the handler printed).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    done = subprocess.run(
        [sys.executable, "-c", _STDIO_SCRIPT], capture_output=True, text=True, env=env, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["buffered by the parent", "written by the child"]


def test_what_a_gate_lets_through_waits_for_max_children() -> None:
    """Nine connections held at the gate get their first lines at once: three children at a time, no more.

    Each child says when it starts and waits for the test's go; the test lets
    one go only while three are running, so a fourth start before a go means
    the gate let a connection past the workers' limit.
    """

    def handler(conn: StreamConnection[IPAddress]) -> None:
        conn.rfile.readline()  # the first line, which the gate waited for
        conn.wfile.write(b"started %d\n" % os.getpid())
        conn.rfile.readline()  # the test's go
        conn.wfile.write(b"done\n")

    log = EventLog()
    spec = server(
        tcp("127.0.0.1", 0), handler, dispatcher=forked(max_children=3), gate=first_line(timeout=TIMEOUT), on_event=log
    )
    with serving(spec.bind(), poll_interval=0.05) as bound:
        clients = [socket.create_connection(bound.address, timeout=TIMEOUT) for _ in range(9)]
        try:
            log.wait_for(Accepted, 9, timeout=TIMEOUT)  # all nine are held at the gate
            for client in clients:
                client.sendall(b"hello\n")
            running: set[socket.socket] = set()
            released: set[socket.socket] = set()
            pids: dict[socket.socket, int] = {}
            finished = 0
            deadline = time.monotonic() + TIMEOUT
            while finished < 9:
                waiting = [c for c in clients if c.fileno() >= 0]
                ready, _, _ = select.select(waiting, [], [], max(0.0, deadline - time.monotonic()))
                assert ready, f"{len(running)} running, {finished} done: no progress"
                for client in ready:
                    line = recv_line(client)
                    if line.startswith(b"started "):
                        pids[client] = int(line.split()[1])
                        running.add(client)
                        assert len(running) <= 3, "a fourth child started while three were running"
                    else:
                        assert line == b"done\n"
                        running.discard(client)
                        pids.pop(client)
                        client.close()
                        finished += 1
                held = running - released
                if held and not released & running and (len(running) == 3 or finished + len(running) == 9):
                    # One at a time: the next start may only follow this one's end.
                    chosen = held.pop()
                    released.add(chosen)
                    chosen.sendall(b"go\n")
        finally:
            for client in clients:
                client.close()
            for pid in pids.values():  # (a failure: the children inherited the clients, and wait)
                os.kill(pid, signal.SIGKILL)
        closed = log.wait_for(ConnectionClosed, 9, timeout=TIMEOUT)
    assert [c.reason for c in closed] == ["finished"] * 9


def test_no_busy_loop_once_children_that_filled_max_children_exit() -> None:
    """A child forked while the loop waits on its siblings' pidfds must not keep them in the loop's epoll set.

    Ten children fill max_children (the loop waits on their pidfds, on epoll:
    more than eight fds); one ends and an eleventh is forked; the other nine
    end while it runs.  Their pidfds, closed by the parent, must leave the
    loop's wait: had the eleventh child inherited them, epoll would report
    them ready for as long as it lives, and the loop would spin.
    """

    def handler(conn: StreamConnection[IPAddress]) -> None:
        conn.rfile.readline()
        conn.wfile.write(b"started\n")
        conn.rfile.readline()  # the test's go
        conn.wfile.write(b"done\n")

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    with serving(server(tcp("127.0.0.1", 0), handler, dispatcher=forked(max_children=10)).bind()) as bound:
        clients = [socket.create_connection(bound.address, timeout=TIMEOUT) for _ in range(11)]
        try:
            for client in clients[:10]:
                client.sendall(b"hello\n")
                assert recv_line(client) == b"started\n"
            clients[0].sendall(b"go\n")
            assert recv_line(clients[0]) == b"done\n"
            clients[10].sendall(b"hello\n")  # forked once the first child is reaped
            assert recv_line(clients[10]) == b"started\n"
            for client in clients[1:10]:
                client.sendall(b"go\n")
                assert recv_line(client) == b"done\n"
            before, began = cpu(), time.monotonic()
            threading.Event().wait(1.0)  # the window measured: the server has nothing to do in it
            share = (cpu() - before) / (time.monotonic() - began)
            clients[10].sendall(b"go\n")
            assert recv_line(clients[10]) == b"done\n"
        finally:
            for client in clients:
                client.close()
    assert share < 0.3, f"the serving process used {share:.0%} of a core while it had nothing to do"
