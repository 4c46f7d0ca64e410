"""The reactor: workers that hold stream connections on the serve loop and drive their protocols.

A connection dispatched to the reactor becomes a loop source: readable ->
``recv`` -> the protocol's ``data_received``; what the protocol writes goes
out at once when the socket takes it, else into the connection's buffer,
sent as the socket turns writable.  Past ``high_water`` buffered bytes the
connection is not read (a peer that does not read stops being read) until
the buffer is down to ``low_water``.  Its time limits (the server's
:class:`~servekit.Deadlines`) are one timer each in the loop's heap, set
again only when one fires: a read or a write only notes the time.  Every
end goes through the route's ``end()``, as a blocking handler's does: the
books, events and stats are the same.

Message handlers that block run on an :class:`Offload` pool of threads; their
answers come back to the loop through a socketpair of the pool's, and are
written in order, one message of a connection at a time.
"""

from __future__ import annotations

import collections
import queue
import socket
import struct
import threading
from collections.abc import Callable
from time import monotonic
from typing import TYPE_CHECKING, Final, Generic, Never, TypeVar, cast, final

from .._traits import WorkerTraits
from ..framing import MessageProtocol, _Messages

if TYPE_CHECKING:
    from ..abc import Request
    from ..connections import StreamConnection
    from ..deadlines import Deadlines
    from ..protocols import Evented, StreamProtocol
    from .loop import Loop
    from .pipeline import Pipeline

__all__ = ("Offload", "ReactorWorkers")

_ReqT = TypeVar("_ReqT", bound="Request[object]")

#: recv()/send() without blocking, whatever the socket's mode (Linux, the BSDs, macOS).
_DONTWAIT: Final = getattr(socket, "MSG_DONTWAIT", 0)
#: SO_LINGER on, for 0 seconds: close() resets the connection.
_LINGER_0: Final = struct.pack("ii", 1, 0)
_NEVER: Final = float("inf")
_READ: Final = 1
_WRITE: Final = 2


@final
class ReactorWorkers(Generic[_ReqT]):
    """The reactor's workers: every stream connection dispatched is held on the loop until it ends."""

    __slots__ = ("_factory", "_offload", "deadlines", "draining", "high_water", "low_water", "pipeline", "read_size", "streams")

    #: On the loop's thread; never full; nothing to service; 32 connections
    #: taken off a listener per wake-up (a dispatch costs little).
    traits: Final = WorkerTraits("loop", capacity=False, service=False, accepts_per_wakeup=32)

    def __init__(self, pipeline: Pipeline[_ReqT], evented: Evented[Never], deadlines: Deadlines | None) -> None:
        # (Its requests are stream connections: the description checked.)
        self.pipeline = cast("Pipeline[StreamConnection[object]]", pipeline)
        self.read_size = evented.read_size
        self.high_water = evented.high_water
        self.low_water = evented.low_water
        self.deadlines = None if deadlines is None or deadlines == type(deadlines)() else deadlines
        self.streams: dict[int, _Stream] = {}  # fd -> the connection on it
        self.draining = False
        factory = evented.start
        self._offload: Offload | None = None
        if evented.offload:
            if not isinstance(factory, _Messages):
                raise TypeError(f"offload= needs a message handler (servekit.framing), not {factory!r}")
            self._offload = Offload(evented.offload, factory.handler, self.pipeline.loop)
            factory = factory.make(self._offload.submit)
        self._factory: Callable[[], StreamProtocol[object]] = factory  # type: ignore[assignment]
        self.pipeline.on_drain(self.drain)

    def dispatch(self, request: _ReqT, /) -> None:
        conn: StreamConnection[object] = request  # type: ignore[assignment]  # (a stream server's)
        sock = conn.socket
        if sock.gettimeout() is not None:  # (a default timeout: recv would wait in poll first)
            sock.setblocking(False)
        stream = _Stream(self, conn, sock)
        self.streams[stream.fd] = stream
        pipeline = self.pipeline
        if pipeline.routine:
            pipeline.started(conn)
        try:
            proto = stream.proto = self._factory()
            proto.connected(stream)
        except Exception as exc:
            stream.failed(exc)
            return
        if stream.closing is None:
            stream.interest()

    def capacity(self) -> None:
        return None

    def service_actions(self) -> None:
        pass

    def drain(self) -> None:
        """A drain began (on the loop's thread): close the message connections that wait for their next
        message (after their answers are sent); the others once they do."""
        self.draining = True
        for stream in list(self.streams.values()):
            stream.done_draining()

    def close(self) -> None:
        """The server closes (its loop has stopped): end every connection left, stop the pool."""
        for stream in list(self.streams.values()):
            stream.end("dropped", abort=True)
        if self._offload is not None:
            self._offload.close(self.pipeline.loop)


