"""Shared type aliases and type variables (private; re-exported where public)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias, TypeVar

InetAddress: TypeAlias = tuple[str, int]
"""An IPv4 ``(host, port)`` pair."""

Inet6Address: TypeAlias = tuple[str, int, int, int]
"""An IPv6 ``(host, port, flowinfo, scope_id)`` tuple, as ``getsockname()`` gives it."""

Address: TypeAlias = InetAddress | Inet6Address | str | bytes
"""Any socket address servekit reports: IP tuples, Unix paths (``str``), abstract
Unix names (``bytes``)."""

Predicate: TypeAlias = Callable[[Address], bool]
"""Admission check on a client address: ``True`` admits the request."""

_ReqT = TypeVar("_ReqT")
_ReqT_co = TypeVar("_ReqT_co", covariant=True)
_ReqT_contra = TypeVar("_ReqT_contra", contravariant=True)
