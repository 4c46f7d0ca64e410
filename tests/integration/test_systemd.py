"""servekit.systemd on the real thing: systemd-socket-activate passes the sockets, the test takes the notifications.

``systemd-socket-activate`` (Debian's systemd package; it needs no systemd
running) listens, waits for the first connection (or datagram), then
``exec``\\ s the program, so ``LISTEN_PID`` is the pid the test started.  It
passes the program only ``PATH``, ``HOME``, ``TERM``, ``USER``, the
``LISTEN_*`` variables and what ``-E`` names: ``NOTIFY_SOCKET`` goes through
``-E``.  The program is systemd_child.py (see its docstring), which reports
what it sees as JSON.  What needs an environment the tool cannot make
(another process's ``LISTEN_PID``, malformed variables) runs the child
directly; ``listeners()`` remembers its result for the process, so it is
never called in the test process itself.
"""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, assert_type

import pytest
from servekit import Address, AdoptedTransport, Datagram, IPAddress, StreamConnection, UnixAddress, server, systemd
from servekit.testing import recv_line

pytestmark = pytest.mark.unix

TIMEOUT = 10.0

SOCKET_ACTIVATE = shutil.which("systemd-socket-activate") or "/usr/bin/systemd-socket-activate"
#: Skipped without the tool, except under CI (.ci/run installs it): there a missing tool fails.
needs_socket_activate = pytest.mark.skipif(
    not os.access(SOCKET_ACTIVATE, os.X_OK) and not os.environ.get("CI"),
    reason="needs systemd-socket-activate (Debian: the systemd package)",
)

CHILD = Path(__file__).with_name("systemd_child.py")

#: What a service manager sets; the test's own values (if pytest runs under one) must not reach the programs it starts.
MANAGER_VARIABLES = (
    "LISTEN_PID",
    "LISTEN_PIDFDID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
)

#: The activation variables the child reports, all unset after the read.
UNSET = {"LISTEN_PID": None, "LISTEN_PIDFDID": None, "LISTEN_FDS": None, "LISTEN_FDNAMES": None}


def _environment(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in MANAGER_VARIABLES}
    env.update(extra)
    return env


