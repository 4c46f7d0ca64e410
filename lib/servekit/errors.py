"""The few exception types servekit defines; everything else is a builtin."""

from __future__ import annotations

__all__ = ("BindError", "ServerClosedError")


class BindError(OSError):
    """Creating, binding or listening on a server socket failed.

    It is an :class:`OSError` carrying the original ``errno``; its message names
    the transport and the address, for example
    ``cannot bind TCP 127.0.0.1:8080: Address already in use``.  The error
    raised is also an instance of the ``OSError`` subclass the original was
    (``PermissionError`` for ``EACCES``, ...), so existing ``except`` clauses
    keep working.
    """


_bind_errors: dict[type[OSError], type[BindError]] = {}


def bind_error(original: OSError, message: str) -> BindError:
    """A :class:`BindError` with *message* that is also of *original*'s exact type."""
    kind = type(original)
    if issubclass(kind, BindError):
        cls: type[BindError] = kind
    elif kind is OSError:
        cls = BindError
    else:
        cls = _bind_errors.get(kind) or _bind_errors.setdefault(kind, type("BindError", (BindError, kind), {}))
    error = cls(original.errno, message)
    error.__cause__ = original
    return error


class ServerClosedError(RuntimeError):
    """The bound server was closed; it can no longer serve requests."""
