"""Handler failures, bind errors and bad options: reported clearly, nothing lost."""

from __future__ import annotations

import errno
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from servekit import (
    BindError,
    DeadlineExceeded,
    Deadlines,
    Dispatcher,
    ServerClosedError,
    StreamConnection,
    forked,
    inline,
    server,
    tcp,
    threaded,
    udp,
    unix_datagram,
    unix_stream,
)
from servekit.testing import driving, serving, stream_exchange

TIMEOUT = 10.0


def fail_on_boom(conn: StreamConnection) -> None:
    data = conn.socket.recv(1024)
    if data == b"boom":
        raise ValueError("boom requested")
    conn.socket.sendall(data)


class TestHandlerExceptions:
    @pytest.mark.parametrize("dispatcher", [inline(), threaded()], ids=["inline", "threaded"])
    def test_logged_request_closed_server_keeps_serving(
        self, dispatcher: Dispatcher, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An Exception is logged on servekit.server with its traceback; the next request is served."""
        caplog.set_level(logging.ERROR, logger="servekit.server")
        with serving(server(tcp("127.0.0.1", 0), fail_on_boom, dispatcher=dispatcher).bind(), poll_interval=0.01) as bound:
            assert stream_exchange(bound.address, b"boom", timeout=TIMEOUT) == b""  # closed, no answer
            assert stream_exchange(bound.address, b"fine", timeout=TIMEOUT) == b"fine"
        [record] = [r for r in caplog.records if r.name == "servekit.server"]
        assert record.levelno == logging.ERROR
        assert record.getMessage().startswith("error handling a request from ('127.0.0.1', ")
        assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)

    def test_on_error_receives_request_and_exception(self) -> None:
        """A custom on_error gets the request and the exception instead of the log."""
        seen: list[tuple[object, BaseException]] = []
        srv = server(tcp("127.0.0.1", 0), fail_on_boom, on_error=lambda req, exc: seen.append((req, exc)))
        with serving(srv.bind(), poll_interval=0.01) as bound:
            assert stream_exchange(bound.address, b"boom", timeout=TIMEOUT) == b""
        [(request, exc)] = seen
        assert isinstance(request, StreamConnection)
        assert str(exc) == "boom requested"

    def test_forked_child_failure_is_contained(self) -> None:
        """A failing child process takes nothing down; the next request is served."""
        with serving(server(tcp("127.0.0.1", 0), fail_on_boom, dispatcher=forked()).bind(), poll_interval=0.01) as bound:
            assert stream_exchange(bound.address, b"boom", timeout=TIMEOUT) == b""
            assert stream_exchange(bound.address, b"fine", timeout=TIMEOUT) == b"fine"

    def test_verify_rejects_without_dispatching(self) -> None:
        """A request the verify predicate refuses is closed unhandled."""
        handled: list[object] = []

        def record(conn: StreamConnection) -> None:
            handled.append(conn.client_address)

        with serving(server(tcp("127.0.0.1", 0), record, verify=lambda addr: False).bind(), poll_interval=0.01) as bound:
            assert stream_exchange(bound.address, b"hi", timeout=TIMEOUT) == b""
        assert handled == []


class TestSystemExitAndKeyboardInterrupt:
    """A handler's SystemExit/KeyboardInterrupt stops and closes the server, then propagates."""

    @pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt])
    @pytest.mark.parametrize("dispatcher", [inline(), threaded()], ids=["inline", "threaded"])
    def test_propagates_from_serve_forever_and_closes(
        self, exc_type: type[BaseException], dispatcher: Dispatcher
    ) -> None:
        def quit_now(conn: StreamConnection) -> None:
            raise exc_type

        bound = server(tcp("127.0.0.1", 0), quit_now, dispatcher=dispatcher).bind()
        address, port = bound.address, bound.port
        raised: list[BaseException] = []

        def run() -> None:
            try:
                bound.serve_forever(poll_interval=60)
            except BaseException as exc:
                raised.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        assert stream_exchange(address, b"x", timeout=TIMEOUT) == b""
        thread.join(TIMEOUT)
        assert not thread.is_alive()
        assert [type(exc) for exc in raised] == [exc_type]
        assert bound.closed
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
        with pytest.raises(ServerClosedError, match=r"the server on TCP 127\.0\.0\.1:\d+ is closed"):
            bound.serve_forever()

    def test_forked_child_exit_only_ends_the_child(self) -> None:
        """In a forked child, SystemExit ends that child only; the server keeps serving."""

        def exit_on_quit(conn: StreamConnection) -> None:
            data = conn.socket.recv(1024)
            if data == b"quit":
                raise SystemExit(3)
            conn.socket.sendall(data)

        with serving(server(tcp("127.0.0.1", 0), exit_on_quit, dispatcher=forked()).bind(), poll_interval=0.01) as bound:
            assert stream_exchange(bound.address, b"quit", timeout=TIMEOUT) == b""
            assert stream_exchange(bound.address, b"still", timeout=TIMEOUT) == b"still"


