"""``python -m servekit``, run as a user would: binds, workers, metrics, inherited sockets, signals, errors.

The runner's contract (fixed): ``python -m servekit MODULE:HANDLER --bind
URL [--bind URL ...] [--workers N] [--metrics URL]``, URLs ``tcp://HOST:PORT``,
``unix:PATH``, ``fd://N``; SIGTERM drains and exits 0; a bad argument is
one line and exit 2.  ``examples/whoami.py`` answers ``"<host> <port>\\n"``
(``"unix\\n"`` over a Unix socket) and closes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from servekit.testing import recv_line

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TIMEOUT = 20.0
LISTENING = re.compile(r"listening on (\S+)")


class Cli:
    """A running ``python -m servekit``."""

    def __init__(self, proc: subprocess.Popen[str], addresses: list[str]) -> None:
        self.proc = proc
        self.addresses = addresses

    def tcp(self, index: int = 0) -> tuple[str, int]:
        host, _, port = self.addresses[index].rpartition(":")
        return host.strip("[]"), int(port)

    def children(self) -> set[int]:
        found = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as stat:
                        fields = stat.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == self.proc.pid:
                    found.add(int(entry))
        return found

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        """Send *sig*; the exit status and what it wrote on stderr."""
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=TIMEOUT)
        return self.proc.returncode, err


@contextmanager
def cli(*args: str, cwd: Path = ROOT, listeners: int = 1, pass_fds: tuple[int, ...] = ()) -> Iterator[Cli]:
    """Start the runner; return once it said it listens on *listeners* addresses."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "servekit", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        pass_fds=pass_fds,
        start_new_session=True,  # (its workers too are stopped at the end, whatever happened)
    )
    try:
        assert proc.stderr is not None
        addresses: list[str] = []
        seen = ""
        while len(addresses) < listeners:
            line = proc.stderr.readline()
            seen += line
            assert line, f"the runner exited: {seen}"
            match = LISTENING.search(line)
            if match:
                addresses.append(match.group(1))
        yield Cli(proc, addresses)
    finally:
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    """Kill *proc* and every process of its session (its workers), and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate(timeout=TIMEOUT)


def _ask(address: tuple[str, int] | str, data: bytes = b"") -> bytes:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(address)
        if data:
            sock.sendall(data)
        return recv_line(sock)


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "servekit", *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def test_help_is_for_a_newcomer() -> None:
    done = _run("--help")
    assert done.returncode == 0, done.stderr
    for words in ("MODULE:HANDLER", "tcp://HOST:PORT", "unix:PATH", "fd://N", "--workers", "--metrics", "SIGTERM"):
        assert words in done.stdout, words
    assert "examples.whoami:handler" in done.stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["examples.whoami:handler"], "at least one --bind"),
        (["examples.whoami:handler", "--bind", "http://x:1"], "expected tcp://HOST:PORT, unix:PATH or fd://N"),
        (["examples.whoami:handler", "--bind", "tcp://127.0.0.1:70000"], "from 0 to 65535, got '70000'"),
        (["examples.whoami:handler", "--bind", "tcp://::1:80"], "in brackets"),
        (["examples.whoami:handler", "--bind", "unix:"], "needs a path"),
        (["examples.whoami:handler", "--bind", "fd://x"], "fd:// takes a file descriptor number"),
        (["examples.whoami", "--bind", "tcp://127.0.0.1:0"], "expected MODULE:HANDLER"),
        (["examples.nosuch:handler", "--bind", "tcp://127.0.0.1:0"], "no module 'examples.nosuch'"),
        (["examples.whoami:nosuch", "--bind", "tcp://127.0.0.1:0"], "has no 'nosuch'"),
        (["examples.whoami:__doc__", "--bind", "tcp://127.0.0.1:0"], "not a handler"),
        (["examples.whoami:handler", "--bind", "tcp://127.0.0.1:0", "--workers", "0"], "at least 1, got '0'"),
        (["examples.whoami:handler", "--bind", "tcp://127.0.0.1:0", "--max-requests", "5"], "needs --workers 2"),
        (
            ["examples.whoami:handler", "--bind", "tcp://127.0.0.1:0", "--workers", "2", "--max-requests-jitter", "5"],
            "--max-requests-jitter needs --max-requests",
        ),
        (["examples.whoami:handler", "--bind", "tcp://127.0.0.1:0", "--proxy-protocol", "v3"], "invalid choice: 'v3'"),
        (["examples.whoami:handler", "--bind", "tcp://127.0.0.1:0", "--tls-cert", "nosuch.pem"], "No such file"),
        (["examples.whoami:handler", "--bind", "tcp://127.0.0.1:0", "--tls-key", "k.pem"], "--tls-key needs --tls-cert"),
    ],
)
def test_a_bad_argument_is_one_line_and_exit_2(args: list[str], says: str) -> None:
    done = _run(*args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and says in lines[0] and lines[0].startswith("python -m servekit: error: "), done.stderr


def test_an_address_in_use_is_one_line_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _run("examples.whoami:handler", "--bind", f"tcp://127.0.0.1:{port}")
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0], done.stderr


def test_whoami_on_tcp_and_unix_and_the_socket_file_is_gone_after_sigterm(tmp_path: Path) -> None:
    path = str(tmp_path / "who.sock")
    with cli("examples.whoami:handler", "--bind", "tcp://127.0.0.1:0", "--bind", f"unix:{path}", listeners=2) as run:
        with socket.create_connection(run.tcp(), timeout=TIMEOUT) as sock:
            assert recv_line(sock) == b"127.0.0.1 %d\n" % sock.getsockname()[1]
            assert sock.recv(10) == b""  # and closed
        assert _ask(path) == b"unix\n"
        status, err = run.stop()
    assert status == 0, err
    assert not os.path.exists(path)


@pytest.mark.ipv6
def test_an_ipv6_address_in_brackets() -> None:
    with cli("examples.whoami:handler", "--bind", "tcp://[::1]:0") as run:
        host, port = run.tcp()
        with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
            assert recv_line(sock) == b"::1 %d\n" % sock.getsockname()[1]
        assert run.stop()[0] == 0


def test_a_reactor_handler_is_served_too() -> None:
    with cli("cli_apps:evented", "--bind", "tcp://127.0.0.1:0", cwd=HERE) as run:
        assert _ask(run.tcp(), b"quiet\n") == b"QUIET\n"
        assert run.stop()[0] == 0


def test_an_inherited_socket_by_fd() -> None:
    with socket.socket() as inherited:
        inherited.bind(("127.0.0.1", 0))
        inherited.listen()
        fd = inherited.fileno()
        with cli("examples.whoami:handler", "--bind", f"fd://{fd}", pass_fds=(fd,)) as run:
            assert run.addresses == ["127.0.0.1:%d" % inherited.getsockname()[1]]
            assert _ask(inherited.getsockname()).startswith(b"127.0.0.1 ")
            assert run.stop()[0] == 0


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None and not os.environ.get("CI"), reason="no systemd-socket-activate")
@pytest.mark.parametrize("workers", ["1", "2"])
def test_socket_activation_through_systemd_socket_activate(tmp_path: Path, workers: str) -> None:
    """``systemd-socket-activate`` listens and starts the runner with the socket as fd 3; the runner
    (or with --workers 2 its supervisor) tells the test's notify socket READY=1 once it serves, pings
    the watchdog (WATCHDOG_USEC) while it does, and says STOPPING=1 when SIGTERM comes."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    activator = shutil.which("systemd-socket-activate")
    assert activator is not None, "systemd-socket-activate is missing (Debian's systemd package; .ci/run installs it)"
    notify_path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(notify_path)
        notify.settimeout(TIMEOUT)
        proc = subprocess.Popen(
            [activator, "-l", f"127.0.0.1:{port}", "-E", f"NOTIFY_SOCKET={notify_path}", "-E", "PYTHONPATH",
             "-E", "WATCHDOG_USEC=400000",
             sys.executable, "-m", "servekit", "examples.whoami:handler", "--bind", "fd://3", "--workers", workers],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "SYSTEMD_LOG_TARGET": "console"},
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            line = proc.stderr.readline()  # the activator's "Listening on ..." -- the socket exists from here on
            assert "Listening" in line or "listening" in line, line
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:  # starts the runner
                assert recv_line(sock) == b"127.0.0.1 %d\n" % sock.getsockname()[1]
            told = notify.recv(4096).decode().splitlines()
            while "READY=1" not in told:  # (a first watchdog ping may come before)
                told += notify.recv(4096).decode().splitlines()
            assert any(item.startswith("STATUS=") for item in told), told
            pings = 0
            while pings < 2:  # (bounded: each recv by TIMEOUT)
                pings += notify.recv(4096) == b"WATCHDOG=1"
            proc.send_signal(signal.SIGTERM)
            while (said := notify.recv(4096)) == b"WATCHDOG=1":
                pass
            assert said == b"STOPPING=1"
            _, err = proc.communicate(timeout=TIMEOUT)
            assert proc.returncode == 0, err
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=TIMEOUT)


