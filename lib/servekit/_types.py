"""Shared type aliases and type variables (private; re-exported where public)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias, TypeVar

IPAddress: TypeAlias = tuple[str, int]
"""An IP address as servekit reports it: ``(host, port)``, for IPv4 and IPv6 alike.

An IPv6 address with a scope (a link-local ``fe80::`` address) carries it in
the host, in the standard ``host%scope_id`` form (``"fe80::1%2"``), which
``socket.connect``/``sendto`` and :func:`ipaddress.ip_address` accept, so the
pair is enough to reach the peer again.
"""

UnixAddress: TypeAlias = str | bytes
"""A Unix socket address: a path (``str``), or an abstract name (``bytes``).

A peer whose socket is not bound to a name (the usual client) has the
address ``""``.
"""

Address: TypeAlias = IPAddress | UnixAddress
"""Any address servekit reports, of a server or of a peer."""

_ReqT = TypeVar("_ReqT")
_ReqT_co = TypeVar("_ReqT_co", covariant=True)
_ReqT_contra = TypeVar("_ReqT_contra", contravariant=True)
_AddrT = TypeVar("_AddrT")
_AddrT_contra = TypeVar("_AddrT_contra", contravariant=True)

if TYPE_CHECKING:
    # A bare ``StreamConnection`` (``Datagram``, ``Request``, ...) means one
    # from any address.  typing.TypeVar takes a default only from 3.13 on,
    # and connections.py is loaded by servekit.classic, which must not load
    # typing_extensions: the default exists for the type checker only.
    from typing_extensions import TypeVar as _TypeVar

    _AddrT_co = _TypeVar("_AddrT_co", covariant=True, default=Address)
else:
    _AddrT_co = TypeVar("_AddrT_co", covariant=True)

Predicate: TypeAlias = Callable[[_AddrT_contra], bool]
"""Admission check on a client address: ``True`` admits the request."""
