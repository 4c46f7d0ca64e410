"""Transports: how the listening socket is made (family, type, options, bind, listen) or adopted."""

from __future__ import annotations

import errno
import os
import socket
import stat
from typing import Final, Generic, Literal, TypeAlias, cast, final, overload

import attrs

from ._types import Address, IPAddress, UnixAddress, _AddrT, _ReqT
from ._validate import check_text, flag, int_in_range, text
from .acceptors import check_max_packet_size as _max_packet
from .abc import Acceptor, Listener, Transport
from .acceptors import MAX_PACKET_SIZE, DatagramAcceptor, StreamAcceptor, peer_address
from .connections import Datagram, StreamConnection
from .errors import bind_error

__all__ = (
    "AdoptKind",
    "AdoptedTransport",
    "Listener",
    "format_address",
    "TCPTransport",
    "Transport",
    "UDPTransport",
    "UnixDatagramTransport",
    "UnixStreamTransport",
    "adopt",
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


# -- adopting a socket made elsewhere ------------------------------------------

AdoptKind: TypeAlias = Literal["tcp", "unix_stream", "stream", "udp", "unix_datagram", "datagram"]
"""What :func:`adopt` expects the socket to be; the kind decides the request and address types."""

_IP: Final = (socket.AF_INET, socket.AF_INET6)

#: Each kind's socket families and type.
_KINDS: Final[dict[str, tuple[tuple[socket.AddressFamily, ...], socket.SocketKind]]] = {
    "tcp": (_IP, socket.SOCK_STREAM),
    "unix_stream": ((socket.AF_UNIX,), socket.SOCK_STREAM),
    "stream": ((*_IP, socket.AF_UNIX), socket.SOCK_STREAM),
    "udp": (_IP, socket.SOCK_DGRAM),
    "unix_datagram": ((socket.AF_UNIX,), socket.SOCK_DGRAM),
    "datagram": ((*_IP, socket.AF_UNIX), socket.SOCK_DGRAM),
}

#: A tuple, not a set: looking a bad kind up must not fail on an unhashable one.
_DATAGRAM_KINDS: Final = tuple(kind for kind, (_, type) in _KINDS.items() if type == socket.SOCK_DGRAM)

#: The names servekit's messages give the sockets it serves.
_LABELS: Final[dict[tuple[int, int], str]] = {
    (socket.AF_INET, socket.SOCK_STREAM): "TCP",
    (socket.AF_INET6, socket.SOCK_STREAM): "TCP",
    (socket.AF_UNIX, socket.SOCK_STREAM): "Unix stream",
    (socket.AF_INET, socket.SOCK_DGRAM): "UDP",
    (socket.AF_INET6, socket.SOCK_DGRAM): "UDP",
    (socket.AF_UNIX, socket.SOCK_DGRAM): "Unix datagram",
}


def _source_fd(source: int | socket.socket) -> int:
    """The fd number of an :func:`adopt` source: an fd as it is, a socket's ``fileno()``."""
    if isinstance(source, socket.socket):
        fd = source.fileno()
        if fd < 0:
            raise ValueError(f"source socket is closed: {source!r}")
        return fd
    if isinstance(source, bool) or not isinstance(source, int):
        raise TypeError(
            f"source must be a file descriptor (an int) or a socket.socket, got {type(source).__name__} {source!r}"
        )
    if source < 0:
        raise ValueError(f"source must be a file descriptor >= 0, got {source!r}")
    return source


def _check_kind(_inst: object, _attr: object, kind: str) -> None:
    check_text("kind", kind)
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, _KINDS))}, got {kind!r}")


def _packet_size_default(transport: AdoptedTransport[_ReqT, _AddrT]) -> int | None:
    return MAX_PACKET_SIZE if transport.kind in _DATAGRAM_KINDS else None


def _check_packet_size(transport: AdoptedTransport[_ReqT, _AddrT], attr: object, value: int | None) -> None:
    if transport.kind in _DATAGRAM_KINDS:
        _max_packet(transport, attr, cast(int, value))
    elif value is not None:
        raise ValueError(f"max_packet_size is for datagram kinds only, got {value!r} with kind {transport.kind!r}")


def _describe(family: socket.AddressFamily | int, type: socket.SocketKind | int) -> str:
    """What a socket is, for messages: ``"a UDP socket (AF_INET, SOCK_DGRAM)"``."""
    names = f"{getattr(family, 'name', family)}, {getattr(type, 'name', type)}"
    label = _LABELS.get((family, type))
    return f"a {label} socket ({names})" if label else f"a socket of another sort ({names})"