def _pids(address: tuple[str, int], until: int, tries: int = 500) -> list[int]:
    """Ask for the worker's pid until *until* different ones answered (at most *tries* connections)."""
    seen: list[int] = []
    for _ in range(tries):
        pid = int(_ask(address))
        if pid not in seen:
            seen.append(pid)
            if len(seen) >= until:
                break
    return seen


#: Pre-fork's two ways to listen: one socket shared by the workers, or one SO_REUSEPORT socket each.
SHARING = pytest.mark.parametrize("sharing", [(), ("--reuse-port",)], ids=["shared", "reuse-port"])


@SHARING
def test_two_workers_both_serve_and_none_is_left_after_sigterm(sharing: tuple[str, ...]) -> None:
    with cli("cli_apps:pid", "--bind", "tcp://127.0.0.1:0", "--workers", "2", *sharing, cwd=HERE) as run:
        workers = run.children()
        assert len(workers) == 2, workers
        assert set(_pids(run.tcp(), until=2)) == workers
        if sharing:  # the kernel spreads connections over the sockets by a hash of the client's port
            counts = Counter(int(_ask(run.tcp())) for _ in range(40))
            assert set(counts) == workers and min(counts.values()) >= 8, counts
        status, err = run.stop()
    assert status == 0, err
    for pid in workers:
        assert not os.path.exists(f"/proc/{pid}"), pid


