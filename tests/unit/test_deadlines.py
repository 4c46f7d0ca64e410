"""Per-connection deadlines over socketpairs: each cuts what it should, and nothing else.

Limits are tenths of a second; elapsed times are asserted with a generous
upper bound (the suite also runs on a loaded machine).  The client end runs
in a thread where a test needs one, pacing itself with ``Event.wait``.
"""

from __future__ import annotations

import math
import pickle
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType

import attrs
import pytest

from servekit import DeadlineExceeded, Deadlines, StreamConnection
from servekit.testing import recv_exactly

TIMEOUT = 10.0
#: How much later than its limit a deadline may cut, on a busy machine.
SLACK = 2.0
#: A trickling client's pace: one byte every PACE seconds.
PACE = 0.05

Pair = tuple[socket.socket, socket.socket]


@pytest.fixture
def pair() -> Iterator[Pair]:
    server_end, client_end = socket.socketpair()
    client_end.settimeout(TIMEOUT)
    with server_end, client_end:
        yield server_end, client_end


def _connection(sock: socket.socket, deadlines: Deadlines | None, prefix: bytes = b"") -> StreamConnection[str]:
    return StreamConnection(sock, "peer", deadlines=None if deadlines is None else deadlines.clock(), prefix=prefix)


def _cut(action: Callable[[], object]) -> tuple[DeadlineExceeded, float]:
    """Run *action*, which must raise DeadlineExceeded; return it and how long the action took."""
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        action()
    return info.value, time.monotonic() - start


def _work(seconds: float) -> None:
    """Stands in for a handler's computation between a read and a write (nothing is waited for)."""
    threading.Event().wait(seconds)


def _rcvtimeo(sock: socket.socket) -> float:
    """*sock*'s SO_RCVTIMEO, in seconds (0: none)."""
    seconds, micros = struct.unpack("@ll", sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16))
    return float(seconds + micros / 1e6)


class _Peer:
    """The client end, run by *script* in a thread for a ``with`` block.

    On exit the peer is told to stop, its socket is shut down (which ends
    any recv() it is blocked in) and the thread is joined.  A peer cut off
    by the server (EPIPE, ECONNRESET, EOF) just ends.
    """

    def __init__(self, sock: socket.socket, script: Callable[[_Peer], None]) -> None:
        self.sock = sock
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(script,), name="deadline-peer")

    def _run(self, script: Callable[[_Peer], None]) -> None:
        try:
            script(self)
        except OSError as exc:
            if not self.stop.is_set() and not isinstance(exc, (BrokenPipeError, ConnectionResetError)):
                self.errors.append(exc)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)

    def pace(self, seconds: float = PACE) -> bool:
        """Wait *seconds* between two sends (pacing); False once the peer must stop."""
        return not self.stop.wait(seconds)

    def __enter__(self) -> _Peer:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._thread.join(TIMEOUT)
        assert not self._thread.is_alive(), "the peer thread did not finish"
        if kind is None:
            assert not self.errors, self.errors


def _trickle(peer: _Peer) -> None:
    """One byte every PACE seconds, never a newline."""
    while peer.pace():
        peer.sock.sendall(b"x")


def _echo_client(lines: int, pause: float) -> Callable[[_Peer], None]:
    """Send a line, wait for its echo, pause; *lines* times; then stay silent until told to stop."""

    def script(peer: _Peer) -> None:
        for number in range(lines):
            line = b"line %d\n" % number
            peer.sock.sendall(line)
            if recv_exactly(peer.sock, len(line)) != line or not peer.pace(pause):
                return
        peer.stop.wait(TIMEOUT)

    return script


def _busy_client(peer: _Peer) -> None:
    """A line every PACE seconds, each echo awaited, until the connection ends."""
    while peer.pace():
        peer.sock.sendall(b"ping\n")
        if recv_exactly(peer.sock, 5) != b"ping\n":
            return


def _echo(conn: StreamConnection[str]) -> None:
    for line in conn.rfile:
        conn.wfile.write(line)