class TestBindErrors:
    def test_tcp_address_in_use_names_transport_and_address(self) -> None:
        with server(tcp("127.0.0.1", 0), fail_on_boom).bind() as first:
            port = first.port
            with pytest.raises(BindError) as info:
                server(tcp("127.0.0.1", port), fail_on_boom).bind()
        assert info.value.errno == errno.EADDRINUSE
        assert str(info.value) == f"[Errno {errno.EADDRINUSE}] cannot bind TCP 127.0.0.1:{port}: Address already in use"
        assert isinstance(info.value, OSError)

    def test_unix_path_in_use_names_the_path(self, short_tmp: Path) -> None:
        path = short_tmp / "taken"
        path.write_text("not a socket")
        with pytest.raises(BindError, match=f"cannot bind Unix stream {path}: Address already in use"):
            server(unix_stream(path), fail_on_boom).bind()
        assert path.read_text() == "not a socket"

    def test_unbindable_address(self) -> None:
        with pytest.raises(BindError, match=r"cannot bind UDP 192\.0\.2\.1:9: "):
            server(udp("192.0.2.1", 9), lambda dg: None).bind()


class TestInvalidOptions:
    @pytest.mark.parametrize(
        ("make", "error", "message"),
        [
            (lambda: tcp("127.0.0.1", "80"), TypeError, "port must be an int, got str '80'"),  # type: ignore[arg-type]
            (lambda: tcp("127.0.0.1", 70000), ValueError, "port must be between 0 and 65535, got 70000"),
            (lambda: tcp("127.0.0.1", True), TypeError, "port must be an int, got bool True"),
            (lambda: tcp(None, 0), TypeError, "host must be a str, got NoneType None"),  # type: ignore[arg-type]
            (lambda: tcp("127.0.0.1", 0, backlog=-1), ValueError, "backlog must be >= 0, got -1"),
            (lambda: tcp("127.0.0.1", 0, reuse_port="yes"), TypeError, "reuse_port must be a bool, got str 'yes'"),  # type: ignore[arg-type]
            (lambda: udp("127.0.0.1", 0, max_packet_size=0), ValueError, "max_packet_size must be between 1 and 65535, got 0"),
            (lambda: unix_stream(5), TypeError, "path must be a str or os.PathLike, got int 5"),  # type: ignore[arg-type]
            (lambda: unix_datagram(b"/tmp/x"), TypeError, "path must be a str or os.PathLike, got bytes b'/tmp/x'"),  # type: ignore[arg-type]
            (lambda: forked(max_children=0), ValueError, "max_children must be >= 1, got 0"),
            (lambda: threaded(daemon=1), TypeError, "daemon must be a bool, got int 1"),  # type: ignore[arg-type]
            (lambda: server(tcp("127.0.0.1", 0), 5), TypeError, "handler must be callable, got int 5"),  # type: ignore[call-overload]
            (lambda: server(tcp("127.0.0.1", 0), print, timeout=-1), ValueError, "timeout must be >= 0 seconds, got -1"),
        ],
    )
    def test_rejected_with_option_and_value_named(self, make: object, error: type[Exception], message: str) -> None:
        assert callable(make)
        with pytest.raises(error) as info:
            make()
        assert str(info.value) == message

    def test_poll_interval(self) -> None:
        with server(tcp("127.0.0.1", 0), print).bind() as bound:
            with pytest.raises(ValueError, match=r"poll_interval must be > 0 seconds, got 0"):
                bound.serve_forever(poll_interval=0)
            assert not bound.closed  # a bad argument is not a reason to close


def test_no_fd_left_after_bind_failure() -> None:
    """A failed bind closes the socket it made (the leak check would see it otherwise)."""
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
    with server(tcp("127.0.0.1", 0), print).bind() as first:
        port = first.port
        for _ in range(5):
            with pytest.raises(BindError):
                server(tcp("127.0.0.1", port), print).bind()
    after = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 0
    assert after == before


def test_bind_error_keeps_the_original_oserror_subclass(short_tmp: Path) -> None:
    """ENOENT stays a FileNotFoundError as well as being a BindError."""
    path = short_tmp / "missing" / "sock"
    with pytest.raises(FileNotFoundError) as info:
        server(unix_stream(path), print).bind()
    assert isinstance(info.value, BindError)
    assert info.value.errno == errno.ENOENT
    assert str(info.value) == f"[Errno {errno.ENOENT}] cannot bind Unix stream {path}: No such file or directory"


def _bind_failure(bind: Callable[[], object]) -> BindError:
    """The BindError that *bind* raises."""
    with pytest.raises(BindError) as info:
        bind()
    return info.value


def _address_in_use(tmp: Path) -> BindError:
    with server(tcp("127.0.0.1", 0), print).bind() as first:
        return _bind_failure(server(tcp("127.0.0.1", first.port), print).bind)


def _missing_directory(tmp: Path) -> BindError:
    return _bind_failure(server(unix_stream(tmp / "missing" / "sock"), print).bind)


def _not_a_directory(tmp: Path) -> BindError:
    (tmp / "file").write_text("")
    return _bind_failure(server(unix_stream(tmp / "file" / "sock"), print).bind)