@SHARING
def test_a_dead_worker_is_replaced_and_max_requests_recycles_workers(sharing: tuple[str, ...]) -> None:
    args = ("cli_apps:pid", "--bind", "tcp://127.0.0.1:0", "--workers", "2", "--max-requests", "5", *sharing)
    with cli(*args, cwd=HERE) as run:
        first = run.children()
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        # Past 5 connections each, workers leave and are replaced: more pids answer than were started.
        seen = _pids(run.tcp(), until=4, tries=200)
        assert len(seen) >= 4, seen
        assert victim not in seen[2:]
        status, err = run.stop()
    assert status == 0, err
    assert "exited" in err


def test_metrics_are_the_workers_counters_added_up() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    args = ("cli_apps:pid", "--bind", "tcp://127.0.0.1:0", "--workers", "2", "--metrics", f"tcp://127.0.0.1:{metrics_port}")
    with cli(*args, cwd=HERE) as run:
        for _ in range(10):
            _ask(run.tcp())
        with socket.create_connection(("127.0.0.1", metrics_port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        with socket.create_connection(("127.0.0.1", metrics_port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET /other HTTP/1.0\r\n\r\n")
            assert recv_line(sock).startswith(b"HTTP/1.1 404")
        assert run.stop()[0] == 0
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"text/plain; version=0.0.4" in head
    assert b"\nservekit_connections_accepted_total 10\n" in b"\n" + body, body
    assert b"# TYPE servekit_handler_duration_seconds summary" in body


@SHARING
def test_sighup_reloads_without_refusing_a_connection(sharing: tuple[str, ...]) -> None:
    with cli("cli_apps:pid", "--bind", "tcp://127.0.0.1:0", "--workers", "2", *sharing, cwd=HERE) as run:
        old = run.children()
        run.proc.send_signal(signal.SIGHUP)
        answered: list[int] = []
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:  # connections all through the reload: every one answered
            answered.append(int(_ask(run.tcp())))
            if answered[-1] not in old and not (run.children() & old):
                break
        assert answered[-1] not in old, "no new worker answered"
        assert not run.children() & old
        status, err = run.stop()
    assert status == 0, err


@SHARING
def test_reload_and_drain_under_load_lose_no_request(sharing: tuple[str, ...]) -> None:
    """8 clients, a new connection per request, through a SIGHUP reload and then SIGTERM: every request
    is answered -- those in flight when SIGTERM comes too -- and afterwards connections are refused.

    (A client that connects at the very instant the last worker closes the socket, after its drain
    took the backlog, would be reset by the kernel: as for any server, so the clients stop
    connecting when SIGTERM is sent; the requests they have in flight then must all be answered.)
    """
    with cli("cli_apps:echo", "--bind", "tcp://127.0.0.1:0", "--workers", "2", *sharing, cwd=HERE) as run:
        address = run.tcp()
        answered = [0] * 8
        lost: list[str] = []
        going = threading.Barrier(9)
        stopped = threading.Event()

        def client(number: int) -> None:
            for i in range(1_000_000):  # a bound; each client stops when SIGTERM is sent
                if i == 20:
                    going.wait(TIMEOUT)  # every client is busy: on with the reload
                if stopped.is_set():
                    return
                line = b"%d.%d\n" % (number, i)
                try:
                    with socket.create_connection(address, timeout=TIMEOUT) as sock:
                        sock.sendall(line)
                        answer = recv_line(sock)
                except ConnectionRefusedError as exc:
                    if stopped.is_set():  # (a connect racing SIGTERM: refused, and no request was sent)
                        return
                    answer = repr(exc).encode()
                except OSError as exc:
                    answer = repr(exc).encode()
                if answer != line:
                    lost.append(f"{line!r} got {answer!r}")
                    return
                answered[number] += 1

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        try:
            going.wait(TIMEOUT)
            old = run.children()
            run.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + TIMEOUT
            pause = threading.Event()
            while run.children() & old and time.monotonic() < deadline:  # the old workers drain and go
                pause.wait(0.05)
            assert not run.children() & old
            before = sum(answered)
            while sum(answered) < before + 200 and time.monotonic() < deadline:  # the new ones serve
                pause.wait(0.05)
            stopped.set()
            status, err = run.stop()  # with requests in flight
        finally:
            stopped.set()
            for thread in threads:
                thread.join(TIMEOUT)
    assert status == 0, err
    assert not lost, lost[:5]
    assert sum(answered) >= before + 200, answered
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=TIMEOUT).close()


# -- signals: whichever thread takes a SIGTERM, the runner acts on it ------------------------
# A process-directed signal goes to any thread of the process; CPython runs Python
# handlers in the main thread only, once it runs bytecode again.  A SIGTERM taken by a
# pool worker while the main thread waited on a lock was lost (the runner served on); so
# was one whose handler ran while the main thread was writing a log line (the handler's
# own log line failed with "reentrant call", and logging swallowed it and the signal --
# a race seen under load, that no test can force).  The runner now acts on signals in its
# main loop, woken by the signals' wake-up fd.


def test_a_sigterm_taken_by_a_worker_thread_drains_and_exits() -> None:
    with cli("cli_apps:signal_from_a_worker", "--bind", "tcp://127.0.0.1:0", cwd=HERE) as app:
        with socket.create_connection(app.tcp(), timeout=TIMEOUT) as sock:
            assert recv_line(sock) == b"sent\n"
        assert app.proc.wait(TIMEOUT) == 0
        assert app.proc.stderr is not None
        assert "SIGTERM: draining" in app.proc.stderr.read()


@pytest.mark.parametrize("second", ["kill", "from a worker thread"])
def test_a_second_sigterm_cuts_the_drain(second: str) -> None:
    # The second SIGTERM comes while the runner waits for the drain: sent to the
    # process, or taken by the handler's pool thread (a main thread blocked in a
    # lock would not wake for that one: the drain would have run its 600 s).
    with cli("cli_apps:echo_or_signal", "--bind", "tcp://127.0.0.1:0", "--drain-seconds", "600", cwd=HERE) as app:
        with socket.create_connection(app.tcp(), timeout=TIMEOUT) as sock:
            sock.sendall(b"held\n")
            assert recv_line(sock) == b"held\n"  # its handler now waits for the next line
            app.proc.send_signal(signal.SIGTERM)
            assert app.proc.stderr is not None
            seen = ""
            while "draining" not in seen:
                line = app.proc.stderr.readline()
                assert line, seen
                seen += line
            if second == "kill":
                app.proc.send_signal(signal.SIGTERM)
            else:
                sock.sendall(b"signal\n")
            assert app.proc.wait(TIMEOUT) == 0
            assert "1 cut" in app.proc.stderr.read()
