"""Messages on the reactor: split a byte stream into messages, answer each with a plain function.

A *framing* says where one message ends (sans-IO: bytes in, messages out)::

    lines(max_length=65536)          # up to and including each b"\\n"
    length_prefixed(size=4)          # a big-endian length, then that many bytes

and a *message handler* is a plain ``(message) -> reply`` function (``None``:
no reply).  Together they are a server's handler -- the line echo of
``socketserver``'s documentation is::

    def shout(line: bytes) -> bytes:
        return line.upper()

    server(tcp("127.0.0.1", 9999), lines(shout)).bind().serve_forever()

The handler runs on the serve loop, so it must be quick; one that blocks (a
database query) runs on a pool of threads with ``offload=N``: each
connection's messages are answered one at a time, in order, and a connection
waiting for its answer (or for its next message) holds no thread.

A message past the framing's ``max_length`` closes its connection with the
reason ``"too_long"`` (counted in ``stats().closed_by_reason``); the answers
to the messages before it are sent first.  Your own framing is any object
with :class:`Framing`'s two methods.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final, Protocol, TypeAlias, final

from ._validate import int_in_range
from .connections import Datagram, StreamConnection
from .protocols import Evented, Output

__all__ = (
    "Framing",
    "FrameTooLong",
    "LengthPrefixed",
    "Lines",
    "MessageHandler",
    "MessageProtocol",
    "datagrams",
    "length_prefixed",
    "lines",
    "messages",
)

MessageHandler: TypeAlias = Callable[[bytes], "bytes | None"]
"""A plain function of one message that returns the reply (``None``: no reply)."""

#: What a connection closed for a message over the limit says.
TOO_LONG: Final = "too_long"


class FrameTooLong(ValueError):
    """A message is longer than its framing allows (raised by :meth:`Framing.split`).

    Attributes:
        length: how long it is (at least: it may not be complete).
        limit: the framing's limit.
        before: the complete messages before it in the data split, to be
            answered before its connection is closed.
    """

    def __init__(self, length: int, limit: int, before: list[bytes] | None = None) -> None:
        super().__init__(f"a message of at least {length} bytes is over the limit of {limit} bytes")
        self.length = length
        self.limit = limit
        self.before: list[bytes] = [] if before is None else before


class Framing(Protocol):
    """**Protocol:** where messages end in a byte stream, and how a reply is sent (sans-IO)."""

    def split(self, data: bytes, /) -> tuple[list[bytes], bytes]:
        """The complete messages at the start of *data*, and the incomplete rest (kept for the next call).

        Raises:
            FrameTooLong: a message, or the incomplete rest, is over the limit
                (with the complete messages before it as its ``before``).
        """
        ...

    def encode(self, reply: bytes, /) -> bytes:
        """*reply* as it goes on the wire (with its length prefix, say)."""
        ...


@final
class Lines:
    """Messages that end with *delimiter* (included in the message, as ``rfile.readline()`` has it).

    Replies are sent as they are.  A line longer than *max_length* bytes
    (its delimiter included) is over the limit.
    """

    __slots__ = ("delimiter", "max_length")

    def __init__(self, max_length: int = 65536, delimiter: bytes = b"\n") -> None:
        int_in_range("max_length", 1)(None, None, max_length)
        given: object = delimiter
        if not isinstance(given, bytes):
            raise TypeError(f"delimiter must be bytes, got {type(given).__name__} {given!r}")
        if not given:
            raise ValueError(f"delimiter must not be empty, got {given!r}")
        self.max_length = max_length
        self.delimiter = delimiter

    def split(self, data: bytes, /) -> tuple[list[bytes], bytes]:
        delimiter = self.delimiter
        end = data.find(delimiter)
        if end < 0:
            if len(data) > self.max_length:
                raise FrameTooLong(len(data), self.max_length)
            return [], data
        width = len(delimiter)
        end += width
        if end == len(data):  # the common case: one whole line
            if end > self.max_length:
                raise FrameTooLong(end, self.max_length)
            return [data], b""
        found: list[bytes] = []
        start = 0
        limit = self.max_length
        while end > 0:
            if end - start > limit:
                raise FrameTooLong(end - start, limit, found)
            found.append(data[start:end])
            start = end
            end = data.find(delimiter, start)
            if end >= 0:
                end += width
        if len(data) - start > limit:
            raise FrameTooLong(len(data) - start, limit, found)
        return found, data[start:]

    def encode(self, reply: bytes, /) -> bytes:
        return reply

    def __repr__(self) -> str:
        return f"Lines(max_length={self.max_length!r}, delimiter={self.delimiter!r})"


_FORMATS: Final = {1: ">B", 2: ">H", 4: ">I", 8: ">Q"}


@final
class LengthPrefixed:
    """Messages that start with their length: an unsigned big-endian integer of *size* bytes (1, 2, 4 or 8).

    The message is what follows the prefix; a reply gets a prefix of its own.
    A length over *max_length* is over the limit.
    """

    __slots__ = ("_format", "max_length", "size")

    def __init__(self, size: int = 4, max_length: int = 1 << 20) -> None:
        if type(size) is not int or size not in _FORMATS:
            raise ValueError(f"size must be 1, 2, 4 or 8 (bytes, an int), got {size!r}")
        int_in_range("max_length", 0)(None, None, max_length)
        self.size = size
        self.max_length = max_length
        self._format = struct.Struct(_FORMATS[size])

    def split(self, data: bytes, /) -> tuple[list[bytes], bytes]:
        found: list[bytes] = []
        start, size, unpack = 0, self.size, self._format.unpack_from
        while len(data) - start >= size:
            (length,) = unpack(data, start)
            if length > self.max_length:
                raise FrameTooLong(length, self.max_length, found)
            end = start + size + length
            if end > len(data):
                break
            found.append(data[start + size : end])
            start = end
        return found, data[start:] if start else data

    def encode(self, reply: bytes, /) -> bytes:
        if len(reply) >= 1 << (8 * self.size):
            raise ValueError(f"a reply of {len(reply)} bytes does not fit a length prefix of {self.size} bytes")
        return self._format.pack(len(reply)) + reply

    def __repr__(self) -> str:
        return f"LengthPrefixed(size={self.size!r}, max_length={self.max_length!r})"


@final
class MessageProtocol:
    """The :class:`~servekit.protocols.StreamProtocol` behind :func:`messages`: frames, answers, writes.

    Messages are answered one at a time, in order.  With a *submit* (the
    server's offload pool), a message goes to the pool and reading pauses
    until its answer is written.

    Args:
        framing: where messages end.
        handler: the message function.
        submit: hands ``(protocol, message)`` to a pool, which calls
            :meth:`answered` on the loop's thread; ``None``: answer on the loop.
    """

    __slots__ = ("_busy", "_framing", "_handler", "_out", "_queue", "_rest", "_submit", "_too_long")

    def __init__(
        self,
        framing: Framing,
        handler: MessageHandler,
        submit: Callable[[MessageProtocol, bytes], None] | None = None,
    ) -> None:
        self._framing = framing
        self._handler = handler
        self._submit = submit
        self._rest: bytes | bytearray = b""  # an incomplete message (a bytearray while it grows)
        self._out: Output[object] | None = None
        self._busy = False  # a message is with the pool
        self._queue: list[bytes] = []  # messages waiting for it
        self._too_long = False  # a message over the limit came after those: close once they are answered

    def connected(self, out: Output[object], /) -> None:
        self._out = out

    def data_received(self, data: bytes, /) -> None:
        rest = self._rest
        if rest:
            framing = self._framing
            if type(framing) is Lines and len(framing.delimiter) == 1 and framing.delimiter not in data:
                # More of a line: kept, not split again (a line trickled in
                # small pieces would cost its length squared).
                rest += data
                self._rest = rest
                if len(rest) > framing.max_length:
                    self._rest = bytearray()
                    self._queue.clear()
                    self._too_long = True
                    if not self._busy:
                        self._end_too_long()
                return
            data = bytes(rest) + data
        too_long = False
        try:
            found, rest = self._framing.split(data)
        except FrameTooLong as exc:
            found, rest, too_long = exc.before, b"", True
        self._rest = bytearray(rest) if rest else b""
        if found:
            if self._submit is None:
                out = self._out
                assert out is not None
                handler, encode = self._handler, self._framing.encode
                for message in found:
                    reply = handler(message)
                    if reply is not None:
                        out.write(encode(reply))
            else:
                self._queue.extend(found)
                if not self._busy:
                    self._next()
        if too_long:
            self._too_long = True
            if not self._busy:
                self._end_too_long()

    def _end_too_long(self) -> None:
        """Close the connection for a message over the limit, once the answers before it are written."""
        self._queue.clear()
        assert self._out is not None
        self._out.close(TOO_LONG)

    def _next(self) -> None:
        """Hand the next waiting message to the pool (reading pauses meanwhile)."""
        out = self._out
        assert out is not None and self._submit is not None
        message = self._queue.pop(0)
        self._busy = True
        out.pause_reading()
        self._submit(self, message)

    def answered(self, reply: bytes | None, /) -> None:
        """On the loop's thread: the pool's answer to the message it was given."""
        self._busy = False
        out = self._out
        assert out is not None
        if reply is not None:
            out.write(self._framing.encode(reply))
        if self._queue:
            self._next()
        elif self._too_long:
            self._end_too_long()
        else:
            out.resume_reading()

    @property
    def output(self) -> Output[object] | None:
        """The connection's output, once connected."""
        return self._out

    def between_messages(self) -> bool:
        """Whether no message is partly read, queued or being answered."""
        return not self._rest and not self._busy and not self._queue

    def eof_received(self) -> None:
        pass

    def writable(self) -> None:
        pass

    def closed(self, reason: str, /) -> None:
        self._queue.clear()


def messages(framing: Framing, handler: MessageHandler, *, offload: int = 0, high_water: int = 64 * 1024,
             ) -> Evented[StreamConnection[object]]:
    """Serve stream connections as messages framed by *framing*, each answered by *handler*.

    Args:
        framing: where messages end (:class:`Lines`, :class:`LengthPrefixed`,
            or your own :class:`Framing`).
        handler: ``(message) -> reply``; ``None`` sends nothing.  An
            exception closes the connection (reason ``"error"``) and goes to
            the server's ``on_error``.
        offload: ``0`` (default): run *handler* on the serve loop -- it must
            not block.  ``N``: run it on a pool of *N* threads, started when
            the server is bound; each connection's messages still one at a
            time, in order.
        high_water: output bytes buffered before the connection stops being read.
    """
    if not callable(getattr(framing, "split", None)) or not callable(getattr(framing, "encode", None)):
        raise TypeError(f"framing must have split() and encode() (a Framing), got {type(framing).__name__} {framing!r}")
    if not callable(handler):
        raise TypeError(f"handler must be callable, got {type(handler).__name__} {handler!r}")
    return Evented("stream", _Messages(framing, handler), offload=offload, high_water=high_water)


def lines(handler: MessageHandler, *, max_length: int = 65536, offload: int = 0) -> Evented[StreamConnection[object]]:
    """Serve each line (up to and including ``b"\\n"``) with ``handler(line) -> reply``: :func:`messages` over :class:`Lines`."""
    return messages(Lines(max_length), handler, offload=offload)


def length_prefixed(
    handler: MessageHandler, *, size: int = 4, max_length: int = 1 << 20, offload: int = 0
) -> Evented[StreamConnection[object]]:
    """Serve length-prefixed messages with ``handler(payload) -> reply``: :func:`messages` over :class:`LengthPrefixed`."""
    return messages(LengthPrefixed(size, max_length), handler, offload=offload)


def datagrams(handler: MessageHandler, *, offload: int = 0) -> Evented[Datagram[object]]:
    """Answer each datagram with ``handler(payload) -> reply``, sent back to its sender (``None``: nothing).

    On the serve loop, or with ``offload=N`` on a pool of *N* threads.
    """
    if not callable(handler):
        raise TypeError(f"handler must be callable, got {type(handler).__name__} {handler!r}")
    return Evented("datagram", handler, offload=offload)


@final
class _Messages:
    """The per-connection factory of :func:`messages`: a :class:`MessageProtocol` each.

    The reactor makes its protocols with :meth:`make` when it offloads (the
    pool's submit is the bound server's, not the description's).
    """

    __slots__ = ("framing", "handler")

    def __init__(self, framing: Framing, handler: MessageHandler) -> None:
        self.framing = framing
        self.handler = handler

    def __call__(self) -> MessageProtocol:
        return MessageProtocol(self.framing, self.handler)

    def make(self, submit: Callable[[MessageProtocol, bytes], None]) -> Callable[[], MessageProtocol]:
        """The factory of a bound server that answers on a pool: *submit* hands a message to it."""
        framing, handler = self.framing, self.handler
        return lambda: MessageProtocol(framing, handler, submit)

    def __repr__(self) -> str:
        return f"messages({self.framing!r}, {getattr(self.handler, '__qualname__', self.handler)!r})"
