"""servekit.protocols and the sans-IO test kit: a protocol fed bytes by hand, no socket, loop or clock.

:func:`servekit.testing.feed` plays the reactor's part (connected, one
``data_received`` per chunk, the end, closed) and :class:`FakeOutput`
records what the protocol does to its connection.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from typing_extensions import assert_type

from servekit import IPAddress, StreamConnection
from servekit.framing import lines
from servekit.protocols import Evented, Output, protocol
from servekit.testing import FakeOutput, feed


class Greeter:
    """A user's protocol, written as the docs show: greets, answers each line, says goodbye on ``quit``."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.rest = b""

    def connected(self, out: Output[object], /) -> None:
        self.out = out
        self.calls.append("connected")
        out.write(b"hello " + repr(out.peer).encode() + b"\n")

    def data_received(self, data: bytes, /) -> None:
        self.calls.append(f"data {data!r}")
        *whole, self.rest = (self.rest + data).split(b"\n")
        for line in whole:
            if line == b"quit":
                self.out.write(b"bye\n")
                self.out.close("quit")
                return
            self.out.write(line[::-1] + b"\n")

    def eof_received(self) -> None:
        self.calls.append("eof")
        if self.rest:
            self.out.write(b"unfinished: " + self.rest + b"\n")

    def writable(self) -> None:
        self.calls.append("writable")

    def closed(self, reason: str, /) -> None:
        self.calls.append(f"closed {reason}")


class AddressBook:
    """A protocol that wants an IP peer: it reads the port."""

    def connected(self, out: Output[IPAddress], /) -> None:
        host, port = out.peer
        out.write(f"{host} {port + 1} {out.server_address}".encode())

    def data_received(self, data: bytes, /) -> None: ...
    def eof_received(self) -> None: ...
    def writable(self) -> None: ...
    def closed(self, reason: str, /) -> None: ...


class Boom(Exception):
    pass


class Failing(Greeter):
    """Raises on the chunk ``b"boom"`` (and, if told, in closed() too)."""

    def __init__(self, fail_closed: bool = False) -> None:
        super().__init__()
        self.fail_closed = fail_closed

    def data_received(self, data: bytes, /) -> None:
        if data == b"boom":
            self.out.write(b"half")
            raise Boom(data)
        super().data_received(data)

    def closed(self, reason: str, /) -> None:
        super().closed(reason)
        if self.fail_closed:
            raise KeyError(reason)


