"""The request values handed to handlers: a stream connection or a datagram.

A stream connection may carry deadlines (:class:`servekit.deadlines.Deadlines`
describes them): a private clock per connection that bounds each read and
write of its ``rfile`` and ``wfile`` and raises :exc:`DeadlineExceeded`.
"""

from __future__ import annotations

import errno
import io
import select
import socket
import struct
from time import monotonic
from typing import TYPE_CHECKING, Generic, Literal, cast, final

from ._types import _AddrT_co

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from ._types import Address

__all__ = ("Datagram", "DeadlineExceeded", "SocketWriter", "StreamConnection")

#: The four deadlines of a stream connection.
_DeadlineName = Literal["first_byte", "idle", "request", "lifetime"]

_WHAT = {
    "first_byte": "no first byte within {} s",
    "idle": "a single read or write waited {} s",
    "request": "no complete request within {} s",
    "lifetime": "the connection lasted {} s",
}

#: A limit this long (about 31 years) is no limit: ``settimeout()`` overflows not far above it.
_FOREVER = 1e9

#: SO_RCVTIMEO's value, a ``struct timeval`` (all zero: no timeout).
_TIMEVAL = struct.Struct("@ll")


class DeadlineExceeded(TimeoutError):
    """A deadline of a stream connection passed; the connection is no longer usable.

    Attributes:
        which: the deadline that passed: ``"first_byte"``, ``"idle"``,
            ``"request"`` or ``"lifetime"``.
        seconds: its limit, in seconds.
    """

    which: _DeadlineName
    seconds: float

    def __init__(self, which: _DeadlineName, seconds: float) -> None:
        super().__init__(f"{_WHAT[which].format(float(seconds))} ({which} deadline)")
        self.which = which
        self.seconds = seconds

    def __reduce__(self) -> tuple[type[DeadlineExceeded], tuple[_DeadlineName, float]]:
        return (type(self), (self.which, self.seconds))


@final
class _DeadlineClock:
    """The deadlines of one connection, as points in ``time.monotonic()`` time.

    Made per connection by :meth:`servekit.deadlines.Deadlines.clock` (or
    directly, from the runtime, with the four limits).  The connection's
    start is *start* (default: now).  Which deadlines bound what:

    - ``first_byte``: reads, until the first byte arrives (or the connection
      is given a prefix);
    - ``idle``: each read and each write, on its own;
    - ``request``: reads, counted from the start and restarted after each
      write through ``wfile``;
    - ``lifetime``: every read and write, from the start.
    """

    __slots__ = (
        "exceeded",
        "first_byte",
        "first_byte_at",
        "idle",
        "kernel_wait",
        "lifetime",
        "lifetime_at",
        "received",
        "request",
        "request_at",
        "sent",
    )

    def __init__(
        self,
        first_byte: float | None = None,
        idle: float | None = None,
        request: float | None = None,
        lifetime: float | None = None,
        start: float | None = None,
    ) -> None:
        if start is None:
            start = monotonic()
        self.first_byte = first_byte = _limit(first_byte)
        self.idle = _limit(idle)
        self.request = request = _limit(request)
        self.lifetime = lifetime = _limit(lifetime)
        self.first_byte_at = None if first_byte is None else start + first_byte
        self.request_at = None if request is None else start + request
        self.lifetime_at = None if lifetime is None else start + lifetime
        #: The last DeadlineExceeded raised: once set, every read and write raises again.
        self.exceeded: DeadlineExceeded | None = None
        #: Bytes read off the socket through ``rfile``, and sent through ``wfile``.
        self.received = 0
        self.sent = 0
        #: The socket's SO_RCVTIMEO, in seconds, while ``rfile``'s reads use it
        #: (0.0: not set); None once the handler has the socket itself.
        self.kernel_wait: float | None = 0.0

    def wait(self, reading: bool) -> tuple[float | None, _DeadlineName]:
        """The longest the next read (or write) may wait, and the deadline that bounds it.

        Raises :exc:`DeadlineExceeded` if that deadline has passed already,
        or if one did before.
        """
        if self.exceeded is not None:
            raise self.exceed(self.exceeded.which)
        now = monotonic()
        best = self.idle
        which: _DeadlineName = "idle"
        at = self.lifetime_at
        if at is not None and (best is None or at - now < best):
            best, which = at - now, "lifetime"
        if reading:
            at = self.request_at
            if at is not None and (best is None or at - now < best):
                best, which = at - now, "request"
            at = self.first_byte_at
            if at is not None and (best is None or at - now < best):
                best, which = at - now, "first_byte"
        if best is not None and best <= 0.0:
            raise self.exceed(which)
        return best, which

    def exceed(self, which: _DeadlineName) -> DeadlineExceeded:
        """Record that *which* passed; return the exception to raise."""
        limit = {"first_byte": self.first_byte, "idle": self.idle, "request": self.request}.get(which, self.lifetime)
        exc = self.exceeded = DeadlineExceeded(which, cast("float", limit))
        return exc

    def __repr__(self) -> str:
        limits = ", ".join(
            f"{name}={value}"
            for name, value in (
                ("first_byte", self.first_byte),
                ("idle", self.idle),
                ("request", self.request),
                ("lifetime", self.lifetime),
            )
            if value is not None
        )
        return f"<deadline clock {limits or 'without limits'}>"


