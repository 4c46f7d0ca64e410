"""A small kit for testing servers and handlers built with servekit.

Blocking handlers are driven over a socketpair (:func:`drive`,
:func:`driving`); servers in a thread (:func:`serving`, :class:`EventLog`).
Protocols and message handlers of the reactor (:mod:`servekit.protocols`,
:mod:`servekit.framing`) need neither: :func:`feed` hands them bytes and a
:class:`FakeOutput` records what they write -- no socket, no loop, no clock.
"""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from time import monotonic
from typing import TYPE_CHECKING, Generic, TypeVar, cast, final, overload

from ._types import Address, _AddrT_co
from .abc import BoundServer, Handler
from .connections import StreamConnection
from .protocols import Evented, StreamProtocol

if TYPE_CHECKING:
    from .deadlines import Deadlines
    from .events import Event

__all__ = (
    "EventLog",
    "FakeOutput",
    "datagram_exchange",
    "drive",
    "driving",
    "feed",
    "recv_exactly",
    "recv_line",
    "serving",
    "stream_exchange",
)

_BoundT = TypeVar("_BoundT", bound=BoundServer[object])
_EventT = TypeVar("_EventT", bound="Event")
_A = TypeVar("_A")


@contextmanager
def serving(bound: _BoundT, *, poll_interval: float = 0.5, timeout: float = 10.0) -> Iterator[_BoundT]:
    """Run ``bound.serve_forever`` in a thread for the duration of a ``with`` block.

    On leaving the block the server is shut down, the thread joined (at most
    *timeout* seconds) and the server closed.  The address is known before the
    block starts (``bound.address``), so clients need no retry loop.

    Raises:
        RuntimeError: the serving thread did not stop within *timeout*.
    """
    thread = threading.Thread(
        target=bound.serve_forever,
        kwargs={"poll_interval": poll_interval},
        name=f"servekit serving {bound.address!r}",
    )
    thread.start()
    try:
        yield bound
    finally:
        bound.shutdown()
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"serve_forever of {bound!r} did not stop within {timeout} s")
        bound.close()


def _family(address: Address) -> socket.AddressFamily:
    if isinstance(address, (str, bytes)):
        return socket.AF_UNIX
    return socket.AF_INET6 if ":" in address[0] else socket.AF_INET