class TestCuts:
    def test_a_silent_client_is_cut_at_the_first_byte_deadline(self, pair: Pair) -> None:
        start = time.monotonic()
        conn = _connection(pair[0], Deadlines(first_byte=0.2, request=0.4, idle=1.0))
        exc, _ = _cut(conn.rfile.readline)
        elapsed = time.monotonic() - start
        assert (exc.which, exc.seconds) == ("first_byte", 0.2)
        assert str(exc) == "no first byte within 0.2 s (first_byte deadline)"
        assert 0.2 <= elapsed < 0.2 + SLACK
        assert conn.deadline_exceeded is exc
        conn.close()

    def test_a_silent_client_is_cut_at_the_request_deadline(self, pair: Pair) -> None:
        start = time.monotonic()
        conn = _connection(pair[0], Deadlines(request=0.2))
        exc, _ = _cut(conn.rfile.readline)
        elapsed = time.monotonic() - start
        assert (exc.which, exc.seconds) == ("request", 0.2)
        assert str(exc) == "no complete request within 0.2 s (request deadline)"
        assert 0.2 <= elapsed < 0.2 + SLACK
        conn.close()

    def test_idle_cuts_a_single_wait(self, pair: Pair) -> None:
        server_end, client_end = pair
        conn = _connection(server_end, Deadlines(idle=0.2, request=5.0))
        client_end.sendall(b"half a li")
        exc, elapsed = _cut(conn.rfile.readline)
        assert (exc.which, exc.seconds) == ("idle", 0.2)
        assert str(exc) == "a single read or write waited 0.2 s (idle deadline)"
        assert 0.2 <= elapsed < 0.2 + SLACK
        conn.close()

    def test_a_trickling_client_is_cut_by_the_request_deadline_not_by_idle(self, pair: Pair) -> None:
        server_end, client_end = pair
        start = time.monotonic()
        conn = _connection(server_end, Deadlines(idle=0.3, request=0.6))
        with _Peer(client_end, _trickle):
            exc, _ = _cut(conn.rfile.readline)
            elapsed = time.monotonic() - start
            conn.close()
        assert (exc.which, exc.seconds) == ("request", 0.6)
        assert 0.6 <= elapsed < 0.6 + SLACK

    def test_idle_alone_never_cuts_a_trickling_client(self, pair: Pair) -> None:
        server_end, client_end = pair
        conn = _connection(server_end, Deadlines(idle=0.3))

        def trickle_a_line(peer: _Peer) -> None:
            for byte in b"x" * 12 + b"\n":
                if not peer.pace():
                    return
                peer.sock.sendall(bytes([byte]))

        with _Peer(client_end, trickle_a_line):
            start = time.monotonic()
            assert conn.rfile.readline() == b"x" * 12 + b"\n"
            elapsed = time.monotonic() - start
            conn.close()
        assert elapsed > 0.3  # longer than idle in all, never in one wait
        assert conn.deadline_exceeded is None

    def test_lifetime_cuts_a_busy_connection(self, pair: Pair) -> None:
        server_end, client_end = pair
        start = time.monotonic()
        conn = _connection(server_end, Deadlines(idle=0.3, request=0.3, lifetime=0.6))
        with _Peer(client_end, _busy_client):
            exc, _ = _cut(lambda: _echo(conn))
            elapsed = time.monotonic() - start
            conn.close()
        assert (exc.which, exc.seconds) == ("lifetime", 0.6)
        assert str(exc) == "the connection lasted 0.6 s (lifetime deadline)"
        assert 0.6 <= elapsed < 0.6 + SLACK

    def test_a_slow_handler_is_not_cut_by_the_request_deadline(self, pair: Pair) -> None:
        server_end, client_end = pair
        conn = _connection(server_end, Deadlines(request=0.2, idle=1.0))
        client_end.sendall(b"question\n")
        assert conn.rfile.readline() == b"question\n"
        _work(0.5)  # much longer than the request deadline
        conn.wfile.write(b"answer\n")
        assert recv_exactly(client_end, 7) == b"answer\n"
        client_end.sendall(b"next\n")
        assert conn.rfile.readline() == b"next\n"
        assert conn.deadline_exceeded is None
        conn.close()

    def test_the_request_clock_restarts_after_each_write(self, pair: Pair) -> None:
        server_end, client_end = pair
        start = time.monotonic()
        conn = _connection(server_end, Deadlines(request=0.3))
        with _Peer(client_end, _echo_client(lines=8, pause=0.1)):
            for number in range(8):
                line = conn.rfile.readline()
                assert line == b"line %d\n" % number
                conn.wfile.write(line)
            answered = time.monotonic()
            exc, _ = _cut(conn.rfile.readline)  # the client is silent now
            cut = time.monotonic()
            conn.close()
        assert answered - start > 0.3 + 0.1  # 8 requests took longer than one request's time
        assert exc.which == "request"
        assert 0.3 <= cut - answered < 0.3 + SLACK

    def test_a_write_is_bounded_by_idle(self, pair: Pair) -> None:
        conn = _connection(pair[0], Deadlines(idle=0.2, request=0.05))
        exc, elapsed = _cut(lambda: conn.wfile.write(bytes(16 * 2**20)))  # the client never reads
        assert (exc.which, exc.seconds) == ("idle", 0.2)
        assert 0.2 <= elapsed < 0.2 + SLACK
        conn.close()

    def test_a_write_is_bounded_by_lifetime(self, pair: Pair) -> None:
        start = time.monotonic()
        conn = _connection(pair[0], Deadlines(idle=5.0, lifetime=0.3))
        exc, _ = _cut(lambda: conn.wfile.write(bytes(16 * 2**20)))
        assert (exc.which, exc.seconds) == ("lifetime", 0.3)
        assert 0.3 <= time.monotonic() - start < 0.3 + SLACK
        conn.close()

    def test_after_a_cut_every_read_and_write_fails_at_once(self, pair: Pair) -> None:
        server_end, client_end = pair
        conn = _connection(server_end, Deadlines(first_byte=0.1, idle=5.0))
        first, _ = _cut(conn.rfile.readline)
        client_end.sendall(b"too late\n")
        again, elapsed = _cut(conn.rfile.readline)
        assert again.which == "first_byte" and elapsed < SLACK
        assert conn.deadline_exceeded is again
        write, elapsed = _cut(lambda: conn.wfile.write(b"x"))
        assert write.which == "first_byte" and elapsed < SLACK
        conn.close()

    def test_the_clock_starts_when_it_is_made_or_at_start(self, pair: Pair) -> None:
        clock = Deadlines(lifetime=0.5).clock(start=time.monotonic() - 1.0)
        conn = StreamConnection(pair[0], "peer", deadlines=clock)
        exc, elapsed = _cut(conn.rfile.readline)
        assert exc.which == "lifetime" and elapsed < SLACK
        conn.close()

    def test_end_of_file_is_not_a_deadline(self, pair: Pair) -> None:
        server_end, client_end = pair
        conn = _connection(server_end, Deadlines(first_byte=5.0, idle=5.0, request=5.0, lifetime=5.0))
        client_end.sendall(b"last\n")
        client_end.shutdown(socket.SHUT_WR)
        assert conn.rfile.readlines() == [b"last\n"]
        assert conn.deadline_exceeded is None
        conn.close()