def _limit(seconds: float | None) -> float | None:
    return None if seconds is None or seconds >= _FOREVER else float(seconds)


def _set_kernel_wait(sock: socket.socket, clock: _DeadlineClock, seconds: float) -> None:
    """Set *sock*'s SO_RCVTIMEO to *seconds* (at least a millisecond: zero would be none)."""
    seconds = max(seconds, 0.001)
    whole = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL.pack(whole, int((seconds - whole) * 1e6)))
    clock.kernel_wait = seconds


@final
class _ConnectionReader(io.RawIOBase):
    """The raw reader under ``rfile`` of a connection with deadlines or a prefix.

    ``readinto`` first hands out *prefix* (bytes already read off the
    socket), then reads the socket, each ``recv_into`` bounded by the
    clock's tightest deadline.  The socket's own timeout (the ``idle``
    limit) is never changed here, so a read costs the system calls of a
    plain read:

    - a blocking socket (no ``idle`` limit) waits in the kernel, under an
      SO_RCVTIMEO no longer than the deadline: a read that times out before
      the deadline (the timeout is set a little short, so that it need not be
      set again for every read) sets it to what is left and reads again.
      Once the handler takes the socket itself (:attr:`StreamConnection.socket`)
      SO_RCVTIMEO is cleared, and the next case applies;
    - otherwise a deadline tighter than the socket's timeout is waited for
      with ``poll()`` before the read.
    """

    __slots__ = ("_clock", "_poller", "_prefix", "_sock")

    def __init__(self, sock: socket.socket, clock: _DeadlineClock | None, prefix: bytes) -> None:
        super().__init__()
        self._sock: socket.socket | None = sock
        self._clock = clock
        self._prefix = memoryview(prefix) if prefix else None
        self._poller: select.poll | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Buffer, /) -> int:
        sock = self._sock
        if sock is None:
            raise ValueError("I/O operation on closed file")
        clock = self._clock
        prefix = self._prefix
        if prefix is not None:
            if clock is not None and clock.exceeded is not None:
                raise clock.exceed(clock.exceeded.which)
            with memoryview(buffer) as view, view.cast("B") as flat:
                count = min(len(flat), len(prefix))
                flat[:count] = prefix[:count]
            rest = prefix[count:]
            self._prefix = rest if rest else None
            return count
        if clock is None:
            return sock.recv_into(buffer)
        timeout, which = clock.wait(True)
        idle = clock.idle
        # A deadline tighter than the socket's own timeout: on a blocking
        # socket SO_RCVTIMEO bounds the read, else poll() waits for it first.
        if timeout is not None and timeout != idle and idle is None and (wait := clock.kernel_wait) is not None:
            if not wait or wait > timeout:
                # A little short: the next reads' deadlines, a little later, need no new value.
                _set_kernel_wait(sock, clock, timeout - min(timeout * 0.125, 0.5))
            try:
                count = sock.recv_into(buffer)
            except BlockingIOError:  # SO_RCVTIMEO passed
                count = self._read_again(sock, buffer, clock)
        else:
            if timeout is not None and timeout != idle and not self._ready(sock, timeout):
                raise clock.exceed(which)
            try:
                count = sock.recv_into(buffer)
            except TimeoutError:
                raise clock.exceed(which) from None
        if count:
            clock.first_byte_at = None
            clock.received += count
        return count

    @staticmethod
    def _read_again(sock: socket.socket, buffer: Buffer, clock: _DeadlineClock) -> int:
        """After SO_RCVTIMEO passed: raise if the deadline did too, else wait for what is left of it."""
        while True:
            left, _ = clock.wait(True)  # raises DeadlineExceeded
            _set_kernel_wait(sock, clock, cast("float", left))
            try:
                return sock.recv_into(buffer)
            except BlockingIOError:
                pass

    def _ready(self, sock: socket.socket, timeout: float) -> bool:
        """Whether *sock* turns readable within *timeout* seconds."""
        poller = self._poller
        if poller is None:
            poller = self._poller = select.poll()
            poller.register(sock, select.POLLIN)
        # (Milliseconds, rounded up: never woken before the deadline.)
        return bool(poller.poll(timeout * 1000.0))

    def fileno(self) -> int:
        sock = self._sock
        if sock is None:
            raise ValueError("I/O operation on closed file")
        return sock.fileno()

    def close(self) -> None:
        self._sock = None
        self._prefix = None
        self._poller = None
        super().close()