def stream_exchange(address: Address, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Connect to *address*, send *data*, half-close, and return all bytes until EOF.

    A connection the server resets (it closed without reading everything)
    ends the answer like an EOF does.
    """
    chunks = []
    with socket.socket(_family(address), socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, BrokenPipeError):
            pass
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:
                raise
    return b"".join(chunks)


def datagram_exchange(
    address: Address, data: bytes, *, timeout: float = 10.0, reply_path: str | None = None
) -> bytes:
    """Send one datagram to *address* and return the first datagram that comes back.

    A Unix datagram client needs an address of its own to get a reply: pass
    *reply_path* (it is removed afterwards).

    Raises:
        TimeoutError: no reply within *timeout*.
    """
    with socket.socket(_family(address), socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        if reply_path is not None:
            sock.bind(reply_path)
        try:
            sock.sendto(data, address)
            return sock.recv(65536)
        finally:
            if reply_path is not None:
                os.unlink(reply_path)


def recv_line(sock: socket.socket) -> bytes:
    """Read from *sock* up to and including a newline; less if the peer closes first.

    Bytes after the newline in the same segment are returned too (a
    line-at-a-time client does not send them).  The socket's own timeout
    bounds each wait.
    """
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def recv_exactly(sock: socket.socket, count: int) -> bytes:
    """Read *count* bytes from *sock*; fewer if the peer closes first.  The socket's own timeout bounds each wait."""
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


@final
class EventLog:
    """A recording event sink: pass it as ``server(..., on_event=log)``, then look at what happened.

    Thread-safe: the serving thread and the workers record into it while
    the test reads it or waits on it.  :meth:`wait_for` blocks until the
    events it asks for are recorded, so a test never polls or sleeps.

    Example::

        log = EventLog()
        with serving(server(tcp("127.0.0.1", 0), echo, on_event=log).bind()) as bound:
            stream_exchange(bound.address, b"hi\n")
            [closed] = log.wait_for(ConnectionClosed)
    """

    __slots__ = ("_changed", "_events")

    def __init__(self) -> None:
        self._events: list[Event] = []
        # An RLock under the condition: a `where` predicate may read the log.
        self._changed = threading.Condition()

    def __call__(self, event: Event, /) -> None:
        """Record *event* and wake the waiters."""
        with self._changed:
            self._events.append(event)
            self._changed.notify_all()

    @property
    def events(self) -> list[Event]:
        """Every event recorded so far, oldest first (a copy)."""
        with self._changed:
            return list(self._events)

    def of(self, kind: type[_EventT]) -> list[_EventT]:
        """The events of type *kind* recorded so far, oldest first."""
        with self._changed:
            return [event for event in self._events if isinstance(event, kind)]

    def wait_for(
        self,
        kind: type[_EventT],
        count: int = 1,
        *,
        timeout: float = 10.0,
        where: Callable[[_EventT], bool] | None = None,
    ) -> list[_EventT]:
        """Wait until at least *count* events of type *kind* (for which *where* is true) are recorded.

        Events recorded before the call count too.  *where* is called under
        the log's lock, once per event of type *kind*.

        Returns:
            Every such event recorded so far, oldest first: *count* or more.

        Raises:
            TimeoutError: *timeout* seconds passed first; the message names
                the kind, the count wanted and what the log holds.
        """
        deadline = monotonic() + timeout
        with self._changed:
            events = self._events
            found: list[_EventT] = []
            scanned = 0
            while True:
                if events is not self._events:  # cleared meanwhile: start again
                    events, found, scanned = self._events, [], 0
                for event in events[scanned:]:
                    if isinstance(event, kind) and (where is None or where(event)):
                        found.append(event)
                scanned = len(events)
                if len(found) >= count:
                    return found
                left = deadline - monotonic()
                if left <= 0.0:
                    raise TimeoutError(self._shortfall(kind, count, timeout, found, where is not None))
                self._changed.wait(left)

    def _shortfall(self, kind: type[object], count: int, timeout: float, found: list[_EventT], filtered: bool) -> str:
        """The message of :meth:`wait_for`'s ``TimeoutError``."""
        wanted = f"{count} {kind.__name__} event{'' if count == 1 else 's'}{' matching where' if filtered else ''}"
        shown = ", ".join(repr(event) for event in found[:5]) + (", ..." if len(found) > 5 else "")
        return (
            f"waited {timeout} s for {wanted}, saw {len(found)}"
            + (f" ({shown})" if found else "")
            + f"; the log holds {self._summary()}"
        )

    def _summary(self) -> str:
        """``"3 events (Accepted 2, HandlerStarted 1)"``; call with the lock held."""
        counts: dict[str, int] = {}
        for event in self._events:
            name = type(event).__name__
            counts[name] = counts.get(name, 0) + 1
        total = len(self._events)
        kinds = ", ".join(f"{name} {n}" for name, n in counts.items())
        return f"{total} event{'' if total == 1 else 's'}" + (f" ({kinds})" if kinds else "")

    def clear(self) -> None:
        """Forget every event recorded so far."""
        with self._changed:
            self._events = []

    def __len__(self) -> int:
        with self._changed:
            return len(self._events)

    def __repr__(self) -> str:
        with self._changed:
            return f"<EventLog of {self._summary()}>"


@contextmanager
def driving(
    handler: Handler[StreamConnection[str]],
    *,
    deadlines: Deadlines | None = None,
    peer: str = "test-peer",
    timeout: float = 10.0,
) -> Iterator[socket.socket]:
    """Run *handler* on one end of a ``socket.socketpair()``; the ``with`` block gets the other end.

    No listener and no server: the handler gets a
    :class:`~servekit.connections.StreamConnection` from *peer* (with a
    clock of *deadlines*, if given) and runs in a thread of its own while
    the block talks to it through the client socket, whose timeout is
    *timeout*.  As in a server, the connection is closed when the handler
    returns (or raises), so the client then reads EOF.

    On leaving the block the client half-closes (the handler reads EOF),
    the handler thread is joined (at most *timeout* seconds), and the
    connection and the client socket are closed.  An exception the handler
    raised is raised again here, as it is; an exception of the block itself
    takes precedence (the handler is then cut off at once: its socket is
    shut down).

    Raises:
        RuntimeError: the handler did not return within *timeout* after the
            block ended.  Its socket is shut down to unblock it and both
            sockets are closed; what it raised then is the ``__cause__``.
    """
    server_sock, client_sock = socket.socketpair()
    try:
        client_sock.settimeout(timeout)
        conn = StreamConnection(server_sock, peer, deadlines=None if deadlines is None else deadlines.clock())
    except BaseException:
        server_sock.close()
        client_sock.close()
        raise
    failure: list[BaseException] = []

    def run() -> None:
        try:
            handler(conn)
        except BaseException as exc:  # re-raised in the test's thread
            failure.append(exc)
        finally:
            # Released when the handler returns, as a server does: the client reads EOF.
            conn.close()

    name = getattr(handler, "__qualname__", None) or repr(handler)
    # A daemon: a handler that ignores even its socket's shutdown must not hold up the interpreter's exit.
    thread = threading.Thread(target=run, name=f"servekit driving {name} for {peer!r}", daemon=True)
    thread.start()
    try:
        yield client_sock
    except BaseException as exc:
        try:
            _cut_off(thread, server_sock, timeout)
        finally:
            _close(conn, client_sock)
        if failure:
            exc.add_note(f"(the handler raised too: {failure[0]!r})")
            failure.clear()
        raise
    try:
        try:
            _half_close(client_sock)
        finally:
            thread.join(timeout)
            stuck = thread.is_alive()
            if stuck:
                _cut_off(thread, server_sock, timeout)
    finally:
        _close(conn, client_sock)
    try:
        if stuck:
            raise RuntimeError(
                f"handler {name} for {peer!r} did not return within {timeout} s of the end of the with block"
            ) from (failure[0] if failure else None)
        if failure:
            raise failure[0]
    finally:
        failure.clear()  # no cycle through the traceback's frames


def _half_close(sock: socket.socket) -> None:
    """Shut down *sock*'s write side; a peer that is gone already is no error."""
    if sock.fileno() < 0:  # the block closed it
        return
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError as exc:
        if exc.errno not in (errno.ENOTCONN, errno.EPIPE):
            raise


def _cut_off(thread: threading.Thread, sock: socket.socket, timeout: float) -> None:
    """Shut down the handler's socket, so that its reads and writes end, and join its thread."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # closed by the handler, or not connected any more
    thread.join(timeout)


def _close(conn: StreamConnection[str], client_sock: socket.socket) -> None:
    """Close both ends, the client's even if the connection's close fails."""
    try:
        conn.close()
    finally:
        client_sock.close()


def drive(
    handler: Handler[StreamConnection[str]],
    data: bytes,
    *,
    deadlines: Deadlines | None = None,
    peer: str = "test-peer",
    timeout: float = 10.0,
) -> bytes:
    """Run *handler* over a socketpair: send *data*, half-close, return all it wrote until it closed.

    The one-shot form of :func:`driving` (same arguments, same errors).  A
    handler that closes without reading everything ends the sending
    quietly: what it wrote is still returned.  *data* is sent before
    anything is read, so a handler that answers as it reads must not answer
    more than the socket buffers hold before it has read all of *data*.
    Each read of the answer is bounded by *timeout*.
    """
    chunks = []
    with driving(handler, deadlines=deadlines, peer=peer, timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        _half_close(sock)
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:  # it closed with our bytes unread: an end like EOF
            pass
    return b"".join(chunks)


@final
class FakeOutput(Generic[_AddrT_co]):
    """An :class:`~servekit.protocols.Output` with no socket behind it: it records what a protocol does.

    Everything written is "sent" at once (nothing is ever buffered, so a
    protocol's ``writable()`` is never due).  Give it to a protocol's
    ``connected()`` and call the protocol's methods yourself, or let
    :func:`feed` do both.

    Args:
        peer: the client's address the protocol sees.
        server_address: the listener's address it sees.
    """

    __slots__ = ("_aborted", "_closed_reason", "_peer", "_reading", "_server_address", "_written")

    def __init__(self, peer: _AddrT_co, server_address: _AddrT_co | None = None) -> None:
        self._peer = peer
        self._server_address = server_address
        self._written = bytearray()
        self._closed_reason: str | None = None
        self._aborted = False
        self._reading = True

    @property
    def peer(self) -> _AddrT_co:
        """The client's address, as given."""
        return self._peer

    @property
    def server_address(self) -> _AddrT_co | None:
        """The listener's address, as given."""
        return self._server_address

    @property
    def buffered(self) -> int:
        """Always ``0``: everything written is sent at once."""
        return 0

    @property
    def written(self) -> bytes:
        """Every byte written while the connection was open, in order."""
        return bytes(self._written)

    @property
    def closed_reason(self) -> str | None:
        """The reason the connection closed for (``"aborted"`` after :meth:`abort`), ``None`` while open."""
        return self._closed_reason

    @property
    def aborted(self) -> bool:
        """Whether the connection was aborted (by :meth:`abort`, or by :func:`feed` when a method raised)."""
        return self._aborted

    @property
    def reading(self) -> bool:
        """``False`` between :meth:`pause_reading` and :meth:`resume_reading`."""
        return self._reading

    def write(self, data: bytes, /) -> None:
        """Record *data*; ignored once the connection is closed, as on a server."""
        if self._closed_reason is None:
            self._written += data

    def close(self, reason: str = "finished", /) -> None:
        """Note *reason*; the first one counts (idempotent, as on a server)."""
        if self._closed_reason is None:
            self._closed_reason = reason

    def abort(self) -> None:
        """Close with the reason ``"aborted"``, unless closed already (as on a server: nothing is left to drop)."""
        if self._closed_reason is None:
            self._closed_reason = "aborted"
            self._aborted = True

    def pause_reading(self) -> None:
        """Note that the protocol wants no more data for now."""
        self._reading = False

    def resume_reading(self) -> None:
        """Note that the protocol wants data again."""
        self._reading = True

    def _fail(self) -> None:
        """A protocol method raised: the connection ends with ``"error"``, as a server aborts it."""
        if self._closed_reason is None:
            self._closed_reason = "error"
            self._aborted = True

    def __repr__(self) -> str:
        state = "open" if self._closed_reason is None else f"closed {self._closed_reason!r}"
        return f"<FakeOutput for {self._peer!r}, {state}, {len(self._written)} bytes written>"


@overload
def feed(
    protocol: StreamProtocol[str] | Evented[StreamConnection[str]],
    /,
    *chunks: bytes,
    eof: bool = False,
) -> FakeOutput[str]: ...
@overload
def feed(
    protocol: StreamProtocol[_A] | Evented[StreamConnection[_A]],
    /,
    *chunks: bytes,
    eof: bool = False,
    peer: _A,
    server_address: _A | None = None,
) -> FakeOutput[_A]: ...
def feed(
    protocol: StreamProtocol[_A] | Evented[StreamConnection[_A]],
    /,
    *chunks: bytes,
    eof: bool = False,
    peer: object = "test-peer",
    server_address: object = None,
) -> FakeOutput[object]:
    """Drive a stream protocol as the reactor would, with no socket, loop or clock: return what it wrote.

    ``feed(lines(shout), b"ab\\nc", b"d\\n").written == b"AB\\nCD\\n"``.

    The protocol is *protocol* itself, or the one a stream ``Evented`` makes
    (``protocol(Echo)``, ``lines(fn)``, ``messages(framing, fn)``: with
    ``offload=`` too, whose message function is then called in place).  It is
    connected to a :class:`FakeOutput` from *peer* (``"test-peer"`` by
    default; a protocol that wants an IP address needs one), gets each chunk
    as one ``data_received`` call, then ``eof_received()`` if *eof* -- after
    which the connection closes with ``"finished"``.  Once the protocol
    closes (or aborts) the connection, nothing more is fed; its ``closed()``
    is called with the reason after the method that closed returns (a server
    calls it once what is buffered is sent).  A connection left open is not
    closed: ``closed()`` is not called.

    Raises:
        TypeError: *protocol* is neither a stream protocol nor a stream
            ``Evented`` (a class is refused: pass ``Echo()`` or
            ``protocol(Echo)``), or a chunk is not ``bytes``.
        ValueError: a chunk is empty (a server reads ``b""`` as the end of
            the stream: pass ``eof=True``).
        RuntimeError: the protocol paused reading with chunks (or the end)
            still to feed: without a loop nothing would resume it.
        Exception: what a protocol method raised, as it is -- after the
            connection was aborted (``closed_reason == "error"``) and the
            protocol's ``closed("error")`` called.
    """
    for chunk in chunks:
        if not isinstance(chunk, bytes):
            raise TypeError(f"chunks must be bytes, got {type(chunk).__name__} {chunk!r}")
        if not chunk:
            raise ValueError(
                "a chunk must not be empty, got b'' (a server reads it as the end of the stream: pass eof=True)"
            )
    proto = _stream_protocol(protocol)
    out: FakeOutput[object] = FakeOutput(peer, server_address)
    left = len(chunks)
    try:
        proto.connected(out)
        for chunk in chunks:
            if out.closed_reason is not None or not out.reading:
                break
            left -= 1
            proto.data_received(chunk)
        if eof and out.closed_reason is None and out.reading:
            eof = False
            proto.eof_received()
            out.close()
    except Exception as exc:
        out._fail()
        try:
            proto.closed(out.closed_reason or "error")
        except Exception as also:  # noqa: BLE001 - noted on the first, which is raised
            exc.add_note(f"(its closed() raised too: {also!r})")
        raise
    if out.closed_reason is not None:
        proto.closed(out.closed_reason)
    elif not out.reading and (left or eof):
        unfed = " and ".join(
            ([f"{left} chunk{'' if left == 1 else 's'}"] if left else []) + (["the end"] if eof else [])
        )
        raise RuntimeError(
            f"{proto!r} paused reading with {unfed} still to feed; without a loop nothing resumes it "
            "(drive it by hand: connected(FakeOutput(peer)), then its methods)"
        )
    return out


def _stream_protocol(given: object) -> StreamProtocol[object]:
    """The protocol object *given* is, or the one its stream ``Evented`` makes."""
    if isinstance(given, Evented):
        if given.kind != "stream":
            raise TypeError(f"feed() drives stream protocols; {given!r} serves datagrams (call its message function)")
        given = cast("Callable[[], object]", given.start)()
    elif isinstance(given, type):
        name = given.__qualname__
        raise TypeError(f"expected a protocol object, got the class {name} (pass {name}() or protocol({name}))")
    missing = [
        name
        for name in ("connected", "data_received", "eof_received", "writable", "closed")
        if not callable(getattr(given, name, None))
    ]
    if missing:
        raise TypeError(
            f"expected a stream protocol (connected, data_received, eof_received, writable, closed), "
            f"got {type(given).__name__} {given!r} without {', '.join(missing)}"
        )
    return cast("StreamProtocol[object]", given)