def _free_ports(count: int, type: socket.SocketKind = socket.SOCK_STREAM) -> list[int]:
    """*count* different loopback ports free now (systemd-socket-activate cannot bind port 0 and say which it got).

    The probes are bound together: one after another, the kernel may give the same port twice.
    """
    probes = [socket.socket(socket.AF_INET, type) for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def _free_port(type: socket.SocketKind = socket.SOCK_STREAM) -> int:
    [port] = _free_ports(1, type)
    return port


class Activation:
    """systemd-socket-activate running the child; its output read with bounded waits."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.out = bytearray()
        self.err = bytearray()
        self.finished = False

    def _read_until(self, buffer: bytearray, stream: int, marker: bytes) -> None:
        deadline = time.monotonic() + TIMEOUT
        while marker not in buffer:
            left = deadline - time.monotonic()
            assert left > 0, f"no {marker!r} within {TIMEOUT} s: stdout {bytes(self.out)!r}, stderr {bytes(self.err)!r}"
            readable, _, _ = select.select([stream], [], [], left)
            if readable:
                chunk = os.read(stream, 65536)
                assert chunk, f"output ended before {marker!r}: stdout {bytes(self.out)!r}, stderr {bytes(self.err)!r}"
                buffer += chunk

    def listening(self, count: int) -> None:
        """Wait until the tool says it listens on all *count* sockets: ``Listening on ADDRESS as FD.``."""
        assert self.proc.stderr is not None
        self._read_until(self.err, self.proc.stderr.fileno(), f" as {systemd.LISTEN_FDS_START + count - 1}.\n".encode())

    def report(self) -> dict[str, Any]:
        """The child's JSON line (its first line of output)."""
        if b"\n" not in self.out:
            assert self.proc.stdout is not None
            self._read_until(self.out, self.proc.stdout.fileno(), b"\n")
        report: dict[str, Any] = json.loads(self.out.split(b"\n")[0])
        return report

    def finish(self) -> int:
        """Wait for the program to exit and read the rest of its output; its exit status."""
        out, err = self.proc.communicate(timeout=TIMEOUT)
        self.finished = True
        self.out += out
        self.err += err
        return self.proc.returncode


@contextmanager
def activated(options: Sequence[str], *child_args: str) -> Iterator[Activation]:
    """``systemd-socket-activate OPTIONS python systemd_child.py CHILD_ARGS`` for the block (then killed if running)."""
    assert os.access(SOCKET_ACTIVATE, os.X_OK), (
        f"{SOCKET_ACTIVATE} is missing (Debian's systemd package; .ci/run installs it)"
    )
    proc = subprocess.Popen(
        [SOCKET_ACTIVATE, *options, sys.executable, str(CHILD), *child_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_environment(SYSTEMD_LOG_TARGET="console", SYSTEMD_LOG_LEVEL="info"),
    )
    activation = Activation(proc)
    try:
        yield activation
    finally:
        if not activation.finished:
            if proc.poll() is None:
                proc.kill()
            activation.finish()


def _inspect(options: Sequence[str], knock: Callable[[], socket.socket], *adopt: tuple[str, str]) -> dict[str, Any]:
    """The child's report under systemd-socket-activate *options*; *knock* makes the contact that starts it."""
    args = [arg for which, kind in adopt for arg in ("--adopt", which, kind)]
    with activated(options, "inspect", *args) as activation:
        activation.listening(options.count("-l"))
        with knock():
            code = activation.finish()
        assert code == 0, bytes(activation.err)
        return activation.report()


def _connect(address: tuple[str, int] | str) -> Callable[[], socket.socket]:
    def knock() -> socket.socket:
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        client = socket.socket(family, socket.SOCK_STREAM)
        client.settimeout(TIMEOUT)
        client.connect(address)
        return client

    return knock


def _send_to(port: int) -> Callable[[], socket.socket]:
    def knock() -> socket.socket:
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.sendto(b"wake up", ("127.0.0.1", port))
        return client

    return knock


def _run_child(*args: str, **variables: str) -> dict[str, Any]:
    """The child's report, run directly with *variables* in its environment."""
    done = subprocess.run(
        [sys.executable, str(CHILD), *args],
        capture_output=True,
        timeout=TIMEOUT * 3,
        env=_environment(**variables),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@contextmanager
def notify_socket(where: str, tmp: Path) -> Iterator[tuple[socket.socket, str]]:
    """A Unix datagram socket for notifications, at a path in *tmp* or an abstract name; and its NOTIFY_SOCKET."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.settimeout(TIMEOUT)
        if where == "path":
            sock.bind(str(tmp / "notify"))
            yield sock, str(tmp / "notify")
        else:
            name = f"servekit-test-{uuid.uuid4().hex}"
            sock.bind("\0" + name)
            yield sock, "@" + name
    finally:
        sock.close()


def receive_until(sock: socket.socket, wanted: str) -> list[str]:
    """The notifications *sock* receives, up to and including *wanted*."""
    deadline = time.monotonic() + TIMEOUT
    received: list[str] = []
    while wanted not in received:
        assert time.monotonic() < deadline, f"no {wanted!r} within {TIMEOUT} s, got {received}"
        received.append(sock.recv(65536).decode())
    return received


@needs_socket_activate
class TestActivation:
    """A program systemd-socket-activate starts serves the socket it passes, and tells the test's socket so."""

    @pytest.mark.parametrize(
        ("which", "fdname", "where"),
        [("0", None, "path"), ("web", "web", "abstract")],
        ids=["by-index-notify-path", "by-name-notify-abstract"],
    )
    def test_serves_the_passed_socket_and_notifies(
        self, which: str, fdname: str | None, where: str, short_tmp: Path
    ) -> None:
        """READY=1 once it serves, the echo on the passed socket, STOPPING=1 and exit 0 on SIGTERM."""
        port = _free_port()
        with notify_socket(where, short_tmp) as (notifications, notify_at):
            options = ["-l", f"127.0.0.1:{port}", "-E", f"NOTIFY_SOCKET={notify_at}"]
            if fdname is not None:
                options.append(f"--fdname={fdname}")
            with activated(options, "serve", which) as activation:
                activation.listening(1)
                # The tool starts the program at the first connection; the program adopts the socket it waits on.
                with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
                    assert receive_until(notifications, "READY=1") == ["STATUS=echoing on fd 3", "READY=1"]
                    client.sendall(b"hello\n")
                    assert recv_line(client) == b"hello\n"
                report = activation.report()
                assert report["pid"] == activation.proc.pid  # the tool execs: LISTEN_PID was its own pid
                assert report["listeners"] == [[3, fdname or "unknown"]]
                assert report["same"] is True
                assert report["inheritable"] == [False]
                assert report["left"] == UNSET
                activation.proc.send_signal(signal.SIGTERM)
                assert activation.finish() == 0, bytes(activation.err)
                assert receive_until(notifications, "STOPPING=1") == ["STOPPING=1"]

    def test_names_from_fdname(self) -> None:
        """``--fdname=web:api`` names the sockets in order; socket() finds each by name or by index."""
        web, api = _free_ports(2)
        report = _inspect(
            ["-l", f"127.0.0.1:{web}", "-l", f"127.0.0.1:{api}", "--fdname=web:api"],
            _connect(("127.0.0.1", web)),
            ("api", "tcp"),
            ("1", "stream"),
            ("web", "tcp"),
        )
        assert report["listeners"] == [[3, "web"], [4, "api"]]
        assert report["inheritable"] == [False, False]
        assert report["left"] == UNSET
        assert report["adopted"] == [
            {"address": f"127.0.0.1:{api}", "fd": 4, "kind": "tcp"},
            {"address": f"127.0.0.1:{api}", "fd": 4, "kind": "stream"},
            {"address": f"127.0.0.1:{web}", "fd": 3, "kind": "tcp"},
        ]

    def test_unknown_names_and_indexes_list_the_sockets_there_are(self) -> None:
        """An unknown name is a LookupError, an index out of range an IndexError; both list the sockets passed."""
        web, api = _free_ports(2)
        report = _inspect(
            ["-l", f"127.0.0.1:{web}", "-l", f"127.0.0.1:{api}", "--fdname=web:api"],
            _connect(("127.0.0.1", web)),
            ("admin", "tcp"),
            ("2", "tcp"),
        )
        passed = "passed: 0: 'web' (fd 3), 1: 'api' (fd 4)"
        assert report["adopted"] == [
            {"error": {"type": "LookupError", "message": f"no socket named 'admin'; {passed}", "notes": []}},
            {
                "error": {
                    "type": "IndexError",
                    "message": f"no socket 2: the index must be from 0 to 1; {passed}",
                    "notes": [],
                }
            },
        ]

    def test_without_fdname_every_socket_is_unknown(self, short_tmp: Path) -> None:
        """No LISTEN_FDNAMES: every socket is named "unknown" (as sd_listen_fds_with_names); here a Unix stream one."""
        path = str(short_tmp / "activated.sock")
        report = _inspect(["-l", path], _connect(path), ("unknown", "unix_stream"), ("0", "tcp"))
        assert report["listeners"] == [[3, "unknown"]]
        assert report["adopted"][0] == {"address": path, "fd": 3, "kind": "unix_stream"}
        assert report["adopted"][1] == {
            "error": {
                "type": "ValueError",
                "message": (
                    "cannot adopt fd 3 as 'tcp': it is a Unix stream socket (AF_UNIX, SOCK_STREAM); "
                    "'tcp' takes AF_INET or AF_INET6 with SOCK_STREAM"
                ),
                "notes": ["(fd 3 is socket 0 the service manager passed, named 'unknown')"],
            }
        }

    def test_a_name_two_sockets_share_is_chosen_by_index(self) -> None:
        """With fewer names than sockets the tool repeats the last one (web:web): the name alone is ambiguous."""
        first, second = _free_ports(2)
        report = _inspect(
            ["-l", f"127.0.0.1:{first}", "-l", f"127.0.0.1:{second}", "--fdname=web"],
            _connect(("127.0.0.1", first)),
            ("web", "tcp"),
            ("1", "tcp"),
        )
        assert report["listeners"] == [[3, "web"], [4, "web"]]
        assert report["adopted"] == [
            {
                "error": {
                    "type": "LookupError",
                    "message": (
                        "2 sockets are named 'web' (indexes 0, 1): choose one by index; "
                        "passed: 0: 'web' (fd 3), 1: 'web' (fd 4)"
                    ),
                    "notes": [],
                }
            },
            {"address": f"127.0.0.1:{second}", "fd": 4, "kind": "tcp"},
        ]

    def test_more_names_than_sockets_is_an_error(self) -> None:
        """The tool passes every --fdname, even past its sockets: a count that differs is malformed (libsystemd too)."""
        port = _free_port()
        report = _inspect(
            ["-l", f"127.0.0.1:{port}", "--fdname=web:api"], _connect(("127.0.0.1", port)), ("web", "tcp")
        )
        error = {
            "type": "ValueError",
            "message": "LISTEN_FDNAMES='web:api' names 2 fd(s), but LISTEN_FDS=1 passes 1",
            "notes": [],
        }
        assert report["error"] == report["again"] == error
        assert report["left"] == UNSET
        assert report["adopted"] == [{"error": error}]

    def test_a_datagram_socket_is_no_tcp_socket(self) -> None:
        """A UDP socket (``--datagram``) as "tcp" is adopt's error, with a note naming the socket; as "udp" it binds."""
        port = _free_port(socket.SOCK_DGRAM)
        report = _inspect(
            ["--datagram", "-l", f"127.0.0.1:{port}", "--fdname=dns"], _send_to(port), ("dns", "tcp"), ("0", "udp")
        )
        assert report["adopted"] == [
            {
                "error": {
                    "type": "ValueError",
                    "message": (
                        "cannot adopt fd 3 as 'tcp': it is a UDP socket (AF_INET, SOCK_DGRAM); "
                        "'tcp' takes AF_INET or AF_INET6 with SOCK_STREAM"
                    ),
                    "notes": ["(fd 3 is socket 0 the service manager passed, named 'dns')"],
                }
            },
            {"address": f"127.0.0.1:{port}", "fd": 3, "kind": "udp"},
        ]


class TestListenersEnvironment:
    """What listeners() makes of the variables, in a child started directly with them."""

    def test_no_variables_no_sockets(self) -> None:
        report = _run_child("inspect", "--adopt", "0", "tcp")
        assert report["listeners"] == []
        assert report["adopted"] == [
            {
                "error": {
                    "type": "LookupError",
                    "message": "no socket 0: no sockets were passed (LISTEN_PID is not set)",
                    "notes": [],
                }
            }
        ]

    def test_another_processes_variables_pass_nothing_and_are_unset(self) -> None:
        """LISTEN_PID of another process (this test's, as a parent that kept them): no sockets, and the variables go."""
        report = _run_child(
            "inspect", "--adopt", "web", "tcp", LISTEN_PID=str(os.getpid()), LISTEN_FDS="1", LISTEN_FDNAMES="web"
        )
        assert report["listeners"] == []
        assert report["left"] == UNSET
        why = f"LISTEN_PID={os.getpid()} is another process's; this is {report['pid']}"
        message = f"no socket 'web': no sockets were passed ({why})"
        assert report["adopted"] == [{"error": {"type": "LookupError", "message": message, "notes": []}}]

    def test_own_pid_without_listen_fds_passes_nothing(self) -> None:
        report = _run_child("inspect", "--listen-pid-self", "--adopt", "0", "tcp", LISTEN_FDNAMES="web")
        assert report["listeners"] == []
        assert report["left"] == UNSET
        assert report["adopted"][0]["error"]["message"] == "no socket 0: no sockets were passed (LISTEN_FDS is not set)"

    @pytest.mark.parametrize(
        ("variables", "self_pid", "error"),
        [
            (
                {"LISTEN_PID": "abc", "LISTEN_FDS": "1"},
                False,
                ("ValueError", "LISTEN_PID must be a whole number from 1 to 2147483647, got 'abc'"),
            ),
            (
                {"LISTEN_PID": "-1", "LISTEN_FDS": "1"},
                False,
                ("ValueError", "LISTEN_PID must be a whole number from 1 to 2147483647, got '-1'"),
            ),
            (
                {"LISTEN_FDS": "0"},
                True,
                ("ValueError", "LISTEN_FDS must be a whole number from 1 to 2147483644, got '0'"),
            ),
            (
                {"LISTEN_FDS": " 2"},
                True,
                ("ValueError", "LISTEN_FDS must be a whole number from 1 to 2147483644, got ' 2'"),
            ),
            ({"LISTEN_FDS": "1"}, True, ("OSError", "[Errno 9] LISTEN_FDS=1 passes fd 3: Bad file descriptor")),
        ],
        ids=["pid-not-a-number", "pid-negative", "no-fds", "fds-with-space", "fd-not-open"],
    )
    def test_malformed_variables_are_errors_every_time(
        self, variables: dict[str, str], self_pid: bool, error: tuple[str, str]
    ) -> None:
        """A malformed variable is an error naming it, raised again by every call; the variables are gone."""
        report = _run_child("inspect", *(["--listen-pid-self"] if self_pid else []), "--adopt", "0", "tcp", **variables)
        expected = {"type": error[0], "message": error[1], "notes": []}
        assert report["error"] == report["again"] == expected
        assert report["adopted"] == [{"error": expected}]
        assert report["left"] == UNSET


def _types_of_socket(echo: Callable[[StreamConnection[IPAddress]], None]) -> None:
    """Type checks only (mypy runs over tests/); never called: socket() would read this process's environment."""
    assert_type(systemd.socket(0, "tcp"), AdoptedTransport[StreamConnection[IPAddress], IPAddress])
    assert_type(systemd.socket("api", "unix_stream"), AdoptedTransport[StreamConnection[UnixAddress], UnixAddress])
    assert_type(systemd.socket(0, "stream"), AdoptedTransport[StreamConnection[Address], Address])
    assert_type(systemd.socket("dns", "udp", max_packet_size=512), AdoptedTransport[Datagram[IPAddress], IPAddress])
    assert_type(systemd.socket(1, "datagram"), AdoptedTransport[Datagram[Address], Address])
    server(systemd.socket("web", "tcp"), echo)
    server(systemd.socket("dns", "udp"), echo)  # type: ignore[arg-type]  # a stream handler on a datagram socket
    systemd.socket(0, "tcp", max_packet_size=512)  # type: ignore[call-overload]  # for datagram kinds only
    systemd.socket(0, "tpc")  # type: ignore[call-overload]
    systemd.socket(0.5, "tcp")  # type: ignore[call-overload]


class TestSocketArguments:
    """socket() checks its *which* before it looks at the environment (so these run in the test process)."""

    @pytest.mark.parametrize("which", [1.0, True, None, b"web"])
    def test_which_is_an_index_or_a_name(self, which: object) -> None:
        with pytest.raises(TypeError, match=r"^which must be an index \(an int\) or a name \(a str\), got "):
            systemd.socket(which, "tcp")  # type: ignore[call-overload]

    def test_listen_fd_is_a_value(self) -> None:
        assert repr(systemd.ListenFD(3, "web")) == "ListenFD(fd=3, name='web')"
        assert systemd.ListenFD(3, "web") == systemd.ListenFD(fd=3, name="web")


@pytest.fixture
def clean_manager_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The test process's environment without a manager's variables (restored afterwards)."""
    for name in MANAGER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def manager(clean_manager_environment: pytest.MonkeyPatch, short_tmp: Path) -> Iterator[socket.socket]:
    """A notification socket bound to a path, named by NOTIFY_SOCKET."""
    with notify_socket("path", short_tmp) as (sock, where):
        clean_manager_environment.setenv("NOTIFY_SOCKET", where)
        yield sock


class TestNotify:
    """notify() and its shorthands send one datagram to NOTIFY_SOCKET, or return False without one."""

    def test_without_notify_socket_nothing_is_sent(self, clean_manager_environment: pytest.MonkeyPatch) -> None:
        assert systemd.ready() is False
        clean_manager_environment.setenv("NOTIFY_SOCKET", "")
        assert systemd.notify("READY=1") is False

    def test_shorthands(self, manager: socket.socket) -> None:
        sent = [systemd.ready(), systemd.status("warming up: 3/4"), systemd.watchdog(), systemd.stopping()]
        assert sent == [True, True, True, True]
        assert [manager.recv(4096) for _ in sent] == [
            b"READY=1",
            b"STATUS=warming up: 3/4",
            b"WATCHDOG=1",
            b"STOPPING=1",
        ]

    def test_assignments_are_lines_of_one_datagram(self, manager: socket.socket) -> None:
        assert systemd.notify("READY=1", "STATUS=café", "MAINPID=1\nEXTEND_TIMEOUT_USEC=5")
        assert manager.recv(4096) == "READY=1\nSTATUS=café\nMAINPID=1\nEXTEND_TIMEOUT_USEC=5".encode()

    def test_abstract_socket(self, clean_manager_environment: pytest.MonkeyPatch, short_tmp: Path) -> None:
        """``@name`` is the abstract socket ``\\0name``."""
        with notify_socket("abstract", short_tmp) as (sock, where):
            assert where.startswith("@")
            clean_manager_environment.setenv("NOTIFY_SOCKET", where)
            assert systemd.ready() is True
            assert sock.recv(4096) == b"READY=1"

    @pytest.mark.parametrize(
        ("args", "error", "message"),
        [
            ((), TypeError, "notify() takes at least one assignment, such as 'READY=1'"),
            ((b"READY=1",), TypeError, "assignment must be a str, got bytes b'READY=1'"),
            (("READY",), ValueError, "each line of a notification must be NAME=VALUE, got 'READY' in 'READY'"),
            (("=1",), ValueError, "each line of a notification must be NAME=VALUE, got '=1' in '=1'"),
            (("READY=1\n",), ValueError, "each line of a notification must be NAME=VALUE, got '' in 'READY=1\\n'"),
            (("STATUS=a\0b",), ValueError, "an assignment must not contain NUL, got 'STATUS=a\\x00b'"),
        ],
    )
    def test_bad_assignments(
        self, manager: socket.socket, args: tuple[object, ...], error: type[Exception], message: str
    ) -> None:
        """Checked before anything is sent, with or without a manager."""
        with pytest.raises(error) as raised:
            systemd.notify(*args)  # type: ignore[arg-type]
        assert str(raised.value) == message

    def test_a_status_is_one_line(self, manager: socket.socket) -> None:
        with pytest.raises(ValueError, match=r"^a status is one line, got 'a\\nb'$"):
            systemd.status("a\nb")

    def test_a_socket_that_is_gone_is_an_os_error(
        self, clean_manager_environment: pytest.MonkeyPatch, short_tmp: Path
    ) -> None:
        """A set NOTIFY_SOCKET that leads nowhere raises (FileNotFoundError, ConnectionRefusedError), naming it."""
        gone = str(short_tmp / "gone")
        clean_manager_environment.setenv("NOTIFY_SOCKET", gone)
        with pytest.raises(FileNotFoundError) as raised:
            systemd.ready()
        assert (
            str(raised.value)
            == f"[Errno {errno.ENOENT}] cannot notify NOTIFY_SOCKET={gone!r}: No such file or directory"
        )
        # A socket file whose socket was closed: nobody reads there.
        with notify_socket("path", short_tmp) as (_, stale):
            pass
        clean_manager_environment.setenv("NOTIFY_SOCKET", stale)
        with pytest.raises(ConnectionRefusedError, match=r"cannot notify NOTIFY_SOCKET="):
            systemd.ready()
        clean_manager_environment.setenv("NOTIFY_SOCKET", f"@servekit-test-{uuid.uuid4().hex}")
        with pytest.raises(ConnectionRefusedError, match=r"cannot notify NOTIFY_SOCKET='@servekit-test-"):
            systemd.ready()

    @pytest.mark.parametrize(
        ("where", "message"),
        [
            (
                "run/notify",
                "NOTIFY_SOCKET must be an absolute path or an abstract name starting with '@', got 'run/notify'",
            ),
            ("@", "NOTIFY_SOCKET must be an absolute path or an abstract name starting with '@', got '@'"),
            ("vsock:2:1234", "NOTIFY_SOCKET='vsock:2:1234' is an AF_VSOCK address: only Unix sockets are supported"),
        ],
    )
    def test_an_address_that_is_no_unix_socket(
        self, clean_manager_environment: pytest.MonkeyPatch, where: str, message: str
    ) -> None:
        clean_manager_environment.setenv("NOTIFY_SOCKET", where)
        with pytest.raises(ValueError) as raised:
            systemd.ready()
        assert str(raised.value) == message

    def test_a_full_queue_times_out(self, manager: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
        """A manager that does not read: the send waits for room, bounded, then raises TimeoutError."""
        monkeypatch.setattr(systemd, "_SEND_TIMEOUT", 0.05)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as flood:
            flood.connect(manager.getsockname())
            flood.setblocking(False)
            with pytest.raises(BlockingIOError):
                for _ in range(100_000):
                    flood.send(b"x")
            with pytest.raises(
                TimeoutError, match=r"^cannot notify NOTIFY_SOCKET='.*': its queue stayed full for 0.05 s$"
            ):
                systemd.ready()


class TestWatchdogInterval:
    """watchdog_interval() reads WATCHDOG_USEC (and WATCHDOG_PID) at each call."""

    def test_unset(self, clean_manager_environment: pytest.MonkeyPatch) -> None:
        assert systemd.watchdog_interval() is None

    @pytest.mark.parametrize(("usec", "seconds"), [("30000000", 30.0), ("500", 0.0005), ("1", 1e-6)])
    def test_seconds(self, clean_manager_environment: pytest.MonkeyPatch, usec: str, seconds: float) -> None:
        clean_manager_environment.setenv("WATCHDOG_USEC", usec)
        assert systemd.watchdog_interval() == seconds
        clean_manager_environment.setenv("WATCHDOG_PID", str(os.getpid()))
        assert systemd.watchdog_interval() == seconds

    def test_another_processes_watchdog(self, clean_manager_environment: pytest.MonkeyPatch) -> None:
        """Inherited variables (WATCHDOG_PID another process's) are no watchdog of this process."""
        clean_manager_environment.setenv("WATCHDOG_USEC", "30000000")
        clean_manager_environment.setenv("WATCHDOG_PID", str(os.getppid()))
        assert systemd.watchdog_interval() is None
        assert os.environ["WATCHDOG_USEC"] == "30000000"  # left as it was

    @pytest.mark.parametrize(
        ("variables", "message"),
        [
            ({"WATCHDOG_USEC": "0"}, "WATCHDOG_USEC must be a whole number from 1 to 18446744073709551614, got '0'"),
            (
                {"WATCHDOG_USEC": "18446744073709551615"},
                "WATCHDOG_USEC must be a whole number from 1 to 18446744073709551614, got '18446744073709551615'",
            ),
            (
                {"WATCHDOG_USEC": "1.5"},
                "WATCHDOG_USEC must be a whole number from 1 to 18446744073709551614, got '1.5'",
            ),
            (
                {"WATCHDOG_USEC": "1_000"},
                "WATCHDOG_USEC must be a whole number from 1 to 18446744073709551614, got '1_000'",
            ),
            (
                {"WATCHDOG_USEC": "1000", "WATCHDOG_PID": "me"},
                "WATCHDOG_PID must be a whole number from 1 to 2147483647, got 'me'",
            ),
        ],
    )
    def test_malformed(
        self, clean_manager_environment: pytest.MonkeyPatch, variables: dict[str, str], message: str
    ) -> None:
        for name, value in variables.items():
            clean_manager_environment.setenv(name, value)
        with pytest.raises(ValueError) as raised:
            systemd.watchdog_interval()
        assert str(raised.value) == message