@final
class _DeadlineSender:
    """In a :class:`SocketWriter`, the socket of a connection with deadlines.

    ``sendall`` is bounded by the idle and lifetime deadlines and restarts
    the request deadline when it is done.  While the idle limit is the
    tightest (the usual case), the socket's own timeout is that limit
    already, and is not set again.
    """

    __slots__ = ("_clock", "_sock")

    def __init__(self, sock: socket.socket, clock: _DeadlineClock) -> None:
        self._sock = sock
        self._clock = clock

    def sendall(self, data: Buffer, /) -> None:
        sock = self._sock
        clock = self._clock
        idle = clock.idle
        timeout: float | None
        which: _DeadlineName
        if clock.lifetime_at is None and clock.exceeded is None:
            timeout, which = idle, "idle"  # only the idle limit bounds a write: the socket's own timeout
        else:
            timeout, which = clock.wait(False)
        if timeout != idle:
            sock.settimeout(timeout)
        try:
            sock.sendall(data)
        except TimeoutError:
            raise clock.exceed(which) from None
        finally:
            if timeout != idle:
                sock.settimeout(idle)
        clock.sent += len(data) if type(data) is bytes else memoryview(data).nbytes
        request = clock.request
        if request is not None:  # the client's next request may take the request limit again
            clock.request_at = monotonic() + request

    def fileno(self) -> int:
        return self._sock.fileno()


@final
class SocketWriter(io.BufferedIOBase):
    """A write-only file over a socket: every ``write()`` sends all its bytes at once.

    Unlike ``socket.makefile("wb", 0)``, a write is never partial, and unlike a
    buffered writer nothing waits in a buffer for a ``flush()``: an echo loop
    answers each line as it is written.
    """

    __slots__ = ("_sock",)

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        # None once closed: one check per write instead of IOBase's `closed` lookup.
        # (A connection with deadlines puts its _DeadlineSender here.)
        self._sock: socket.socket | _DeadlineSender | None = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Buffer, /) -> int:
        sock = self._sock
        if sock is None:
            raise ValueError("I/O operation on closed SocketWriter")
        sock.sendall(data)
        if type(data) is bytes:  # the common case, without a memoryview
            return len(data)
        with memoryview(data) as view:
            return view.nbytes

    def fileno(self) -> int:
        sock = self._sock
        if sock is None:
            raise ValueError("I/O operation on closed SocketWriter")
        return sock.fileno()

    def close(self) -> None:
        self._sock = None
        super().close()


