"""The deadline engine of a stream connection (private): its clock, and the reads and writes it bounds.

:class:`~servekit.connections.StreamConnection` puts a :class:`_ConnectionReader`
under ``rfile`` and a :class:`_DeadlineSender` inside ``wfile`` when it has a
clock (:meth:`servekit.deadlines.Deadlines.clock` makes one).  Stdlib only:
``servekit.classic`` loads the connections, and with them this module.
"""

from __future__ import annotations

import io
import select
import socket
import struct
from time import monotonic
from typing import TYPE_CHECKING, cast, final

from .errors import DeadlineExceeded

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from .errors import _DeadlineName

#: A limit this long (about 31 years) is no limit: ``settimeout()`` overflows not far above it.
_FOREVER = 1e9

#: SO_RCVTIMEO's value, a ``struct timeval`` (all zero: no timeout).
_TIMEVAL = struct.Struct("@ll")


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
        "kernel_until",
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
        #: Until this ``monotonic()`` time a read may go straight to the kernel:
        #: SO_RCVTIMEO ends it short of every deadline.  (Deadlines never move
        #: earlier -- ``request`` restarts later, ``first_byte`` goes -- so it
        #: stays true; 0.0: look at the deadlines.)
        self.kernel_until = 0.0

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
        self.kernel_until = 0.0
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
    clock.kernel_until = 0.0


def _stop_kernel_wait(sock: socket.socket, clock: _DeadlineClock) -> None:
    """The handler takes *sock* itself: clear any SO_RCVTIMEO ``rfile``'s reads left on it.

    From then on those reads bound their waits with ``poll()`` instead, so
    that the handler's own reads block as documented.
    """
    if clock.kernel_wait:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _TIMEVAL.pack(0, 0))
        except OSError:
            pass  # closed: nothing to clear
    clock.kernel_wait = None
    clock.kernel_until = 0.0


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
      Once the handler takes the socket itself (:attr:`~servekit.connections.StreamConnection.socket`)
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
        if monotonic() < clock.kernel_until:  # (the common read of a request deadline: one look at the clock)
            try:
                count = sock.recv_into(buffer)
            except BlockingIOError:  # SO_RCVTIMEO passed
                count = self._read_again(sock, buffer, clock)
        else:
            count = self._bounded(sock, buffer, clock)
        if count:
            clock.first_byte_at = None
            clock.received += count
        return count

    def _bounded(self, sock: socket.socket, buffer: Buffer, clock: _DeadlineClock) -> int:
        """A read bounded by the tightest deadline, after looking at each."""
        now = monotonic()
        timeout, which = clock.wait(True)
        idle = clock.idle
        # A deadline tighter than the socket's own timeout: on a blocking
        # socket SO_RCVTIMEO bounds the read, else poll() waits for it first.
        if timeout is not None and timeout != idle and idle is None and (wait := clock.kernel_wait) is not None:
            if not wait or wait > timeout:
                # A little short: the next reads' deadlines, a little later, need no new value.
                wait = timeout - min(timeout * 0.125, 0.5)
                _set_kernel_wait(sock, clock, wait)
            # A read that starts before then ends, at the latest, before the deadline.
            clock.kernel_until = now + timeout - clock.kernel_wait  # type: ignore[operator]
            try:
                return sock.recv_into(buffer)
            except BlockingIOError:  # SO_RCVTIMEO passed
                return self._read_again(sock, buffer, clock)
        if timeout is not None and timeout != idle and not self._ready(sock, timeout):
            raise clock.exceed(which)
        try:
            return sock.recv_into(buffer)
        except TimeoutError:
            raise clock.exceed(which) from None

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
    """In a :class:`~servekit.connections.SocketWriter`, the socket of a connection with deadlines.

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
        if clock.lifetime_at is None and clock.exceeded is None:
            # Only the idle limit bounds a write (the usual case): the
            # socket's own timeout is that limit already.
            try:
                sock.sendall(data)
            except TimeoutError:
                raise clock.exceed("idle") from None
        else:
            self._bounded(data)
        clock.sent += len(data) if type(data) is bytes else memoryview(data).nbytes
        request = clock.request
        if request is not None:  # the client's next request may take the request limit again
            clock.request_at = monotonic() + request

    def _bounded(self, data: Buffer) -> None:
        """A send bounded by the tightest of the idle and lifetime deadlines."""
        sock = self._sock
        clock = self._clock
        idle = clock.idle
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

    def fileno(self) -> int:
        return self._sock.fileno()
