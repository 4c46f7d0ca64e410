"""The few exception types servekit defines; everything else is a builtin."""

from __future__ import annotations

__all__ = ("BindError", "ServerClosedError")


class BindError(OSError):
    """Creating, binding or listening on a server socket failed.

    It is an :class:`OSError` carrying the original ``errno``; its message names
    the transport and the address, for example
    ``cannot bind TCP 127.0.0.1:8080: Address already in use``.
    """


class ServerClosedError(RuntimeError):
    """The bound server was closed; it can no longer serve requests."""