def _misfit(sock: socket.socket, kind: str, address: Address) -> str | None:
    """Why *sock*, at *address*, cannot serve as *kind*; ``None`` if it can.  May raise OSError."""
    families, wanted_type = _KINDS[kind]
    what = _describe(sock.family, sock.type)
    if sock.family not in families or sock.type != wanted_type:
        wanted = " or ".join(family.name for family in families)
        return f"it is {what}; {kind!r} takes {wanted} with {wanted_type.name}"
    if wanted_type == socket.SOCK_STREAM:
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return f"it is {what} at {format_address(address)} that is not listening (call listen() on it first)"
    elif address in ("", b"") or (isinstance(address, tuple) and address[1] == 0):
        return f"it is {what} that is not bound to an address (bind() it first)"
    return None


def _adopt(fd: int, kind: str) -> _Listener[Address]:
    """A listener on a duplicate of *fd*, checked against *kind*: the one place that adopts.

    A bad fd is a :class:`~servekit.BindError`, a socket of the wrong sort a
    :class:`ValueError`; either way the duplicate is closed and *fd* left as it was.
    """
    sock = None
    try:
        duplicate = os.dup(fd)  # non-inheritable, as every fd Python makes
        try:
            sock = socket.socket(fileno=duplicate)  # ENOTSOCK if it is no socket
        except BaseException:
            os.close(duplicate)
            raise
        address = cast(Address, peer_address(sock.getsockname()))
        problem = _misfit(sock, kind, address)
    except BaseException as exc:
        if sock is not None:
            sock.close()
        if isinstance(exc, OSError):
            raise bind_error(exc, f"cannot adopt fd {fd}: {exc.strerror or exc}") from exc
        raise
    if problem is not None:
        sock.close()
        raise ValueError(f"cannot adopt fd {fd} as {kind!r}: {problem}")
    return _Listener(sock, address, f"{_label(_LABELS[sock.family, sock.type], address)} (fd {fd})")


@final
@attrs.frozen
class AdoptedTransport(Generic[_ReqT, _AddrT]):
    """A transport over a listening socket made elsewhere; made by :func:`adopt`, which see.

    Attributes:
        fd: the file descriptor adopted (a socket source's ``fileno()``).  It
            stays the caller's: servekit works on a duplicate of it.
        kind: what the socket must be (:data:`AdoptKind`); it decides the
            acceptor, and, through :func:`adopt`, the type parameters.
            (``attrs.evolve`` to another kind keeps the old type parameters:
            call :func:`adopt` again instead.)
        max_packet_size: the datagram kinds' largest datagram, as for
            :class:`UDPTransport`; ``None`` for the stream kinds.

    Raises:
        TypeError, ValueError: the source is neither an fd (an ``int >= 0``)
            nor an open socket, the kind is unknown, or *max_packet_size* is
            out of range or given to a stream kind.
    """

    fd: int = attrs.field(converter=_source_fd)
    kind: AdoptKind = attrs.field(validator=_check_kind)
    max_packet_size: int | None = attrs.field(
        default=attrs.Factory(_packet_size_default, takes_self=True), validator=_check_packet_size, kw_only=True
    )

    def listen(self) -> Listener[_AddrT]:
        """A listener on a duplicate of :attr:`fd`, once it is checked to fit :attr:`kind`.

        Raises:
            servekit.BindError: :attr:`fd` is not open, or is not a socket.
            ValueError: the socket is of the wrong family or type for the
                kind, a stream socket is not listening, or a datagram socket
                is not bound.
        """
        # The address type is the one adopt() promised for the kind, which the check has just made true.
        return cast("Listener[_AddrT]", _adopt(self.fd, self.kind))

    def acceptor(self) -> Acceptor[_ReqT]:
        # The family is known only once the socket is looked at: convert every address.
        if self.max_packet_size is None:
            return cast("Acceptor[_ReqT]", StreamAcceptor[Address](convert_address=True))
        return cast("Acceptor[_ReqT]", DatagramAcceptor[Address](self.max_packet_size, convert_address=True))


# What adopt() returns, by kind (the overloads below), and for a kind known only at run time.
_Adopted: TypeAlias = (
    AdoptedTransport[StreamConnection[IPAddress], IPAddress]
    | AdoptedTransport[StreamConnection[UnixAddress], UnixAddress]
    | AdoptedTransport[StreamConnection[Address], Address]
    | AdoptedTransport[Datagram[IPAddress], IPAddress]
    | AdoptedTransport[Datagram[UnixAddress], UnixAddress]
    | AdoptedTransport[Datagram[Address], Address]
    | AdoptedTransport[StreamConnection[Address] | Datagram[Address], Address]
)


