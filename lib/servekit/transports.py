"""Transports: how the listening socket is made (family, type, options, bind, listen)."""

from __future__ import annotations

import errno
import os
import socket
import stat
from typing import Generic, Literal, final

import attrs

from ._types import Address, IPAddress, UnixAddress, _AddrT
from ._validate import flag, int_in_range, text
from .acceptors import check_max_packet_size as _max_packet
from .abc import Acceptor, Listener, Transport
from .acceptors import MAX_PACKET_SIZE, DatagramAcceptor, StreamAcceptor, peer_address
from .connections import Datagram, StreamConnection
from .errors import bind_error

__all__ = (
    "Listener",
    "format_address",
    "TCPTransport",
    "Transport",
    "UDPTransport",
    "UnixDatagramTransport",
    "UnixStreamTransport",
    "tcp",
    "udp",
    "unix_datagram",
    "unix_stream",
)


@final
@attrs.define
class _Listener(Generic[_AddrT]):
    socket: socket.socket
    address: _AddrT
    name: str
    # (path, device, inode) of a Unix socket file this listener created.
    created: tuple[str, int, int] | None = None

    def close(self) -> None:
        if self.socket.fileno() < 0:
            return
        self.socket.close()
        if self.created is not None:
            path, device, inode = self.created
            self.created = None
            try:
                st = os.stat(path)
                # Remove the file only if it is still the one this socket made.
                if (st.st_dev, st.st_ino) == (device, inode) and stat.S_ISSOCK(st.st_mode):
                    os.unlink(path)
            except OSError:
                pass


def format_address(address: Address) -> str:
    """``host:port`` for IP addresses (``[host]:port`` for IPv6), the path for Unix ones."""
    if isinstance(address, tuple):
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return repr(address) if isinstance(address, bytes) else address


def _label(kind: str, address: Address) -> str:
    return f"{kind} {format_address(address)}"


def _listen(
    kind: str,
    family: socket.AddressFamily,
    type: socket.SocketKind,
    address: Address,
    *,
    reuse_address: bool = False,
    reuse_port: bool = False,
    backlog: int | None = None,
    replace_stale: bool = False,
) -> _Listener[_AddrT]:
    """The one place that creates, binds and listens, naming the address when it fails."""
    try:
        sock = socket.socket(family, type)
    except OSError as exc:
        raise bind_error(exc, f"cannot create {_label(kind, address)} socket: {exc.strerror}") from exc
    try:
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        path = address if family == socket.AF_UNIX and isinstance(address, str) and address[:1] not in ("", "\0") else None
        try:
            sock.bind(address)
        except OSError as exc:
            if not (replace_stale and path is not None and exc.errno == errno.EADDRINUSE and _remove_stale(path, type)):
                raise
            sock.bind(address)
        created = None
        if path is not None:
            st = os.stat(path)
            created = (path, st.st_dev, st.st_ino)
        if backlog is not None:
            sock.listen(backlog)
        bound = sock.getsockname()
        if family != socket.AF_INET:
            bound = peer_address(bound)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise bind_error(exc, f"cannot bind {_label(kind, address)}: {reason}") from exc
    return _Listener(sock, bound, _label(kind, bound), created)


def _remove_stale(path: str, type: socket.SocketKind) -> bool:
    """Remove the socket file at *path* if nothing listens on it; return whether it is gone.

    A file that is not a socket is never touched.  A socket file is stale
    when connecting to it is refused: no process holds a socket bound to it
    any more (its server died without removing it).  One that some process
    still holds -- whatever it is doing with it -- is left alone.
    """
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return False
    except FileNotFoundError:
        return True  # gone meanwhile: bind again
    with socket.socket(socket.AF_UNIX, type) as probe:
        probe.setblocking(False)  # a live listener with a full backlog says EAGAIN, not "wait"
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            pass  # nobody listens: stale
        except FileNotFoundError:
            return True
        except OSError:
            return False  # alive (EAGAIN: a full backlog), or not ours to judge (EPROTOTYPE, EACCES, ...)
        else:
            return False
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return True


def _inet_family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


_port = int_in_range("port", 0, 65535)
_backlog = int_in_range("backlog", 0)


def _path(value: str | os.PathLike[str]) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(value).__name__} {value!r}")
    path = os.fspath(value)
    if not isinstance(path, str):
        raise TypeError(f"path must be a str path, got {type(path).__name__} {path!r}")
    return path


@final
@attrs.frozen
class TCPTransport:
    """A TCP transport: ``tcp(host, port, *, reuse_address=True, reuse_port=False, backlog=SOMAXCONN)``.

    Attributes:
        host: the address to bind (``""`` for every IPv4 interface; an IPv6
            literal such as ``"::1"`` makes an IPv6 socket).
        port: the port; 0 picks a free one (read it from ``bound.port``).
        reuse_address: set ``SO_REUSEADDR`` so a restarted server can bind while
            old connections linger in TIME_WAIT (on by default, unlike
            ``socketserver.TCPServer.allow_reuse_address``).
        reuse_port: set ``SO_REUSEPORT`` (several processes share the port).
        backlog: the ``listen()`` queue length (the classic ``request_queue_size``).

    Raises:
        TypeError, ValueError: an option has the wrong type or value.
    """

    host: str = attrs.field(validator=text("host"))
    port: int = attrs.field(validator=_port)
    reuse_address: bool = attrs.field(default=True, validator=flag("reuse_address"), kw_only=True)
    reuse_port: bool = attrs.field(default=False, validator=flag("reuse_port"), kw_only=True)
    backlog: int = attrs.field(default=socket.SOMAXCONN, validator=_backlog, kw_only=True)

    def listen(self) -> Listener[IPAddress]:
        return _listen(
            "TCP",
            _inet_family(self.host),
            socket.SOCK_STREAM,
            (self.host, self.port),
            reuse_address=self.reuse_address,
            reuse_port=self.reuse_port,
            backlog=self.backlog,
        )

    def acceptor(self) -> Acceptor[StreamConnection[IPAddress]]:
        return StreamAcceptor(convert_address=_inet_family(self.host) == socket.AF_INET6)