class TestSocket:
    def test_the_socket_timeout_is_idle(self, pair: Pair) -> None:
        server_end, client_end = pair
        conn = _connection(server_end, Deadlines(idle=0.25, request=5.0))
        assert conn.socket.gettimeout() == 0.25
        client_end.sendall(b"line\n")
        assert conn.rfile.readline() == b"line\n"
        conn.wfile.write(b"ok\n")
        assert conn.socket.gettimeout() == 0.25  # a read or write bounded otherwise puts it back
        start = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            conn.socket.recv(1)  # a handler that uses the socket directly
        assert type(info.value) is not DeadlineExceeded
        assert 0.25 <= time.monotonic() - start < 0.25 + SLACK
        conn.close()

    def test_no_idle_leaves_the_socket_blocking(self, pair: Pair) -> None:
        conn = _connection(pair[0], Deadlines(request=0.2))
        assert conn.socket.gettimeout() is None
        conn.close()

    def test_reads_of_a_blocking_socket_wait_in_the_kernel(self, pair: Pair) -> None:
        """Without idle, rfile bounds a read with SO_RCVTIMEO, set a little short of the deadline
        and not set again while later deadlines are as far; a silent client is still cut on time."""
        server_end, client_end = pair
        conn = _connection(server_end, Deadlines(request=0.4))
        client_end.sendall(b"one\n")
        assert conn.rfile.readline() == b"one\n"
        set_to = _rcvtimeo(server_end)
        assert 0.2 < set_to < 0.4  # (and the socket stays blocking)
        assert server_end.gettimeout() is None
        conn.wfile.write(b"ok\n")  # the request deadline starts again
        client_end.sendall(b"two\n")
        assert conn.rfile.readline() == b"two\n"
        assert _rcvtimeo(server_end) == set_to  # not set again
        exc, took = _cut(conn.rfile.readline)  # silent: SO_RCVTIMEO passes first, then the deadline
        assert exc.which == "request"
        assert 0.3 <= took < 0.4 + SLACK
        conn.close()

    def test_taking_the_socket_clears_the_kernel_timeout(self, pair: Pair) -> None:
        server_end, client_end = pair
        conn = _connection(server_end, Deadlines(request=0.3))
        client_end.sendall(b"one\n")
        assert conn.rfile.readline() == b"one\n"
        assert _rcvtimeo(server_end) > 0
        assert conn.socket is server_end
        assert _rcvtimeo(server_end) == 0  # a direct read blocks, as the docs say
        client_end.sendall(b"two")  # a trickle: rfile's reads still meet the deadline, by poll()
        exc, took = _cut(conn.rfile.readline)
        assert exc.which == "request"
        assert took < 0.3 + SLACK
        conn.close()

    def test_files_report_the_socket(self, pair: Pair) -> None:
        conn = _connection(pair[0], Deadlines(idle=1.0))
        assert conn.rfile.fileno() == conn.wfile.fileno() == pair[0].fileno()
        conn.close()
        assert conn.rfile.closed and conn.wfile.closed and pair[0].fileno() == -1

    def test_without_deadlines_nothing_changes(self, pair: Pair) -> None:
        server_end, client_end = pair
        conn = StreamConnection(server_end, "peer")
        assert conn._rfile is None and conn._wfile is None  # still made on first use
        assert type(conn.rfile.raw) is socket.SocketIO  # socket.makefile("rb"), as before
        assert conn.wfile._sock is server_end
        assert conn.socket.gettimeout() is None
        client_end.sendall(b"one\n")
        assert conn.rfile.readline() == b"one\n"
        conn.wfile.write(b"two\n")
        assert client_end.recv(8) == b"two\n"
        assert conn.deadline_exceeded is None
        conn.close()

    def test_limits_too_long_for_a_socket_timeout_are_no_limits(self, pair: Pair) -> None:
        server_end, client_end = pair
        conn = _connection(server_end, Deadlines(idle=math.inf, request=1e12, lifetime=1e300))
        assert conn.socket.gettimeout() is None
        client_end.sendall(b"ping\n")
        assert conn.rfile.readline() == b"ping\n"
        conn.wfile.write(b"pong\n")
        assert client_end.recv(8) == b"pong\n"
        conn.close()