@final
class StreamConnection(Generic[_AddrT_co]):
    """One accepted stream connection (TCP or Unix stream), from a peer at an address of type *A*.

    ``rfile`` (a buffered reader) and ``wfile`` (a :class:`SocketWriter`) are
    made the first time a handler touches them, so a handler that uses the
    socket directly pays for neither (with deadlines or a prefix, at once).
    The server closes them, and the connection, when the handler returns.

    *deadlines*, a per-connection clock made by
    :meth:`servekit.deadlines.Deadlines.clock`, bounds every read of
    ``rfile`` and write of ``wfile`` (see :class:`~servekit.deadlines.Deadlines`):
    one that passes raises :exc:`DeadlineExceeded`, and the connection is
    unusable from then on (each later read or write raises it again).  The
    socket's own timeout is set to the ``idle`` limit, so a handler that
    uses the socket directly is bounded too (by a plain ``TimeoutError``).
    *prefix* holds bytes already read off the socket (by the server, before
    the handler ran): ``rfile`` returns them first, as they are.
    """

    __slots__ = ("_address", "_clock", "_rfile", "_socket", "_wfile")

    def __init__(
        self,
        sock: socket.socket,
        client_address: _AddrT_co,
        *,
        deadlines: _DeadlineClock | None = None,
        prefix: bytes = b"",
    ) -> None:
        self._socket = sock
        self._address = client_address
        self._clock = deadlines
        if deadlines is None and not prefix:  # the hot path: nothing more
            self._rfile: io.BufferedReader | None = None
            self._wfile: SocketWriter | None = None
            return
        # The files are made at once here, so that the properties' first use
        # costs a plain connection nothing more.
        self._rfile = io.BufferedReader(_ConnectionReader(sock, deadlines, prefix))
        if deadlines is None:
            self._wfile = None
            return
        wfile = self._wfile = SocketWriter(sock)
        wfile._sock = _DeadlineSender(sock, deadlines)
        if prefix:
            deadlines.first_byte_at = None  # the server read it already
        sock.settimeout(deadlines.idle)

    @property
    def socket(self) -> socket.socket:
        """The connected socket (blocking; with deadlines, its timeout is the ``idle`` limit)."""
        clock = self._clock
        if clock is not None and clock.kernel_wait is not None:
            # rfile's reads may have left an SO_RCVTIMEO on it: clear it, and
            # make them bound their waits otherwise from now on.
            if clock.kernel_wait:
                try:
                    self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL.pack(0, 0))
                except OSError:
                    pass  # closed: nothing to clear
            clock.kernel_wait = None
        return self._socket

    @property
    def client_address(self) -> _AddrT_co:
        """The peer's address: ``(host, port)`` over IP, ``""`` from an unnamed Unix socket."""
        return self._address

    @property
    def rfile(self) -> io.BufferedReader:
        """A buffered binary reader over the connection (made on first use)."""
        rfile = self._rfile
        if rfile is None:
            rfile = self._rfile = self._socket.makefile("rb")
        return rfile

    @property
    def wfile(self) -> SocketWriter:
        """An unbuffered binary writer over the connection (made on first use)."""
        wfile = self._wfile
        if wfile is None:
            wfile = self._wfile = SocketWriter(self._socket)
        return wfile

    @property
    def deadline_exceeded(self) -> DeadlineExceeded | None:
        """The last :exc:`DeadlineExceeded` a read or write raised (``None``: none did)."""
        clock = self._clock
        return None if clock is None else clock.exceeded

    def close(self) -> None:
        """Finish the connection: close the files, send FIN, close the socket.

        Idempotent.  Errors from a peer that already went away are ignored.
        """
        rfile = self._rfile
        wfile = self._wfile
        if rfile is not None:
            rfile.close()
        if wfile is not None:
            wfile.close()
        sock = self._socket
        if sock.fileno() < 0:
            return
        try:
            # Shut down explicitly: a forked child may still share the fd, and
            # close() alone would then send no FIN.
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        sock.close()

    def __repr__(self) -> str:
        return f"<StreamConnection from {self._address!r} fd={self._socket.fileno()}>"


def _traffic(request: object) -> tuple[int | None, int | None]:
    """Bytes in and out of *request* where they were counted (a connection with deadlines), else ``None``."""
    # (This module's own class: its clock is not private to this function.)
    clock = request._clock if isinstance(request, StreamConnection) else None
    if clock is None:
        return None, None
    return clock.received, clock.sent


@final
class Datagram(Generic[_AddrT_co]):
    """One received datagram (UDP or Unix datagram), from a peer at an address of type *A*.

    Nothing is sent back unless the handler calls :meth:`reply`.
    """

    __slots__ = ("_address", "_data", "_socket")

    def __init__(self, data: bytes, sock: socket.socket, client_address: _AddrT_co) -> None:
        self._data = data
        self._socket = sock
        self._address = client_address

    @property
    def data(self) -> bytes:
        """The payload, at most the transport's ``max_packet_size`` bytes."""
        return self._data

    @property
    def socket(self) -> socket.socket:
        """The server's socket, shared by every datagram; replies go out on it."""
        return self._socket

    @property
    def client_address(self) -> _AddrT_co:
        """The sender's address: ``(host, port)`` over IP, ``""`` from an unnamed Unix socket."""
        return self._address

    def reply(self, data: Buffer) -> None:
        """Send *data* to the sender in one datagram.

        Raises:
            OSError: with ``errno.EDESTADDRREQ``, when the sender cannot be
                answered: a Unix datagram socket that is not bound to a name
                (``client_address == ""``) has no address to send to.  Any
                other ``OSError`` is one of ``sendto()``.
        """
        address = self._address
        if not address:
            raise OSError(
                errno.EDESTADDRREQ,
                f"cannot reply to a datagram from an unnamed Unix socket ({address!r}): "
                "the sender must bind its socket to a path to get replies",
            )
        self._socket.sendto(data, cast("Address", address))

    def close(self) -> None:
        """Nothing to release: the socket belongs to the server."""

    def __repr__(self) -> str:
        return f"<Datagram of {len(self._data)} bytes from {self._address!r}>"
