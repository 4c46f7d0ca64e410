"""The reactor on real sockets: protocols and messages, back-pressure, time limits, offload, the books.

Every wait is bounded (``TIMEOUT``); no sleep synchronises anything (a
handler that sleeps is a workload).
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time

import pytest

from servekit import Admission, ConnectionClosed, Deadlines, HandlerStarted, Rejected, server, tcp, udp, unix_stream
from servekit.framing import datagrams, length_prefixed, lines, messages
from servekit.protocols import Output, protocol
from servekit.testing import EventLog, datagram_exchange, recv_exactly, recv_line, serving

TIMEOUT = 10.0


def echo(line: bytes) -> bytes:
    return line


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed *sock* (EOF or a reset) within the timeout; everything before is read and dropped."""
    sock.settimeout(TIMEOUT)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return True


def test_lines_are_answered_whole_split_and_pipelined() -> None:
    with serving(server(tcp("127.0.0.1", 0), lines(lambda line: line.upper())).bind()) as bound:
        with socket.create_connection(bound.address, timeout=TIMEOUT) as sock:
            sock.sendall(b"one\n")
            assert recv_line(sock) == b"ONE\n"
            sock.sendall(b"tw")
            sock.sendall(b"o\nthree\nfo")
            sock.sendall(b"ur\n")
            assert recv_exactly(sock, 15) == b"TWO\nTHREE\nFOUR\n"


def test_a_none_reply_sends_nothing_and_length_prefixed_messages() -> None:
    seen: list[bytes] = []

    def keep(message: bytes) -> bytes | None:
        seen.append(message)
        return None if message == b"quiet" else message[::-1]

    with serving(server(tcp("127.0.0.1", 0), length_prefixed(keep, size=2)).bind()) as bound:
        with socket.create_connection(bound.address, timeout=TIMEOUT) as sock:
            sock.sendall(b"\x00\x05quiet\x00\x03abc")
            assert recv_exactly(sock, 5) == b"\x00\x03cba"
    assert seen == [b"quiet", b"abc"]


class UserEcho:
    """A protocol written as a user would: only servekit.protocols.Output, for its annotation."""

    def __init__(self) -> None:
        self.out: Output[object] | None = None
        self.calls: list[str] = []

    def connected(self, out: Output[object], /) -> None:
        self.out = out
        self.calls.append(f"connected {out.peer!r}")

    def data_received(self, data: bytes, /) -> None:
        assert self.out is not None
        if data.startswith(b"bye"):
            self.out.write(b"see you\n")
            self.out.close()
            return
        self.out.write(data)

    def eof_received(self) -> None:
        self.calls.append("eof")

    def writable(self) -> None:
        self.calls.append("writable")

    def closed(self, reason: str, /) -> None:
        self.calls.append(f"closed {reason}")


def test_a_user_protocol_gets_what_the_built_in_message_protocol_gets() -> None:
    """The same books and events: accepted, started, closed with its bytes, handler counts."""
    made: list[UserEcho] = []

    def factory() -> UserEcho:
        made.append(UserEcho())
        return made[-1]

    for evented in (protocol(factory), lines(echo)):
        log = EventLog()
        with serving(server(tcp("127.0.0.1", 0), evented, on_event=log).bind()) as bound:
            with socket.create_connection(bound.address, timeout=TIMEOUT) as sock:
                sock.sendall(b"hello\n")
                assert recv_line(sock) == b"hello\n"
                sock.shutdown(socket.SHUT_WR)
                assert _closed_by_server(sock)
            [closed] = log.wait_for(ConnectionClosed, timeout=TIMEOUT)
            stats = bound.stats()
        assert closed.reason == "finished" and closed.bytes_in == 6 and closed.bytes_out == 6, closed
        assert len(log.of(HandlerStarted)) == 1
        assert stats.connections_accepted_total == stats.connections_closed_total == 1
        assert stats.handler_duration_seconds_count == 1 and stats.connections_active == 0
    [user] = made
    assert user.calls == [f"connected {user.calls[0].split(' ', 1)[1]}", "eof", "closed finished"]


def test_the_protocol_closes_after_its_last_write_is_sent() -> None:
    with serving(server(tcp("127.0.0.1", 0), protocol(UserEcho)).bind()) as bound:
        with socket.create_connection(bound.address, timeout=TIMEOUT) as sock:
            sock.sendall(b"bye\n")
            assert recv_line(sock) == b"see you\n"
            assert sock.recv(10) == b""