@final
class _Stream:
    """One connection on the reactor, and the :class:`~servekit.protocols.Output` its protocol writes through."""

    __slots__ = (
        "active_at", "bytes_in", "bytes_out", "closing", "conn", "fd", "got_any", "paused", "pending", "proto",
        "reactor", "registered", "request_from", "size", "sock", "started", "timer_at", "wanted",
    )  # fmt: skip

    def __init__(self, reactor: ReactorWorkers[_ReqT], conn: StreamConnection[object], sock: socket.socket) -> None:
        self.reactor = reactor
        self.conn = conn
        self.sock = sock
        self.fd = sock.fileno()
        self.proto: StreamProtocol[object] | None = None
        self.pending: list[bytes] | None = None  # what the socket has not taken yet
        self.size = 0  # its length
        self.wanted = True  # the protocol wants to read (pause_reading/resume_reading)
        self.paused = False  # not read: the buffer went over high_water
        self.closing: str | None = None  # the reason, once closing
        self.bytes_in = self.bytes_out = 0
        self.started = self.active_at = self.request_from = monotonic()
        self.got_any = False
        self.timer_at: float | None = None
        self.registered = 0  # what the loop watches the socket for (_READ, _WRITE)

    # -- the loop's callbacks -----------------------------------------------------------

    def readable(self) -> None:
        if not self.wanted:  # paused (lazily: the socket stays watched until something comes)
            self.interest()
            return
        try:
            data = self.sock.recv(self.reactor.read_size, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.end("reset", abort=True)
            return
        proto = self.proto
        assert proto is not None
        if not data:
            try:
                proto.eof_received()
            except Exception as exc:
                self.failed(exc)
                return
            self.close()
            return
        self.bytes_in += len(data)
        self.got_any = True
        if self.reactor.deadlines is not None:
            self.active_at = monotonic()
        try:
            proto.data_received(data)
        except Exception as exc:
            self.failed(exc)
            return
        if self.reactor.draining:
            self.done_draining()

    def writable(self) -> None:
        pending = self.pending
        if pending is None:
            self.interest()
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        try:
            sent = self.sock.send(data, _DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.end("reset", abort=True)
            return
        self.bytes_out += sent
        if self.reactor.deadlines is not None:
            self.active_at = monotonic()
        if sent == len(data):
            self.pending = None
            self.size = 0
        else:
            self.pending = [data[sent:]]
            self.size = len(data) - sent
        if self.closing is not None:
            if self.pending is None:
                self.end(self.closing)
            return
        if self.paused and self.size <= self.reactor.low_water:
            self.paused = False
            self.interest()
            try:
                assert self.proto is not None
                self.proto.writable()
            except Exception as exc:
                self.failed(exc)
                return
        elif self.pending is None:
            self.interest()

    def check_time(self) -> None:
        """The connection's timer fired: end it if a limit has passed, else set the timer again."""
        self.timer_at = None
        if self.closing is not None and self.pending is None:
            return
        due = self.due()
        if due <= monotonic():
            self.end("deadline", abort=True)
        elif due < _NEVER:
            self.timer_at = due
            self.reactor.pipeline.loop.call_at(due, self.check_time)

    # -- the Output -----------------------------------------------------------------------

    @property
    def peer(self) -> object:
        return self.conn.client_address

    @property
    def server_address(self) -> object:
        return self.conn.server_address

    @property
    def buffered(self) -> int:
        return self.size

    def write(self, data: bytes, /) -> None:
        if self.closing is not None or not data:
            return
        if self.reactor.deadlines is not None:
            self.request_from = self.active_at
        pending = self.pending
        if pending is not None:
            pending.append(data)
            self.size += len(data)
        else:
            try:
                sent = self.sock.send(data, _DONTWAIT)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:  # the peer is gone
                self.end("reset", abort=True)
                return
            self.bytes_out += sent
            if sent == len(data):
                return
            self.pending = [data[sent:]]
            self.size = len(data) - sent
            self.interest()
        if not self.paused and self.size > self.reactor.high_water:
            self.paused = True
            self.interest()

    def close(self, reason: str = "finished", /) -> None:
        if self.closing is not None:
            return
        self.closing = reason
        if self.pending is None:
            self.end(reason)
        else:
            self.interest()

    def abort(self) -> None:
        if self.closing is None or self.pending is not None:
            self.end("aborted", abort=True)

    def pause_reading(self) -> None:
        # Lazily: the socket is left out of the wait only if it turns readable
        # meanwhile -- a message answered on the pool costs no change of the
        # wait's registrations, unless its client sends more before the answer.
        self.wanted = False

    def resume_reading(self) -> None:
        if not self.wanted:
            self.wanted = True
            if self.reactor.deadlines is not None:
                self.request_from = self.active_at = monotonic()
            if self.closing is None:
                self.interest()

    # -- the rest ------------------------------------------------------------------------

    def interest(self) -> None:
        """Watch the socket for what the connection waits for now; set its timer if it has none."""
        reading = self.wanted and not self.paused and self.closing is None
        wanted = (_READ if reading else 0) | (0 if self.pending is None else _WRITE)
        loop = self.reactor.pipeline.loop
        if wanted != self.registered:
            self.registered = wanted
            if wanted:
                loop.watch(self.fd, self.readable if reading else None, None if self.pending is None else self.writable)
            else:
                loop.unwatch(self.fd)
        if self.timer_at is None and self.reactor.deadlines is not None:
            due = self.due()
            if due < _NEVER:
                self.timer_at = due
                loop.call_at(due, self.check_time)

    def due(self) -> float:
        """When the first of the connection's time limits passes, as things stand (``inf``: none does).

        ``first_byte`` and ``request`` count while the protocol wants to read
        -- also while the connection is not read because its peer does not
        read its answers: such a peer completes no request either -- and
        ``idle`` while it waits for the peer either way; ``lifetime`` always.
        """
        limits = self.reactor.deadlines
        assert limits is not None
        due = _NEVER
        if limits.lifetime is not None:
            due = self.started + limits.lifetime
        waiting = self.wanted and self.closing is None  # for the client's next bytes
        if waiting:
            if limits.first_byte is not None and not self.got_any:
                due = min(due, self.started + limits.first_byte)
            if limits.request is not None:
                due = min(due, self.request_from + limits.request)
        if limits.idle is not None and (waiting or self.pending is not None):
            due = min(due, self.active_at + limits.idle)
        return due

    def failed(self, exc: BaseException) -> None:
        """A protocol method (or its message handler) raised *exc*: reported, and the connection ends."""
        if self.reactor.streams.get(self.fd) is self:
            self.end("error", abort=True, failure=exc)
        elif isinstance(exc, Exception):  # (ended already: in closed(), say)
            self.reactor.pipeline.report_error(self.conn, exc)

    def answer(self, proto: MessageProtocol, reply: bytes | None, exc: BaseException | None) -> None:
        """On the loop's thread: the pool's answer for *proto*, this connection's protocol."""
        if self.closing is not None:  # (ended, or closing: the answer has nowhere to go)
            return
        if exc is not None:
            self.failed(exc)
            return
        if self.reactor.deadlines is not None:
            self.active_at = monotonic()
        try:
            proto.answered(reply)
        except Exception as error:
            self.failed(error)
            return
        if self.reactor.draining:
            self.done_draining()

    def done_draining(self) -> None:
        """While draining: close a message connection that waits for its next message (once its answers are
        sent).  One that has sent nothing yet may have its first message on the way: it is answered first."""
        proto = self.proto
        if self.closing is None and self.got_any and isinstance(proto, MessageProtocol) and proto.between_messages():
            self.close()

    def end(self, reason: str, abort: bool = False, failure: BaseException | None = None) -> None:
        """The connection is over: off the loop, its protocol told, and ended on the route."""
        reactor = self.reactor
        if reactor.streams.get(self.fd) is not self:  # ended already (its fd may be another's now)
            return
        del reactor.streams[self.fd]
        self.closing = reason
        self.pending = None
        pipeline = reactor.pipeline
        if self.registered:
            self.registered = 0
            pipeline.loop.unwatch(self.fd)
        if abort:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
            except OSError:
                pass
        if failure is not None and isinstance(failure, Exception):
            pipeline.report_error(self.conn, failure)
        proto = self.proto
        if proto is not None:
            try:
                proto.closed(reason)
            except Exception as exc:
                pipeline.report_error(self.conn, exc)
        pipeline.end(
            self.conn, reason, None, monotonic() - self.started, failure, None, (self.bytes_in, self.bytes_out)
        )


@final
class Offload:
    """A pool of threads that runs a message handler; its answers go back to the loop, in order per connection.

    Args:
        workers: how many threads.
        handler: the message function.
        loop: the serve loop (the pool's socketpair is one of its sources, until :meth:`close`).
    """

    __slots__ = ("_done", "_handler", "_jobs", "_lock", "_pair", "_threads")

    def __init__(self, workers: int, handler: Callable[[bytes], bytes | None], loop: Loop) -> None:
        self._handler = handler
        self._jobs: queue.SimpleQueue[tuple[MessageProtocol, bytes] | None] = queue.SimpleQueue()
        self._done: collections.deque[tuple[MessageProtocol, bytes | None, BaseException | None]] = collections.deque()
        self._lock = threading.Lock()
        self._pair = socket.socketpair()
        for sock in self._pair:
            sock.setblocking(False)
        loop.watch(self._pair[0].fileno(), self._deliver)
        self._threads: list[threading.Thread] = []
        try:
            for number in range(workers):
                thread = threading.Thread(target=self._work, name=f"servekit offload {number + 1}", daemon=True)
                thread.start()
                self._threads.append(thread)
        except BaseException:
            self.close(loop)
            raise

    def submit(self, proto: MessageProtocol, message: bytes) -> None:
        """From the loop's thread: answer *message* for *proto* on a thread of the pool."""
        self._jobs.put((proto, message))

    def _work(self) -> None:
        jobs, handler, done, lock, poke = self._jobs, self._handler, self._done, self._lock, self._pair[1].send
        while (job := jobs.get()) is not None:
            proto, message = job
            try:
                result: tuple[MessageProtocol, bytes | None, BaseException | None] = (proto, handler(message), None)
            except Exception as exc:
                result = (proto, None, exc)
            with lock:
                first = not done
                done.append(result)
            if first:  # (the loop takes every answer there is when it wakes)
                try:
                    poke(b"\0")
                except OSError:  # full: a wake-up is pending already
                    pass

    def _deliver(self) -> None:
        """On the loop's thread: write the answers that came back."""
        try:
            self._pair[0].recv(4096)
        except OSError:
            pass
        with self._lock:
            answers = list(self._done)
            self._done.clear()
        for proto, reply, exc in answers:
            stream = proto.output
            if isinstance(stream, _Stream):
                stream.answer(proto, reply, exc)

    def close(self, loop: Loop) -> None:
        """Stop the threads once they are done with what they have; close the socketpair, a source of *loop*."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        loop.unwatch(self._pair[0].fileno())
        for sock in self._pair:
            sock.close()