#: The user a root test process drops to in a child, so that port 1 is refused for real.
NOBODY = 65534


def _privileged_port(tmp: Path) -> BindError:
    """Binding port 1 refused (EACCES); as root, in a child that has become user nobody first."""
    if os.geteuid() != 0:
        return _bind_failure(server(tcp("127.0.0.1", 1), print).bind)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop root, fail to bind, send the error back pickled
        status = 1
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                server(tcp("127.0.0.1", 1), print).bind().close()
            except BindError as exc:
                os.write(write, pickle.dumps(exc))
                status = 0
        finally:
            os._exit(status)
    os.close(write)
    with open(read, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child running as nobody bound port 1, or failed otherwise"
    error = pickle.loads(data)
    assert isinstance(error, BindError)
    return error


def _privileged_ports_refused() -> bool:
    """Whether binding port 1 fails with EACCES for an unprivileged user (not where the sysctl opens every port)."""
    try:
        first_free = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        first_free = 1024
    return first_free > 1


class TestBindErrorsPickle:
    """A bind error survives pickle (a supervisor passes it between processes) as the same kinds of error."""

    @pytest.mark.parametrize(
        ("fail", "kind", "code"),
        [
            (_address_in_use, OSError, errno.EADDRINUSE),
            (_missing_directory, FileNotFoundError, errno.ENOENT),
            (_not_a_directory, NotADirectoryError, errno.ENOTDIR),
            pytest.param(
                _privileged_port,
                PermissionError,
                errno.EACCES,
                marks=pytest.mark.skipif(
                    not _privileged_ports_refused(), reason="every user may bind port 1 here: no EACCES to pickle"
                ),
            ),
        ],
        ids=["address-in-use", "missing-directory", "not-a-directory", "permission"],
    )
    def test_round_trip_keeps_class_errno_and_message(
        self, short_tmp: Path, fail: Callable[[Path], BindError], kind: type[OSError], code: int
    ) -> None:
        error = fail(short_tmp)
        assert isinstance(error, kind) and error.errno == code
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            copy = pickle.loads(pickle.dumps(error, protocol))
            assert isinstance(copy, BindError), protocol
            assert isinstance(copy, kind), protocol
            assert type(copy) is type(error), protocol
            assert (copy.errno, copy.strerror, copy.filename, str(copy)) == (
                error.errno,
                error.strerror,
                None,
                str(error),
            )

    def test_filename_and_notes_survive(self, short_tmp: Path) -> None:
        """A file name and notes added to a bind error are pickled with it."""
        error = _missing_directory(short_tmp)
        error.filename = str(short_tmp / "missing")
        error.add_note("while starting worker 3")
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            copy = pickle.loads(pickle.dumps(error, protocol))
            assert isinstance(copy, FileNotFoundError) and isinstance(copy, BindError)
            assert copy.filename == error.filename
            assert str(copy) == str(error) == (
                f"[Errno {errno.ENOENT}] cannot bind Unix stream {short_tmp / 'missing' / 'sock'}: "
                f"No such file or directory: {str(short_tmp / 'missing')!r}"
            )
            assert copy.__notes__ == ["while starting worker 3"]

    def test_loads_in_a_fresh_interpreter(self, short_tmp: Path) -> None:
        """Another process, which never made that kind of bind error, loads it as both kinds."""
        error = _missing_directory(short_tmp)
        code = (
            "import pickle, sys\n"
            "from servekit import BindError\n"
            "e = pickle.loads(sys.stdin.buffer.read())\n"
            "print(isinstance(e, BindError), isinstance(e, FileNotFoundError), e.errno, e)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], input=pickle.dumps(error), capture_output=True, timeout=TIMEOUT, check=False
        )
        assert done.returncode == 0, done.stderr.decode()
        assert done.stdout.decode().strip() == f"True True {errno.ENOENT} {error}"

    def test_a_pickle_naming_no_oserror_fails_clearly(self) -> None:
        from servekit.errors import _load_bind_error

        with pytest.raises(TypeError) as info:
            _load_bind_error("builtins", "int", (2, "x"))
        assert str(info.value) == (
            "cannot load a BindError that is also builtins.int: <class 'int'> is not an OSError subclass"
        )


def test_deadline_exceeded_pickles() -> None:
    """A DeadlineExceeded a handler's read raised survives pickle with its deadline and limit."""
    cut: list[DeadlineExceeded] = []
    done = threading.Event()

    def patient(conn: StreamConnection) -> None:
        try:
            conn.rfile.read(1)
        except DeadlineExceeded as exc:
            cut.append(exc)
        finally:
            done.set()

    with driving(patient, deadlines=Deadlines(first_byte=0.05)):
        assert done.wait(TIMEOUT)  # the client stays silent until the handler is cut
    [error] = cut
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        copy = pickle.loads(pickle.dumps(error, protocol))
        assert type(copy) is DeadlineExceeded
        assert (copy.which, copy.seconds, str(copy)) == ("first_byte", 0.05, str(error))
