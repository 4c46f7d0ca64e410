"""Handlers: what is done with one request."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeAlias, TypeVar

from ._types import _ReqT_contra

__all__ = ("Handler",)

_T = TypeVar("_T")

Handler: TypeAlias = Callable[[_ReqT_contra], object]
"""A handler: any callable of one positional argument, the request; what it returns is ignored.

Called once per request by a worker of the server's dispatcher: in the
serving thread (``inline``), a thread of its own (``threaded``) or a child
process (``forked``).  When it returns the request is released (a stream
connection is shut down and closed).

Error handling: an :class:`Exception` goes to the server's ``on_error``
(by default logged on the ``servekit.server`` logger) and the server keeps
serving.  ``SystemExit`` and ``KeyboardInterrupt`` stop the server: see
:meth:`servekit.Bound.serve_forever`.

A handler is a plain function: an ``async def`` one is refused (its
coroutine would never run).
"""


def check_handler(_inst: object, _attr: object, handler: _T) -> None:
    """Accept a callable that is not an ``async def`` function (an attrs validator)."""
    if not callable(handler):
        raise TypeError(f"handler must be callable, got {type(handler).__name__} {handler!r}")
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(getattr(handler, "__call__", None)):
        raise TypeError(
            f"handler must be a plain function, got the async function {handler!r}: "
            "servekit calls handlers in a thread or process, where its coroutine would never run"
        )