@pytest.mark.parametrize("deadlines", [None, Deadlines(idle=5.0, request=5.0)], ids=["plain", "deadlines"])
class TestPrefix:
    def test_prefix_first_then_the_socket(self, pair: Pair, deadlines: Deadlines | None) -> None:
        server_end, client_end = pair
        conn = _connection(server_end, deadlines, prefix=b"first li")
        client_end.sendall(b"ne\nsecond\nthird-and-last")
        client_end.shutdown(socket.SHUT_WR)
        assert conn.rfile.readline() == b"first line\n"
        assert conn.rfile.read(3) == b"sec"
        buffer = bytearray(5)
        assert conn.rfile.readinto(buffer) == 5
        assert buffer == b"ond\nt"
        assert conn.rfile.read() == b"hird-and-last"
        conn.close()

    def test_a_prefix_of_whole_lines(self, pair: Pair, deadlines: Deadlines | None) -> None:
        server_end, client_end = pair
        conn = _connection(server_end, deadlines, prefix=b"a\nb\r\nc")
        client_end.sendall(b"d\n")
        client_end.shutdown(socket.SHUT_WR)
        assert list(conn.rfile) == [b"a\n", b"b\r\n", b"cd\n"]
        conn.close()

    def test_a_prefix_longer_than_the_buffer(self, pair: Pair, deadlines: Deadlines | None) -> None:
        server_end, client_end = pair
        prefix = bytes(range(256)) * 100  # 25,600 bytes, every byte value, no line structure
        conn = _connection(server_end, deadlines, prefix=prefix)
        client_end.sendall(b"tail")
        client_end.shutdown(socket.SHUT_WR)
        buffer = bytearray(len(prefix) + 4)
        assert conn.rfile.readinto(buffer) == len(buffer)
        assert bytes(buffer) == prefix + b"tail"
        assert conn.rfile.read() == b""
        conn.close()

    def test_the_prefix_is_read_once(self, pair: Pair, deadlines: Deadlines | None) -> None:
        server_end, client_end = pair
        conn = _connection(server_end, deadlines, prefix=b"GET / HTTP/1.0\r\n")
        client_end.sendall(b"\r\n")
        client_end.shutdown(socket.SHUT_WR)
        assert conn.rfile.read1(100) == b"GET / HTTP/1.0\r\n"
        assert conn.rfile.read() == b"\r\n"
        assert conn.socket.gettimeout() == (None if deadlines is None else 5.0)
        conn.close()