@overload
def adopt(
    source: int | socket.socket, kind: Literal["tcp"]
) -> AdoptedTransport[StreamConnection[IPAddress], IPAddress]: ...
@overload
def adopt(
    source: int | socket.socket, kind: Literal["unix_stream"]
) -> AdoptedTransport[StreamConnection[UnixAddress], UnixAddress]: ...
@overload
def adopt(
    source: int | socket.socket, kind: Literal["stream"]
) -> AdoptedTransport[StreamConnection[Address], Address]: ...
@overload
def adopt(
    source: int | socket.socket, kind: Literal["udp"], *, max_packet_size: int = ...
) -> AdoptedTransport[Datagram[IPAddress], IPAddress]: ...
@overload
def adopt(
    source: int | socket.socket, kind: Literal["unix_datagram"], *, max_packet_size: int = ...
) -> AdoptedTransport[Datagram[UnixAddress], UnixAddress]: ...
@overload
def adopt(
    source: int | socket.socket, kind: Literal["datagram"], *, max_packet_size: int = ...
) -> AdoptedTransport[Datagram[Address], Address]: ...
# A kind known only at run time.  (No max_packet_size here: it would let a literal stream kind take one.)
@overload
def adopt(
    source: int | socket.socket, kind: AdoptKind
) -> AdoptedTransport[StreamConnection[Address] | Datagram[Address], Address]: ...
def adopt(
    source: int | socket.socket, kind: AdoptKind, *, max_packet_size: int | None = None
) -> _Adopted:
    """A transport over a listening socket made elsewhere: ``adopt(source, kind, *, max_packet_size=8192)``.

    For a socket servekit did not make: one passed by systemd's socket
    activation (``LISTEN_FDS``, from fd 3 on), inherited from a supervisor
    that listens once for its workers, or made by the caller.  *source* is
    the fd number or the socket itself; *kind* says what it must be and
    decides the request and address types:

    - ``"tcp"``: an AF_INET or AF_INET6 SOCK_STREAM socket, requests
      ``StreamConnection[IPAddress]``;
    - ``"unix_stream"``: AF_UNIX SOCK_STREAM, ``StreamConnection[UnixAddress]``;
    - ``"stream"``: either, ``StreamConnection[Address]``;
    - ``"udp"``, ``"unix_datagram"``, ``"datagram"``: the same with
      SOCK_DGRAM, requests ``Datagram[...]`` of the same address types.

    *max_packet_size*, for the datagram kinds only, as for :class:`UDPTransport`.
    Making the transport does no I/O.  Each ``bind()`` checks the socket: its
    family and type must fit the kind, a stream socket must be listening
    (``SO_ACCEPTCONN``), a datagram socket bound to an address.  The server
    reports the socket's own address, and names itself after the fd, as in
    ``TCP 127.0.0.1:8000 (fd 3)``.

    The fd stays the caller's (or systemd's).  The server works on a
    duplicate (``os.dup``, not inherited by programs it runs) and closing it
    closes only that duplicate: the original stays open and goes on
    listening -- connections that arrive later wait in its backlog for
    whoever holds it -- and servekit never binds it, calls ``listen()`` on it
    or removes a Unix socket file it is bound to.  So one transport may be
    bound again and again.  For a socket source only its fd number is kept:
    keep the socket open (and referenced: a socket object that is
    garbage-collected closes its fd) while the transport is in use.

    A duplicate shares its file status flags with the original: the server
    makes its listener non-blocking (``O_NONBLOCK``), and so the original
    becomes non-blocking too, and stays so after the server is closed.  Set
    it back with ``sock.setblocking(True)`` (``os.set_blocking(fd, True)``)
    if your own code accepts on it blocking.

    Example::

        # systemd: the first socket of a unit with ListenStream=8000
        server(adopt(3, "tcp"), handle).bind()
        # a socket of your own, TCP or Unix
        sock = socket.create_server(("127.0.0.1", 8000))
        server(adopt(sock, "stream"), handle).bind()

    Raises:
        TypeError, ValueError: bad arguments, at once (see
            :class:`AdoptedTransport`).
        servekit.BindError: at ``bind()``: the fd is not open, or is not a
            socket (an :class:`OSError` with its ``errno``, naming the fd).
        ValueError: at ``bind()``: the socket does not fit the kind; the
            message names the fd, the kind and what the socket is.
    """
    if max_packet_size is None:  # the kind's default
        return AdoptedTransport(source, kind)
    return AdoptedTransport(source, kind, max_packet_size=max_packet_size)


def transport_kind(transport: object) -> Literal["stream", "datagram"] | None:
    """Whether *transport* yields stream connections or datagrams; ``None`` for one servekit does not know.

    Internal: lets a server description refuse to mix stream and datagram
    listeners before anything is bound.  A user's own transport is ``None``:
    only binding it tells.
    """
    if isinstance(transport, (TCPTransport, UnixStreamTransport)):
        return "stream"
    if isinstance(transport, (UDPTransport, UnixDatagramTransport)):
        return "datagram"
    if isinstance(transport, AdoptedTransport):
        return "datagram" if transport.kind in _DATAGRAM_KINDS else "stream"
    inner = getattr(transport, "inner", None)  # (a wrapper: TLS)
    if inner is not None and transport_kind(inner) == "stream":
        return "stream"
    return None
