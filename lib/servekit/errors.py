"""The few exception types servekit defines; everything else is a builtin.

Each survives ``pickle`` (a supervisor passes them between processes).
"""

from __future__ import annotations

from typing import Literal, cast

__all__ = ("BindError", "DeadlineExceeded", "ServerClosedError")


class BindError(OSError):
    """Creating, binding or listening on a server socket failed.

    It is an :class:`OSError` carrying the original ``errno``; its message names
    the transport and the address, for example
    ``cannot bind TCP 127.0.0.1:8080: Address already in use``.  The error
    raised is also an instance of the ``OSError`` subclass the original was
    (``PermissionError`` for ``EACCES``, ...), so existing ``except`` clauses
    keep working.  Pickled and loaded again, it is still both.
    """

    def __reduce__(self) -> tuple[object, ...]:
        # OSError's: the class, the arguments, and the instance's __dict__ if it has one.
        reduced = cast("tuple[object, ...]", super().__reduce__())
        cls = type(self)
        kind = cls.__bases__[-1]
        if _bind_errors.get(kind) is not cls:
            return reduced  # a class pickle finds by its name
        # One that bind_error() made has no name to be found by: pickle the
        # name of the OSError subclass it joins, and find or make its class
        # again on loading.  (The name, not the class: protocols 0 to 2 save
        # FileNotFoundError and its kin as Python 2's OSError.)
        return (_load_bind_error, (kind.__module__, kind.__qualname__, reduced[1]), *reduced[2:])


#: The BindError class made for each OSError subclass, by bind_error().
_bind_errors: dict[type[OSError], type[BindError]] = {}


def _bind_error_class(kind: type[OSError]) -> type[BindError]:
    """The :class:`BindError` class that is also a *kind* (made once per *kind*)."""
    if issubclass(kind, BindError):
        return kind
    if kind is OSError:
        return BindError
    return _bind_errors.get(kind) or _bind_errors.setdefault(kind, type("BindError", (BindError, kind), {}))


def _load_bind_error(module: str, qualname: str, args: tuple[object, ...]) -> BindError:
    """Unpickle a :class:`BindError` that is also the OSError subclass named *qualname* in *module*."""
    from importlib import import_module  # (here: loading one is rare, and servekit.classic loads this module)

    kind: object = import_module(module)
    for name in qualname.split("."):
        kind = getattr(kind, name)
    if not (isinstance(kind, type) and issubclass(kind, OSError)):
        raise TypeError(f"cannot load a BindError that is also {module}.{qualname}: {kind!r} is not an OSError subclass")
    return _bind_error_class(kind)(*args)


def bind_error(original: OSError, message: str) -> BindError:
    """A :class:`BindError` with *message* that is also of *original*'s exact type."""
    error = _bind_error_class(type(original))(original.errno, message)
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