def test_a_line_over_the_limit_closes_only_its_connection_with_a_counted_reason() -> None:
    log = EventLog()
    spec = server(tcp("127.0.0.1", 0), lines(echo, max_length=16), on_event=log)
    with serving(spec.bind()) as bound:
        with socket.create_connection(bound.address, timeout=TIMEOUT) as other:
            other.sendall(b"before\n")
            assert recv_line(other) == b"before\n"
            with socket.create_connection(bound.address, timeout=TIMEOUT) as sock:
                sock.sendall(b"short\n" + b"x" * 17)
                assert recv_line(sock) == b"short\n"
                rest = b""
                while chunk := sock.recv(100):
                    rest += chunk
                assert rest == b""  # nothing else: no answer, no error text
            [closed] = log.wait_for(ConnectionClosed, timeout=TIMEOUT)
            other.sendall(b"after\n")
            assert recv_line(other) == b"after\n"
            stats = bound.stats()
    assert closed.reason == "too_long"
    assert stats.closed_by_reason == {"too_long": 1} and stats.handler_errors_total == 0


def test_a_client_that_never_reads_stops_being_read_at_the_high_water_mark() -> None:
    """The echo's output stays near the mark however much the client sends; then its sends block."""
    high = 64 * 1024
    buffered: list[int] = []

    class Recorder(UserEcho):
        def data_received(self, data: bytes, /) -> None:
            assert self.out is not None
            self.out.write(data)
            buffered.append(self.out.buffered)

    with serving(server(tcp("127.0.0.1", 0), protocol(Recorder, high_water=high, read_size=16384)).bind()) as bound:
        with socket.create_connection(bound.address, timeout=TIMEOUT) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(0.5)  # a bound on each send: once the server stops reading, one times out
            chunk = b"y" * 65536
            sent = 0
            with pytest.raises(TimeoutError):
                while sent < 256 * 1024 * 1024:  # a bound: the server must stop reading long before
                    sock.sendall(chunk)
                    sent += len(chunk)
            assert sent < 64 * 1024 * 1024, sent
    assert buffered and max(buffered) <= high + 16384, max(buffered)


def test_deadlines_close_silent_trickling_and_non_reading_clients() -> None:
    log = EventLog()
    limits = Deadlines(first_byte=0.3, request=0.6, idle=0.6)
    spec = server(tcp("127.0.0.1", 0), lines(echo), deadlines=limits, on_event=log)
    with serving(spec.bind()) as bound:
        silent = socket.create_connection(bound.address, timeout=TIMEOUT)
        trickling = socket.create_connection(bound.address, timeout=TIMEOUT)
        talking = socket.create_connection(bound.address, timeout=TIMEOUT)
        try:
            started = time.monotonic()
            trickling.sendall(b"x")
            closed: dict[str, float] = {}
            while len(closed) < 2 and time.monotonic() - started < TIMEOUT:
                talking.sendall(b"ping\n")  # a line within each request limit keeps it open
                assert recv_line(talking) == b"ping\n"
                for name, sock in (("silent", silent), ("trickling", trickling)):
                    if name not in closed and sock.fileno() >= 0:
                        ready, _, _ = select.select([sock], [], [], 0.1)
                        if ready and _closed_by_server(sock):
                            closed[name] = time.monotonic() - started
                            sock.close()
            silent_after, trickling_after = closed["silent"], closed["trickling"]
            talking.sendall(b"still\n")
            assert recv_line(talking) == b"still\n"
            reasons = [event.reason for event in log.wait_for(ConnectionClosed, count=2, timeout=TIMEOUT)]
            stats = bound.stats()
        finally:
            for sock in (silent, trickling, talking):
                sock.close()
    assert 0.25 <= silent_after < 3.0 and 0.55 <= trickling_after < 3.0, (silent_after, trickling_after)
    assert reasons == ["deadline", "deadline"]
    assert stats.closed_by_reason == {"deadline": 2}


@pytest.mark.parametrize("limits", [Deadlines(idle=0.5), Deadlines(request=0.5)], ids=["idle", "request"])
def test_a_client_that_stopped_reading_its_answers_is_closed_at_its_deadline(limits: Deadlines) -> None:
    log = EventLog()
    spec = server(tcp("127.0.0.1", 0), lines(echo), deadlines=limits, on_event=log)
    with serving(spec.bind()) as bound:
        with socket.socket() as hog:
            hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            hog.settimeout(TIMEOUT)
            hog.connect(bound.address)
            hog.setblocking(False)
            started = time.monotonic()
            sent = 0
            while sent < 64 * 1024 * 1024:  # until the server stops reading (a bound, far past the mark)
                try:
                    sent += hog.send(b"z" * 1023 + b"\n")
                except BlockingIOError:
                    break
            [closed] = log.wait_for(ConnectionClosed, timeout=TIMEOUT)
            took = time.monotonic() - started
    assert sent < 64 * 1024 * 1024
    assert closed.reason == "deadline" and 0.45 <= took < 5.0, (closed, took)


