"""Handlers: what is done with one request (the type is :data:`servekit.abc.Handler`)."""

from __future__ import annotations

import inspect
from typing import TypeVar

from .abc import Handler

__all__ = ("Handler",)

_T = TypeVar("_T")

def check_handler(_inst: object, _attr: object, handler: _T) -> None:
    """Accept a callable that is not an ``async def`` function (an attrs validator)."""
    if not callable(handler):
        raise TypeError(f"handler must be callable, got {type(handler).__name__} {handler!r}")
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(getattr(handler, "__call__", None)):
        raise TypeError(
            f"handler must be a plain function, got the async function {handler!r}: "
            "servekit calls handlers in a thread or process, where its coroutine would never run"
        )
