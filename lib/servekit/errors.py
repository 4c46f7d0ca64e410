"""The few exception types servekit defines; everything else is a builtin."""

from __future__ import annotations

from typing import Literal

__all__ = ("BindError", "DeadlineExceeded", "ServerClosedError")


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


#: The four deadlines of a stream connection.
_DeadlineName = Literal["first_byte", "idle", "request", "lifetime"]

_WHAT = {
    "first_byte": "no first byte within {} s",
    "idle": "a single read or write waited {} s",
    "request": "no complete request within {} s",
    "lifetime": "the connection lasted {} s",
}


class DeadlineExceeded(TimeoutError):
    """A deadline of a stream connection passed; the connection is no longer usable.

    :class:`~servekit.deadlines.Deadlines` describes the deadlines.

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