@final
@attrs.frozen
class UDPTransport:
    """A UDP transport: ``udp(host, port, *, reuse_address=False, reuse_port=False, max_packet_size=8192)``.

    Each datagram is a request.  *host*, *port*, *reuse_address* and
    *reuse_port* as for :class:`TCPTransport`.  A datagram longer than
    *max_packet_size* bytes (at most 65535) is dropped and logged, never
    handed to the handler cut short (``socketserver`` truncates it silently).
    """

    host: str = attrs.field(validator=text("host"))
    port: int = attrs.field(validator=_port)
    reuse_address: bool = attrs.field(default=False, validator=flag("reuse_address"), kw_only=True)
    reuse_port: bool = attrs.field(default=False, validator=flag("reuse_port"), kw_only=True)
    max_packet_size: int = attrs.field(default=MAX_PACKET_SIZE, validator=_max_packet, kw_only=True)

    def listen(self) -> Listener[IPAddress]:
        return _listen(
            "UDP",
            _inet_family(self.host),
            socket.SOCK_DGRAM,
            (self.host, self.port),
            reuse_address=self.reuse_address,
            reuse_port=self.reuse_port,
        )

    def acceptor(self) -> Acceptor[Datagram[IPAddress]]:
        return DatagramAcceptor(self.max_packet_size, convert_address=_inet_family(self.host) == socket.AF_INET6)


@final
@attrs.frozen
class UnixStreamTransport:
    """A Unix stream transport: ``unix_stream(path, *, backlog=SOMAXCONN, replace_stale=False)``.

    The socket file is made at *path* and removed on close.  *path* must not
    exist, unless *replace_stale* is true and it is a socket file nothing
    listens on any more (a server that crashed left it behind): that file is
    then removed and replaced.  A file some process still holds a socket on
    is never taken over (binding fails with "Address already in use"), and a
    file that is not a socket is never removed.  (Telling a stale file from
    a live one takes a connection attempt: a live server sees one connection
    that closes at once.)  A leading ``"\\0"`` names a socket in Linux's
    abstract namespace, which has no file.
    """

    path: str = attrs.field(converter=_path)
    backlog: int = attrs.field(default=socket.SOMAXCONN, validator=_backlog, kw_only=True)
    replace_stale: bool = attrs.field(default=False, validator=flag("replace_stale"), kw_only=True)

    def listen(self) -> Listener[UnixAddress]:
        return _listen(
            "Unix stream",
            socket.AF_UNIX,
            socket.SOCK_STREAM,
            self.path,
            backlog=self.backlog,
            replace_stale=self.replace_stale,
        )

    def acceptor(self) -> Acceptor[StreamConnection[UnixAddress]]:
        return StreamAcceptor()


@final
@attrs.frozen
class UnixDatagramTransport:
    """A Unix datagram transport: ``unix_datagram(path, *, max_packet_size=8192, replace_stale=False)``.

    *path* and *replace_stale* as for :class:`UnixStreamTransport`;
    *max_packet_size* as for :class:`UDPTransport`.  A sender whose socket is
    not bound to a name has the address ``""`` and cannot be replied to
    (:meth:`~servekit.Datagram.reply` raises).
    """

    path: str = attrs.field(converter=_path)
    max_packet_size: int = attrs.field(default=MAX_PACKET_SIZE, validator=_max_packet, kw_only=True)
    replace_stale: bool = attrs.field(default=False, validator=flag("replace_stale"), kw_only=True)

    def listen(self) -> Listener[UnixAddress]:
        return _listen(
            "Unix datagram", socket.AF_UNIX, socket.SOCK_DGRAM, self.path, replace_stale=self.replace_stale
        )

    def acceptor(self) -> Acceptor[Datagram[UnixAddress]]:
        # An unnamed sender arrives as None from recvfrom(): reported as "".
        return DatagramAcceptor(self.max_packet_size, convert_address=True)


tcp = TCPTransport
"""A TCP transport: ``tcp(host, port, *, reuse_address=True, reuse_port=False, backlog=SOMAXCONN)``."""

udp = UDPTransport
"""A UDP transport: ``udp(host, port, *, reuse_address=False, reuse_port=False, max_packet_size=8192)``."""

unix_stream = UnixStreamTransport
"""A Unix stream transport: ``unix_stream(path, *, backlog=SOMAXCONN, replace_stale=False)``."""

unix_datagram = UnixDatagramTransport
"""A Unix datagram transport: ``unix_datagram(path, *, max_packet_size=8192, replace_stale=False)``."""


def transport_kind(transport: object) -> Literal["stream", "datagram"] | None:
    """``"stream"`` or ``"datagram"`` for servekit's own transports; ``None`` for one it does not know."""
    if isinstance(transport, (TCPTransport, UnixStreamTransport)):
        return "stream"
    if isinstance(transport, (UDPTransport, UnixDatagramTransport)):
        return "datagram"
    return None