def test_offloaded_answers_keep_each_connections_order_on_few_threads() -> None:
    """40 connections x 5 lines, each answer blocking a few ms, on 4 threads: all in order."""

    def slow(line: bytes) -> bytes:
        time.sleep(0.002 * (line[-2] % 3))  # the workload: a blocking call of varying length
        return b"re " + line

    before = threading.active_count()
    with serving(server(tcp("127.0.0.1", 0), lines(slow, offload=4)).bind()) as bound:
        assert threading.active_count() == before + 5  # the serving thread and 4 of the pool
        socks = [socket.create_connection(bound.address, timeout=TIMEOUT) for _ in range(40)]
        try:
            for i, sock in enumerate(socks):
                sock.sendall(b"".join(b"%d.%d\n" % (i, n) for n in range(5)))
            for i, sock in enumerate(socks):
                expected = b"".join(b"re %d.%d\n" % (i, n) for n in range(5))
                assert recv_exactly(sock, len(expected)) == expected
        finally:
            for sock in socks:
                sock.close()
    assert threading.active_count() == before


def test_a_failing_message_handler_closes_its_connection_and_the_server_goes_on() -> None:
    errors: list[Exception] = []

    def picky(line: bytes) -> bytes:
        if line == b"boom\n":
            raise ValueError("no boom")
        return line

    for offload in (0, 2):
        errors.clear()
        log = EventLog()
        spec = server(tcp("127.0.0.1", 0), lines(picky, offload=offload), on_event=log,
                      on_error=lambda conn, exc: errors.append(exc))  # fmt: skip
        with serving(spec.bind()) as bound:
            with socket.create_connection(bound.address, timeout=TIMEOUT) as sock:
                sock.sendall(b"boom\n")
                assert _closed_by_server(sock)
            with socket.create_connection(bound.address, timeout=TIMEOUT) as sock:
                sock.sendall(b"fine\n")
                assert recv_line(sock) == b"fine\n"
            log.wait_for(ConnectionClosed, timeout=TIMEOUT)
            stats = bound.stats()
        assert [str(exc) for exc in errors] == ["no boom"]
        assert stats.handler_errors_total == 1 and stats.closed_by_reason == {"error": 1}, stats


def test_admission_refuses_past_the_limit_and_close_clients_closes_reactor_connections() -> None:
    log = EventLog()
    spec = server(tcp("127.0.0.1", 0), lines(echo), admission=Admission(max_connections=1), on_event=log)
    with serving(spec.bind()) as bound:
        with socket.create_connection(bound.address, timeout=TIMEOUT) as first:
            first.sendall(b"hi\n")
            assert recv_line(first) == b"hi\n"
            closed = bound.close_clients()
            assert len(closed) == 1
            assert _closed_by_server(first)
        [event] = log.wait_for(ConnectionClosed, timeout=TIMEOUT)
        assert event.reason == "closed"
    assert not log.of(Rejected)


def test_tcp_and_unix_listeners_on_one_reactor(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "s")
    with serving(server((tcp("127.0.0.1", 0), unix_stream(path)), lines(echo)).bind()) as bound:
        for address, family in ((bound.addresses[0], socket.AF_INET), (path, socket.AF_UNIX)):
            with socket.socket(family) as sock:
                sock.settimeout(TIMEOUT)
                sock.connect(address)
                sock.sendall(b"both\n")
                assert recv_line(sock) == b"both\n"


@pytest.mark.parametrize("offload", [0, 3])
def test_datagrams_are_answered_inline_and_offloaded(offload: int) -> None:
    with serving(server(udp("127.0.0.1", 0), datagrams(lambda data: data * 2, offload=offload)).bind()) as bound:
        assert datagram_exchange(bound.address, b"ab") == b"abab"


def test_drain_closes_waiting_connections_at_once_and_finishes_answers_in_flight() -> None:
    gate = threading.Event()
    in_hand = threading.Event()

    def held(line: bytes) -> bytes:
        if line == b"slow\n":
            in_hand.set()
        gate.wait(TIMEOUT)  # the workload: an answer that takes until the drain began
        return line

    spec = server(tcp("127.0.0.1", 0), lines(held, offload=2))
    with serving(spec.bind()) as bound:
        waiting = socket.create_connection(bound.address, timeout=TIMEOUT)
        busy = socket.create_connection(bound.address, timeout=TIMEOUT)
        try:
            gate.set()
            waiting.sendall(b"first\n")
            assert recv_line(waiting) == b"first\n"  # now between messages
            gate.clear()
            busy.sendall(b"slow\n")
            assert in_hand.wait(TIMEOUT)  # the server has it: a drain now must answer it
            reports = []
            drainer = threading.Thread(target=lambda: reports.append(bound.drain(TIMEOUT)))
            drainer.start()
            assert _closed_by_server(waiting)  # closed at once, its answer sent before
            gate.set()
            assert recv_line(busy) == b"slow\n"
            assert busy.recv(10) == b""  # closed once answered
            busy.close()
            drainer.join(TIMEOUT)
        finally:
            waiting.close()
            busy.close()
    [report] = reports
    assert report.cut == 0 and report.finished == 2, report


