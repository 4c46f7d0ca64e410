"""servekit.framing with no socket: the framings split and encode, the message handlers answer in order.

The framings are called directly (bytes in, messages out); the message
handlers are driven by :func:`servekit.testing.feed`, as the reactor would
drive them, one ``data_received`` per chunk.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from servekit.framing import (
    FrameTooLong,
    LengthPrefixed,
    Lines,
    MessageProtocol,
    datagrams,
    length_prefixed,
    lines,
    messages,
)
from servekit.protocols import Evented
from servekit.testing import FakeOutput, feed


def shout(message: bytes) -> bytes:
    return message.upper()


def _split_in_turn(framing: Lines | LengthPrefixed, *chunks: bytes) -> tuple[list[bytes], bytes]:
    """Split *chunks* as they arrive, keeping the rest for the next one, as a connection does."""
    found: list[bytes] = []
    rest = b""
    for chunk in chunks:
        complete, rest = framing.split(rest + chunk)
        found += complete
    return found, rest


class TestLines:
    def test_one_line(self) -> None:
        assert Lines().split(b"hello\n") == ([b"hello\n"], b"")

    def test_several_lines_in_one_chunk_and_a_rest(self) -> None:
        assert Lines().split(b"a\nbb\n\nccc") == ([b"a\n", b"bb\n", b"\n"], b"ccc")

    def test_no_delimiter_yet_is_all_rest(self) -> None:
        assert Lines().split(b"partial") == ([], b"partial")

    def test_a_line_split_over_chunks(self) -> None:
        assert _split_in_turn(Lines(), b"he", b"ll", b"o\nwor", b"ld\n") == ([b"hello\n", b"world\n"], b"")

    def test_another_delimiter(self) -> None:
        framing = Lines(delimiter=b"\r\n")
        assert framing.split(b"GET /\r\nHost: x\r\n\r\nbody\n") == ([b"GET /\r\n", b"Host: x\r\n", b"\r\n"], b"body\n")

    def test_a_delimiter_split_over_chunks(self) -> None:
        framing = Lines(delimiter=b"\r\n")
        assert framing.split(b"one\r") == ([], b"one\r")
        assert _split_in_turn(framing, b"one\r", b"\ntwo\r", b"\n") == ([b"one\r\n", b"two\r\n"], b"")

    def test_a_line_exactly_at_the_limit_passes(self) -> None:
        framing = Lines(max_length=4)
        assert framing.split(b"abc\n") == ([b"abc\n"], b"")  # the common case: one whole line
        assert framing.split(b"abc\nxyz\nq") == ([b"abc\n", b"xyz\n"], b"q")  # several
        assert framing.split(b"abcd") == ([], b"abcd")  # a rest exactly at the limit

    def test_a_line_one_over_the_limit_raises(self) -> None:
        with pytest.raises(FrameTooLong) as info:
            Lines(max_length=4).split(b"abcd\n")
        assert (info.value.length, info.value.limit, info.value.before) == (5, 4, [])
        assert "5 bytes" in str(info.value) and "4 bytes" in str(info.value)

    def test_a_long_line_after_short_ones_carries_them(self) -> None:
        with pytest.raises(FrameTooLong) as info:
            Lines(max_length=4).split(b"ab\ncd\nefghij\nkl\n")
        assert (info.value.length, info.value.limit, info.value.before) == (7, 4, [b"ab\n", b"cd\n"])

    def test_an_incomplete_rest_over_the_limit_raises(self) -> None:
        with pytest.raises(FrameTooLong) as alone:
            Lines(max_length=4).split(b"abcde")
        assert (alone.value.length, alone.value.before) == (5, [])
        with pytest.raises(FrameTooLong) as after:
            Lines(max_length=4).split(b"ab\nabcde")
        assert (after.value.length, after.value.before) == (5, [b"ab\n"])

    def test_the_limit_counts_the_whole_delimiter(self) -> None:
        assert Lines(max_length=4, delimiter=b"\r\n").split(b"ab\r\n") == ([b"ab\r\n"], b"")
        with pytest.raises(FrameTooLong):
            Lines(max_length=4, delimiter=b"\r\n").split(b"abc\r\n")

    def test_replies_are_sent_as_they_are(self) -> None:
        assert Lines().encode(b"no newline added") == b"no newline added"

    def test_repr(self) -> None:
        assert repr(Lines(10, b"\r\n")) == "Lines(max_length=10, delimiter=b'\\r\\n')"

    @pytest.mark.parametrize(
        ("kwargs", "error", "shown"),
        [
            ({"max_length": 0}, ValueError, "max_length must be >= 1, got 0"),
            ({"max_length": -5}, ValueError, "got -5"),
            ({"max_length": 2.5}, TypeError, "max_length must be an int, got float 2.5"),
            ({"max_length": True}, TypeError, "got bool True"),
            ({"delimiter": b""}, ValueError, "got b''"),
            ({"delimiter": "\n"}, TypeError, "got str '\\n'"),
        ],
    )
    def test_bad_arguments_name_the_value(self, kwargs: dict[str, object], error: type[Exception], shown: str) -> None:
        make: Callable[..., object] = Lines
        with pytest.raises(error) as info:
            make(**kwargs)
        assert shown in str(info.value)


class TestLengthPrefixed:
    @pytest.mark.parametrize(("size", "code"), [(1, ">B"), (2, ">H"), (4, ">I"), (8, ">Q")])
    def test_encode_and_split_for_each_size(self, size: int, code: str) -> None:
        framing = LengthPrefixed(size=size)
        wire = framing.encode(b"hello")
        assert wire == struct.pack(code, 5) + b"hello"
        assert len(wire) == size + 5
        assert framing.split(wire + framing.encode(b"") + framing.encode(b"x")) == ([b"hello", b"", b"x"], b"")

    @pytest.mark.parametrize("size", [1, 2, 4, 8])
    def test_a_message_split_across_chunks(self, size: int) -> None:
        framing = LengthPrefixed(size=size)
        wire = framing.encode(b"abcdef") + framing.encode(b"gh")
        # Cut inside the first prefix, inside the first payload, and between the two.
        cuts = [wire[:1], wire[1 : size + 2], wire[size + 2 : size + 6], wire[size + 6 :]]
        assert _split_in_turn(framing, *cuts) == ([b"abcdef", b"gh"], b"")

    def test_an_incomplete_message_is_all_rest(self) -> None:
        framing = LengthPrefixed(size=2)
        assert framing.split(b"\x00") == ([], b"\x00")
        assert framing.split(b"\x00\x05abc") == ([], b"\x00\x05abc")
        assert framing.split(b"\x00\x01a\x00\x05ab") == ([b"a"], b"\x00\x05ab")

    def test_a_length_at_the_limit_passes(self) -> None:
        framing = LengthPrefixed(size=2, max_length=3)
        assert framing.split(b"\x00\x03abc") == ([b"abc"], b"")

    def test_a_length_over_the_limit_raises_before_the_payload_arrives(self) -> None:
        framing = LengthPrefixed(size=2, max_length=3)
        with pytest.raises(FrameTooLong) as info:
            framing.split(b"\x00\x01a\x00\x04")
        assert (info.value.length, info.value.limit, info.value.before) == (4, 3, [b"a"])

    def test_max_length_zero_allows_empty_messages_only(self) -> None:
        framing = LengthPrefixed(size=1, max_length=0)
        assert framing.split(b"\x00\x00") == ([b"", b""], b"")
        with pytest.raises(FrameTooLong):
            framing.split(b"\x01x")

    def test_repr(self) -> None:
        assert repr(LengthPrefixed(2, 100)) == "LengthPrefixed(size=2, max_length=100)"

    @pytest.mark.parametrize(
        ("kwargs", "error", "shown"),
        [
            ({"size": 3}, ValueError, "size must be 1, 2, 4 or 8 (bytes, an int), got 3"),
            ({"size": 4.0}, ValueError, "got 4.0"),
            ({"size": True}, ValueError, "got True"),
            ({"size": 0}, ValueError, "got 0"),
            ({"size": 16}, ValueError, "got 16"),
            ({"max_length": -1}, ValueError, "max_length must be >= 0, got -1"),
            ({"max_length": "10"}, TypeError, "got str '10'"),
        ],
    )
    def test_bad_arguments_name_the_value(self, kwargs: dict[str, object], error: type[Exception], shown: str) -> None:
        make: Callable[..., object] = LengthPrefixed
        with pytest.raises(error) as info:
            make(**kwargs)
        assert shown in str(info.value)


class TestMessageFunctions:
    def test_messages_wants_a_framing(self) -> None:
        with pytest.raises(TypeError, match=r"framing must have split\(\) and encode\(\).*got object <object"):
            messages(object(), shout)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "make",
        [
            lambda handler: lines(handler),
            lambda handler: length_prefixed(handler),
            lambda handler: messages(Lines(), handler),
            lambda handler: datagrams(handler),
        ],
        ids=["lines", "length_prefixed", "messages", "datagrams"],
    )
    def test_the_handler_must_be_callable(self, make: Callable[[object], object]) -> None:
        with pytest.raises(TypeError, match=r"handler must be callable, got str 'notcallable'"):
            make("notcallable")

    def test_lines_passes_its_limit_on(self) -> None:
        out = feed(lines(shout, max_length=3), b"ab\n", b"abc\n")
        assert (out.written, out.closed_reason) == (b"AB\n", "too_long")

    def test_length_prefixed_passes_its_size_and_limit_on(self) -> None:
        out = feed(length_prefixed(shout, size=1, max_length=2), b"\x02ab\x01c", b"\x03abc")
        assert (out.written, out.closed_reason) == (b"\x02AB\x01C", "too_long")

    def test_what_they_make(self) -> None:
        evented = lines(shout, offload=3)
        assert (evented.kind, evented.offload) == ("stream", 3)
        # (start is typed as either kind's: a stream's takes no argument, a datagram's a message.)
        assert isinstance(evented.start(), MessageProtocol)  # type: ignore[call-arg]
        assert "Lines(max_length=65536" in repr(evented.start)
        dgrams = datagrams(shout)
        assert (dgrams.kind, dgrams.start) == ("datagram", shout)

    def test_datagrams_are_not_fed_as_a_stream(self) -> None:
        with pytest.raises(TypeError, match="serves datagrams"):
            feed(datagrams(shout), b"x")  # type: ignore[arg-type]  # (a type error too)


class TestMessageProtocol:
    def test_echo(self) -> None:
        out = feed(lines(lambda line: line), b"one\ntw", b"o\nthree\n", eof=True)
        assert (out.written, out.closed_reason) == (b"one\ntwo\nthree\n", "finished")

    def test_replies_are_encoded_by_the_framing(self) -> None:
        out = feed(length_prefixed(lambda payload: payload[::-1], size=2), b"\x00\x03abc\x00", b"\x02xy")
        assert out.written == b"\x00\x03cba\x00\x02yx"

    def test_a_none_reply_sends_nothing(self) -> None:
        seen: list[bytes] = []

        def quiet(line: bytes) -> None:
            seen.append(line)

        out = feed(lines(quiet), b"a\nb\n", b"c\n")
        assert (out.written, seen) == (b"", [b"a\n", b"b\n", b"c\n"])
        assert out.closed_reason is None  # still open: nothing closed it

    def test_only_some_replies(self) -> None:
        out = feed(lines(lambda line: line if line.startswith(b"!") else None), b"a\n!b\nc\n!d\n")
        assert out.written == b"!b\n!d\n"

    def test_an_incomplete_last_line_is_not_answered_at_eof(self) -> None:
        out = feed(lines(shout), b"whole\npart", eof=True)
        assert (out.written, out.closed_reason) == (b"WHOLE\n", "finished")

    def test_a_too_long_line_closes_after_the_answers_before_it(self) -> None:
        answered: list[bytes] = []

        def note(line: bytes) -> bytes:
            answered.append(line)
            return line.upper()

        out = feed(lines(note, max_length=4), b"ab\n", b"cd\nefghij\nkl\n", b"mn\n", eof=True)
        assert out.closed_reason == "too_long"
        assert out.written == b"AB\nCD\n"  # the lines before it, in order; nothing after
        assert answered == [b"ab\n", b"cd\n"]
        assert not out.aborted

    def test_a_too_long_rest_closes_too(self) -> None:
        out = feed(lines(shout, max_length=4), b"ok\n", b"abc", b"de")
        assert (out.written, out.closed_reason) == (b"OK\n", "too_long")

    def test_a_handler_that_raises_aborts_with_error(self) -> None:
        def picky(line: bytes) -> bytes:
            if line == b"bad\n":
                raise LookupError(line)
            return line

        with pytest.raises(LookupError):
            feed(lines(picky), b"good\n", b"bad\n", b"never\n")

    def test_the_protocol_reports_its_state(self) -> None:
        proto = MessageProtocol(Lines(), shout)
        assert (proto.output, proto.between_messages()) == (None, True)
        out = FakeOutput("p")
        proto.connected(out)
        proto.data_received(b"half")
        assert (proto.output, proto.between_messages()) == (out, False)
        proto.data_received(b" done\n")
        assert proto.between_messages() and out.written == b"HALF DONE\n"

    def test_with_a_pool_the_messages_are_answered_one_at_a_time_in_order(self) -> None:
        handed: list[bytes] = []
        proto: MessageProtocol

        def submit(target: MessageProtocol, message: bytes) -> None:
            assert target is proto
            handed.append(message)

        proto = MessageProtocol(Lines(), shout, submit)
        out = FakeOutput("p")
        proto.connected(out)
        proto.data_received(b"one\ntwo\nthree\n")
        assert (handed, out.reading, out.written) == ([b"one\n"], False, b"")  # one with the pool, reading paused
        assert not proto.between_messages()
        proto.answered(b"ONE\n")
        assert (handed, out.reading) == ([b"one\n", b"two\n"], False)
        proto.answered(None)  # no reply: nothing written, the next one goes
        proto.answered(b"THREE\n")
        assert (handed, out.reading, out.written) == ([b"one\n", b"two\n", b"three\n"], True, b"ONE\nTHREE\n")
        assert proto.between_messages()

    def test_with_a_pool_a_too_long_line_closes_once_the_answers_before_it_are_written(self) -> None:
        handed: list[bytes] = []
        proto = MessageProtocol(Lines(max_length=4), shout, lambda _proto, message: handed.append(message))
        out = FakeOutput("p")
        proto.connected(out)
        proto.data_received(b"ab\ncd\nefghij\n")
        assert (handed, out.closed_reason) == ([b"ab\n"], None)
        proto.answered(b"AB\n")
        assert (out.written, out.closed_reason) == (b"AB\n", None)
        proto.answered(b"CD\n")
        assert (out.written, out.closed_reason, handed) == (b"AB\nCD\n", "too_long", [b"ab\n", b"cd\n"])

    def test_a_pool_that_answers_at_once_is_fed_like_the_loop(self) -> None:
        def submit(proto: MessageProtocol, message: bytes) -> None:
            proto.answered(shout(message))

        out = feed(MessageProtocol(LengthPrefixed(1), shout, submit), b"\x01a\x02bc", b"\x01d", eof=True)
        assert (out.written, out.reading, out.closed_reason) == (b"\x01A\x02BC\x01D", True, "finished")

    def test_a_pool_that_holds_the_message_leaves_feed_stuck(self) -> None:
        proto = MessageProtocol(Lines(), shout, lambda _proto, _message: None)
        with pytest.raises(RuntimeError, match=r"paused reading with 1 chunk and the end still to feed"):
            feed(proto, b"a\n", b"b\n", eof=True)


class TestLongLinesInSmallPieces:
    """A line that arrives a few bytes at a time is kept growing, not split again at every piece."""

    def test_a_line_in_one_byte_pieces_is_answered_once_whole(self) -> None:
        line = b"x" * 5000 + b"\n"
        out = feed(lines(shout), *(line[i : i + 1] for i in range(len(line))), b"tail\n")
        assert out.written == line.upper() + b"TAIL\n"
        assert out.closed_reason is None

    def test_a_line_that_grows_past_the_limit_in_pieces_closes_as_too_long(self) -> None:
        out = feed(lines(shout, max_length=100), b"ok\n", b"y" * 60, *([b"y" * 10] * 5), b"never\n")
        assert out.written == b"OK\n" and out.closed_reason == "too_long"

    def test_a_reply_longer_than_its_prefix_can_say_is_refused_by_name(self) -> None:
        with pytest.raises(ValueError, match="a reply of 256 bytes does not fit a length prefix of 1 bytes"):
            LengthPrefixed(size=1).encode(b"z" * 256)


class TestEventedValues:
    """The options every reactor handler takes are checked when it is made, naming the value."""

    @pytest.mark.parametrize(
        ("make", "shown"),
        [
            (lambda: lines(shout, offload=-1), "offload must be >= 0, got -1"),
            (lambda: messages(Lines(), shout, high_water=0), "high_water must be >= 1, got 0"),
            (lambda: datagrams(shout, offload=-2), "offload must be >= 0, got -2"),
            (lambda: length_prefixed(shout, max_length=-1), "max_length must be >= 0, got -1"),
            (lambda: lines(shout, max_length=0), "max_length must be >= 1, got 0"),
        ],
    )
    def test_a_bad_value(self, make: Callable[[], Evented[object]], shown: str) -> None:
        with pytest.raises(ValueError, match=shown):
            make()

    def test_a_bad_type(self) -> None:
        with pytest.raises(TypeError, match="offload must be an int, got bool True"):
            lines(shout, offload=True)
