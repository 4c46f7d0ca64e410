"""Handlers: what is done with one request."""

from __future__ import annotations

from typing import Protocol

from ._types import _ReqT_contra

__all__ = ("Handler",)


class Handler(Protocol[_ReqT_contra]):
    """**Protocol:** handles one request; any callable of one positional argument fits.

    Called once per request by a worker of the server's dispatcher: in the
    serving thread (``inline``), a thread of its own (``threaded``) or a child
    process (``forked``).  When it returns the request is released (a stream
    connection is shut down and closed).

    Error handling: an :class:`Exception` goes to the server's ``on_error``
    (by default logged on the ``servekit.server`` logger) and the server keeps
    serving.  ``SystemExit`` and ``KeyboardInterrupt`` stop the server: see
    :meth:`servekit.Bound.serve_forever`.
    """

    def __call__(self, request: _ReqT_contra, /) -> object: ...