class Netstrings:
    """A framing written as a user would (``<length>:<payload>,``), only the documented two methods."""

    def split(self, data: bytes, /) -> tuple[list[bytes], bytes]:
        found = []
        while b":" in data:
            head, _, rest = data.partition(b":")
            size = int(head)
            if len(rest) < size + 1:
                break
            found.append(rest[:size])
            data = rest[size + 1 :]
        return found, data

    def encode(self, reply: bytes, /) -> bytes:
        return b"%d:%s," % (len(reply), reply)


def test_a_user_framing_gets_what_the_built_in_ones_get() -> None:
    log = EventLog()
    with serving(server(tcp("127.0.0.1", 0), messages(Netstrings(), lambda m: m.title()), on_event=log).bind()) as bound:
        with socket.create_connection(bound.address, timeout=TIMEOUT) as sock:
            sock.sendall(b"5:hello,3:a")
            sock.sendall(b"bc,")
            assert recv_exactly(sock, 14) == b"5:Hello,3:Abc,"
        [closed] = log.wait_for(ConnectionClosed, timeout=TIMEOUT)
    assert closed.reason == "finished" and closed.bytes_in == 14 and closed.bytes_out == 14


def test_admission_holds_a_connection_past_the_limit_until_one_ends() -> None:
    spec = server(tcp("127.0.0.1", 0), lines(echo), admission=Admission(max_connections=1))
    with serving(spec.bind()) as bound:
        with socket.create_connection(bound.address, timeout=TIMEOUT) as first:
            first.sendall(b"one\n")
            assert recv_line(first) == b"one\n"
            second = socket.create_connection(bound.address, timeout=TIMEOUT)  # into the backlog
            try:
                second.sendall(b"two\n")
                ready, _, _ = select.select([second], [], [], 0.3)  # a bound: nothing may come meanwhile
                assert not ready
                assert bound.stats().connections_accepted_total == 1
            except BaseException:
                second.close()
                raise
        with second:
            assert recv_line(second) == b"two\n"


def test_datagrams_answered_in_batches_are_counted_and_a_failing_answer_is_reported() -> None:
    errors: list[Exception] = []

    def answer(data: bytes) -> bytes:
        if data == b"bad":
            raise ValueError("bad datagram")
        return data.upper()

    spec = server(udp("127.0.0.1", 0), datagrams(answer), on_error=lambda datagram, exc: errors.append(exc))
    with serving(spec.bind()) as bound:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(TIMEOUT)
            for data in (b"a", b"bad", b"b", b"c"):  # queued together: answered in one batch
                client.sendto(data, bound.address)
            assert sorted(client.recv(16) for _ in range(3)) == [b"A", b"B", b"C"]
        stats = bound.stats()
    assert [str(exc) for exc in errors] == ["bad datagram"]
    assert stats.connections_accepted_total == 4 and stats.handler_errors_total == 1, stats
    assert stats.handler_duration_seconds_count == 4 and stats.connections_active == 0, stats


def test_writable_is_called_once_the_peer_has_read_the_buffer_down() -> None:
    """A protocol streams a large answer in pieces: it writes while it may and waits for writable()."""
    total = 16 * 1024 * 1024
    piece = b"p" * 65536
    calls: list[int] = []
    over = threading.Event()

    class Streamer(UserEcho):
        def connected(self, out: Output[object], /) -> None:
            super().connected(out)
            self.left = total
            self.more()

        def more(self) -> None:
            assert self.out is not None
            while self.left and self.out.buffered <= 64 * 1024:
                self.out.write(piece)
                self.left -= len(piece)
            if self.out.buffered > 64 * 1024:
                over.set()
            if not self.left:
                self.out.close()

        def writable(self) -> None:
            assert self.out is not None
            calls.append(self.out.buffered)
            self.more()

    with serving(server(tcp("127.0.0.1", 0), protocol(Streamer, high_water=64 * 1024)).bind()) as bound:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # (set before connecting: the window)
            sock.settimeout(TIMEOUT)
            sock.connect(bound.address)
            assert over.wait(TIMEOUT)  # not read meanwhile: the buffer went over high_water
            received = 0
            while chunk := sock.recv(65536):
                received += len(chunk)
    assert received == total
    assert calls and max(calls) <= 16 * 1024, calls  # called at the low-water mark (a quarter of high_water)