def test_a_prefix_meets_the_first_byte_deadline(pair: Pair) -> None:
    conn = _connection(pair[0], Deadlines(first_byte=0.1, idle=0.4), prefix=b"hi\n")
    assert conn.rfile.readline() == b"hi\n"
    exc, elapsed = _cut(conn.rfile.readline)  # the client says nothing more
    assert exc.which == "idle"
    assert 0.4 <= elapsed < 0.4 + SLACK
    conn.close()


class TestDeadlines:
    def test_defaults_and_description(self) -> None:
        assert Deadlines() == Deadlines(first_byte=None, idle=None, request=None, lifetime=None)
        assert repr(Deadlines(idle=30, request=10.0)) == (
            "Deadlines(first_byte=None, idle=30, request=10.0, lifetime=None)"
        )
        deadlines = Deadlines(idle=1.0)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            deadlines.idle = 2.0  # type: ignore[misc]
        with pytest.raises(TypeError):
            Deadlines(1.0)  # type: ignore[call-arg]

    def test_each_connection_gets_its_own_clock(self) -> None:
        deadlines = Deadlines(request=1.0)
        assert deadlines.clock() is not deadlines.clock()

    @pytest.mark.parametrize(
        ("option", "value", "error", "message"),
        [
            ("first_byte", 0, ValueError, "first_byte must be > 0 seconds, got 0"),
            ("idle", -1.5, ValueError, "idle must be > 0 seconds, got -1.5"),
            ("request", math.nan, ValueError, "request must be > 0 seconds, got nan"),
            ("lifetime", "3", TypeError, "lifetime must be a number of seconds or None, got str '3'"),
            ("idle", True, TypeError, "idle must be a number of seconds or None, got bool True"),
        ],
    )
    def test_bad_values_are_refused_by_name(
        self, option: str, value: object, error: type[Exception], message: str
    ) -> None:
        with pytest.raises(error, match=f"^{re.escape(message)}$"):
            Deadlines(**{option: value})  # type: ignore[arg-type]


class TestDeadlineExceeded:
    @pytest.mark.parametrize(
        ("which", "message"),
        [
            ("first_byte", "no first byte within 3.0 s (first_byte deadline)"),
            ("idle", "a single read or write waited 3.0 s (idle deadline)"),
            ("request", "no complete request within 3.0 s (request deadline)"),
            ("lifetime", "the connection lasted 3.0 s (lifetime deadline)"),
        ],
    )
    def test_message_names_the_deadline(self, which: str, message: str) -> None:
        exc = DeadlineExceeded(which, 3)  # type: ignore[arg-type]
        assert str(exc) == message
        assert (exc.which, exc.seconds) == (which, 3)
        assert isinstance(exc, TimeoutError)  # and so an OSError
        assert exc.errno is None

    def test_it_pickles(self) -> None:
        exc = pickle.loads(pickle.dumps(DeadlineExceeded("request", 0.5)))
        assert type(exc) is DeadlineExceeded
        assert (exc.which, exc.seconds, str(exc)) == ("request", 0.5, "no complete request within 0.5 s (request deadline)")