class TestFeed:
    def test_a_users_protocol_answers_what_it_is_fed(self) -> None:
        proto = Greeter()
        out = feed(proto, b"abc\nde", b"f\n", b"gh")
        assert out.written == b"hello 'test-peer'\ncba\nfed\n"
        assert proto.calls == ["connected", "data b'abc\\nde'", "data b'f\\n'", "data b'gh'"]
        assert (out.closed_reason, out.aborted, out.reading) == (None, False, True)  # left open: not closed

    def test_the_end_is_fed_then_the_connection_closes(self) -> None:
        proto = Greeter()
        out = feed(proto, b"ab\ncd", eof=True)
        assert out.written == b"hello 'test-peer'\nba\nunfinished: cd\n"
        assert proto.calls[-2:] == ["eof", "closed finished"]
        assert out.closed_reason == "finished"

    def test_only_the_end(self) -> None:
        proto = Greeter()
        out = feed(proto, eof=True)
        assert proto.calls == ["connected", "eof", "closed finished"]
        assert out.written == b"hello 'test-peer'\n"

    def test_nothing_is_fed_after_the_protocol_closes(self) -> None:
        proto = Greeter()
        out = feed(proto, b"one\nquit\ntwo\n", b"three\n", eof=True)
        assert out.written == b"hello 'test-peer'\neno\nbye\n"
        assert proto.calls == ["connected", "data b'one\\nquit\\ntwo\\n'", "closed quit"]
        assert (out.closed_reason, out.aborted) == ("quit", False)

    def test_an_evented_protocol_is_made_by_its_factory(self) -> None:
        made: list[Greeter] = []

        def factory() -> Greeter:
            made.append(Greeter())
            return made[-1]

        out = feed(protocol(factory), b"xy\n")
        assert out.written == b"hello 'test-peer'\nyx\n"
        assert len(made) == 1 and made[0].out is out
        assert feed(protocol(Greeter), b"z\n").written == b"hello 'test-peer'\nz\n"

    def test_lines_as_in_the_docs(self) -> None:
        assert feed(lines(bytes.upper), b"ab\nc", b"d\n").written == b"AB\nCD\n"

    def test_the_peer_and_server_address_are_what_is_given(self) -> None:
        out = feed(AddressBook(), peer=("10.0.0.1", 4000), server_address=("0.0.0.0", 80))
        assert out.written == b"10.0.0.1 4001 ('0.0.0.0', 80)"
        assert_type(out, FakeOutput[tuple[str, int]])
        assert out.peer == ("10.0.0.1", 4000)
        assert_type(feed(Greeter()), FakeOutput[str])

    def test_a_method_that_raises_aborts_the_connection_and_the_error_is_raised(self) -> None:
        proto = Failing()
        with pytest.raises(Boom):
            feed(proto, b"a\n", b"boom", b"never\n", eof=True)
        assert proto.calls == ["connected", "data b'a\\n'", "closed error"]
        out = proto.out
        assert isinstance(out, FakeOutput)
        assert (out.written, out.closed_reason, out.aborted) == (b"hello 'test-peer'\na\nhalf", "error", True)

    def test_when_closed_raises_too_it_is_noted_on_the_first_error(self) -> None:
        with pytest.raises(Boom) as info:
            feed(Failing(fail_closed=True), b"boom")
        assert info.value.__notes__ == ["(its closed() raised too: KeyError('error'))"]

    def test_an_error_in_closed_itself_is_raised(self) -> None:
        with pytest.raises(KeyError, match="finished"):
            feed(Failing(fail_closed=True), eof=True)

    def test_a_protocol_that_pauses_reading_leaves_feed_stuck(self) -> None:
        class Pausing(Greeter):
            def data_received(self, data: bytes, /) -> None:
                super().data_received(data)
                self.out.pause_reading()

        with pytest.raises(RuntimeError, match=r"paused reading with 2 chunks still to feed"):
            feed(Pausing(), b"a\n", b"b\n", b"c\n")
        with pytest.raises(RuntimeError, match=r"paused reading with the end still to feed"):
            feed(Pausing(), b"a\n", eof=True)
        out = feed(Pausing(), b"a\n")  # nothing was left: no error
        assert (out.reading, out.written) == (False, b"hello 'test-peer'\na\n")

    def test_a_protocol_that_resumes_at_once_is_fed_on(self) -> None:
        class Blinking(Greeter):
            def data_received(self, data: bytes, /) -> None:
                self.out.pause_reading()
                super().data_received(data)
                self.out.resume_reading()

        assert feed(Blinking(), b"a\n", b"b\n", eof=True).written == b"hello 'test-peer'\na\nb\n"

    def test_a_class_is_refused(self) -> None:
        with pytest.raises(TypeError, match=r"got the class Greeter \(pass Greeter\(\) or protocol\(Greeter\)\)"):
            feed(Greeter, b"x")  # type: ignore[call-overload]

    def test_an_object_without_the_methods_is_refused(self) -> None:
        class Half:
            def connected(self, out: Output[object], /) -> None: ...
            def data_received(self, data: bytes, /) -> None: ...

        with pytest.raises(TypeError, match=r"got Half <.*> without eof_received, writable, closed$"):
            feed(Half(), b"x")  # type: ignore[call-overload]

    @pytest.mark.parametrize(
        ("chunk", "error", "shown"),
        [
            ("text", TypeError, "chunks must be bytes, got str 'text'"),
            (bytearray(b"x"), TypeError, "got bytearray bytearray(b'x')"),
            (b"", ValueError, "pass eof=True"),
        ],
    )
    def test_bad_chunks_are_refused_before_anything_is_fed(
        self, chunk: object, error: type[Exception], shown: str
    ) -> None:
        proto = Greeter()
        send: Callable[..., object] = feed
        with pytest.raises(error, match=rf"{shown.replace('(', '.').replace(')', '.')}"):
            send(proto, b"a\n", chunk)
        assert proto.calls == []


