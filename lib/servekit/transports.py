"""Transports: how the listening socket is made (family, type, options, bind, listen)."""

from __future__ import annotations

import os
import socket
import stat
from typing import Protocol, final

import attrs

from ._types import Address, _ReqT
from ._validate import flag, int_in_range, text
from .acceptors import Acceptor, DatagramAcceptor, StreamAcceptor
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


class Listener(Protocol):
    """**Protocol:** a bound (and, for streams, listening) server socket.

    Made by :meth:`Transport.listen`; owned and closed by the bound server.
    """

    @property
    def socket(self) -> socket.socket:
        """The server socket."""
        ...

    @property
    def address(self) -> Address:
        """The address it is bound to (an ephemeral port already resolved)."""
        ...

    @property
    def name(self) -> str:
        """A label for messages and reprs, such as ``TCP 127.0.0.1:8080``."""
        ...

    def close(self) -> None:
        """Close the socket and remove what binding created (a Unix socket file).  Idempotent."""
        ...


class Transport(Protocol[_ReqT]):
    """**Protocol:** describes a listening socket and the kind of request it yields.

    A transport is a value: :meth:`listen` may be called any number of times
    (each :meth:`Server.bind <servekit.Server.bind>` calls it once).
    """

    def listen(self) -> Listener:
        """Create, bind and (for streams) listen.  Raises :class:`~servekit.BindError`."""
        ...

    def acceptor(self) -> Acceptor[_ReqT]:
        """The acceptor that takes this transport's requests off its socket."""
        ...


@final
@attrs.define
class _Listener:
    socket: socket.socket
    address: Address
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
) -> _Listener:
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
        sock.bind(address)
        created = None
        if family == socket.AF_UNIX and isinstance(address, str) and address and not address.startswith("\0"):
            st = os.stat(address)
            created = (address, st.st_dev, st.st_ino)
        if backlog is not None:
            sock.listen(backlog)
        bound: Address = sock.getsockname()
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise bind_error(exc, f"cannot bind {_label(kind, address)}: {reason}") from exc
    return _Listener(sock, bound, _label(kind, bound), created)


def _inet_family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


_port = int_in_range("port", 0, 65535)
_backlog = int_in_range("backlog", 0)
_max_packet = int_in_range("max_packet_size", 1, 65535)


def _path(value: str | os.PathLike[str]) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(value).__name__} {value!r}")
    path = os.fspath(value)
    if not isinstance(path, str):
        raise TypeError(f"path must be a str path, got {type(path).__name__} {path!r}")
    return path


@final
@attrs.frozen(kw_only=True)
class TCPTransport:
    """A TCP listener on *host* (IPv6 when it contains ``:``) and *port* (0: any free port)."""

    host: str = attrs.field(validator=text("host"))
    port: int = attrs.field(validator=_port)
    reuse_address: bool = attrs.field(default=True, validator=flag("reuse_address"))
    reuse_port: bool = attrs.field(default=False, validator=flag("reuse_port"))
    backlog: int = attrs.field(default=socket.SOMAXCONN, validator=_backlog)

    def listen(self) -> Listener:
        return _listen(
            "TCP",
            _inet_family(self.host),
            socket.SOCK_STREAM,
            (self.host, self.port),
            reuse_address=self.reuse_address,
            reuse_port=self.reuse_port,
            backlog=self.backlog,
        )

    def acceptor(self) -> Acceptor[StreamConnection]:
        return StreamAcceptor()


@final
@attrs.frozen(kw_only=True)
class UDPTransport:
    """A UDP socket on *host* and *port*; each datagram is a request."""

    host: str = attrs.field(validator=text("host"))
    port: int = attrs.field(validator=_port)
    reuse_address: bool = attrs.field(default=False, validator=flag("reuse_address"))
    reuse_port: bool = attrs.field(default=False, validator=flag("reuse_port"))
    max_packet_size: int = attrs.field(default=8192, validator=_max_packet)

    def listen(self) -> Listener:
        return _listen(
            "UDP",
            _inet_family(self.host),
            socket.SOCK_DGRAM,
            (self.host, self.port),
            reuse_address=self.reuse_address,
            reuse_port=self.reuse_port,
        )

    def acceptor(self) -> Acceptor[Datagram]:
        return DatagramAcceptor(self.max_packet_size)


@final
@attrs.frozen(kw_only=True)
class UnixStreamTransport:
    """A Unix stream listener at *path*; the socket file is removed on close."""

    path: str = attrs.field(converter=_path)
    backlog: int = attrs.field(default=socket.SOMAXCONN, validator=_backlog)

    def listen(self) -> Listener:
        return _listen("Unix stream", socket.AF_UNIX, socket.SOCK_STREAM, self.path, backlog=self.backlog)

    def acceptor(self) -> Acceptor[StreamConnection]:
        return StreamAcceptor()


@final
@attrs.frozen(kw_only=True)
class UnixDatagramTransport:
    """A Unix datagram socket at *path*; the socket file is removed on close."""

    path: str = attrs.field(converter=_path)
    max_packet_size: int = attrs.field(default=8192, validator=_max_packet)

    def listen(self) -> Listener:
        return _listen("Unix datagram", socket.AF_UNIX, socket.SOCK_DGRAM, self.path)

    def acceptor(self) -> Acceptor[Datagram]:
        return DatagramAcceptor(self.max_packet_size)


def tcp(
    host: str,
    port: int,
    *,
    reuse_address: bool = True,
    reuse_port: bool = False,
    backlog: int = socket.SOMAXCONN,
) -> TCPTransport:
    """A TCP transport.

    Args:
        host: the address to bind (``""`` for every IPv4 interface; an IPv6
            literal such as ``"::1"`` makes an IPv6 socket).
        port: the port; 0 picks a free one (read it from ``bound.address``).
        reuse_address: set ``SO_REUSEADDR`` so a restarted server can bind while
            old connections linger in TIME_WAIT (on by default, unlike
            ``socketserver.TCPServer.allow_reuse_address``).
        reuse_port: set ``SO_REUSEPORT`` (several processes share the port).
        backlog: the ``listen()`` queue length (the classic ``request_queue_size``).

    Raises:
        TypeError, ValueError: an option has the wrong type or value.
    """
    return TCPTransport(host=host, port=port, reuse_address=reuse_address, reuse_port=reuse_port, backlog=backlog)


def udp(
    host: str,
    port: int,
    *,
    reuse_address: bool = False,
    reuse_port: bool = False,
    max_packet_size: int = 8192,
) -> UDPTransport:
    """A UDP transport; datagrams longer than *max_packet_size* are truncated."""
    return UDPTransport(
        host=host, port=port, reuse_address=reuse_address, reuse_port=reuse_port, max_packet_size=max_packet_size
    )


def unix_stream(path: str | os.PathLike[str], *, backlog: int = socket.SOMAXCONN) -> UnixStreamTransport:
    """A Unix stream transport bound at *path* (which must not exist yet)."""
    return UnixStreamTransport(path=path, backlog=backlog)


def unix_datagram(path: str | os.PathLike[str], *, max_packet_size: int = 8192) -> UnixDatagramTransport:
    """A Unix datagram transport bound at *path* (which must not exist yet)."""
    return UnixDatagramTransport(path=path, max_packet_size=max_packet_size)