class TestFakeOutput:
    def test_it_is_an_output(self) -> None:
        out: Output[str] = FakeOutput("peer", "server")
        assert (out.peer, out.server_address, out.buffered) == ("peer", "server", 0)
        assert FakeOutput(("::1", 1)).server_address is None

    def test_it_records_writes_until_closed(self) -> None:
        out = FakeOutput("p")
        out.write(b"ab")
        out.write(b"")
        out.write(b"cd")
        out.close("done")
        out.write(b"ignored")
        out.close("again")  # the first reason counts
        out.abort()  # closed already: nothing to abort
        assert (out.written, out.closed_reason, out.aborted) == (b"abcd", "done", False)
        assert repr(out) == "<FakeOutput for 'p', closed 'done', 4 bytes written>"

    def test_close_says_finished_by_default(self) -> None:
        out = FakeOutput("p")
        out.close()
        assert out.closed_reason == "finished"

    def test_abort(self) -> None:
        out = FakeOutput("p")
        out.write(b"x")
        out.abort()
        out.write(b"y")
        assert (out.written, out.closed_reason, out.aborted) == (b"x", "aborted", True)

    def test_pause_and_resume(self) -> None:
        out = FakeOutput("p")
        seen = [out.reading]
        out.pause_reading()
        out.pause_reading()
        seen.append(out.reading)
        out.resume_reading()
        seen.append(out.reading)
        assert seen == [True, False, True]
        assert repr(out) == "<FakeOutput for 'p', open, 0 bytes written>"

    def test_driven_by_hand(self) -> None:
        proto = Greeter()
        out = FakeOutput(("127.0.0.1", 5))
        proto.connected(out)
        proto.data_received(b"hi\n")
        proto.writable()
        assert out.written == b"hello ('127.0.0.1', 5)\nih\n"
        assert proto.calls[-1] == "writable"


class TestEvented:
    def test_protocol_makes_a_stream_evented(self) -> None:
        evented = protocol(Greeter, high_water=1000, read_size=512)
        assert_type(evented, Evented[StreamConnection[object]])
        assert (evented.kind, evented.start, evented.offload) == ("stream", Greeter, 0)
        assert (evented.high_water, evented.low_water, evented.read_size) == (1000, 250, 512)
        assert repr(evented) == "<Evented stream Greeter offload=0>"

    def test_low_water_may_equal_high_water(self) -> None:
        assert protocol(Greeter, high_water=10, low_water=10).low_water == 10
        assert protocol(Greeter, high_water=10, low_water=0).low_water == 0

    @pytest.mark.parametrize(
        ("make", "error", "shown"),
        [
            (lambda: protocol(Greeter, high_water=0), ValueError, "high_water must be >= 1, got 0"),
            (
                lambda: protocol(Greeter, high_water=10, low_water=11),
                ValueError,
                r"low_water must be at most high_water \(10\), got 11",
            ),
            (lambda: protocol(Greeter, low_water=-1), ValueError, "low_water must be >= 0, got -1"),
            (lambda: protocol(Greeter, read_size=0), ValueError, "read_size must be >= 1, got 0"),
            (
                lambda: protocol(Greeter, high_water=1.5),  # type: ignore[arg-type]
                TypeError,
                "high_water must be an int, got float 1.5",
            ),
            (lambda: Evented("stream", Greeter, offload=-1), ValueError, "offload must be >= 0, got -1"),
            (lambda: protocol("Greeter"), TypeError, "got str 'Greeter'"),  # type: ignore[arg-type]
        ],
    )
    def test_bad_values_are_named(self, make: Callable[[], object], error: type[Exception], shown: str) -> None:
        with pytest.raises(error, match=shown):
            make()
