"""First-request gates: the loop holds a new connection until its first request is there.

A gated connection costs no worker and no thread while it waits: it is a
source of the serve loop, watched until enough bytes have arrived for the
gate, and closed if they do not arrive within the gate's *timeout*.  The
bytes stay in the socket (the gate only peeks), so the handler's ``rfile``
reads them untouched.  Workers only get connections that have something to
do; silent and trickling clients never reach them.

On TCP the kernel wakes the loop only when the bytes the gate waits for are
there (``SO_RCVLOWAT``).  Unix stream sockets have no such low-water mark for
``poll()``: there a gate lets a connection through at its first byte.
"""

from __future__ import annotations

from typing import final

import attrs

from ._validate import check_int, check_seconds

__all__ = ("AnyByte", "AtLeast", "FirstLine", "any_byte", "at_least", "first_line")


def _timeout(_inst: object, _attr: object, value: float | None) -> None:
    check_seconds("timeout", value, positive=True)


@final
@attrs.frozen
class AnyByte:
    """Let a connection through at its first byte: ``any_byte(*, timeout=10.0)``."""

    timeout: float | None = attrs.field(default=10.0, validator=_timeout, kw_only=True)

    def wanted(self, data: bytes, /) -> int:
        """``0`` when *data* (what has arrived so far) is enough; else how many bytes to wait for."""
        return 0 if data else 1


@final
@attrs.frozen
class FirstLine:
    """Let a connection through when its first line is complete: ``first_line(*, max_length=8192, timeout=10.0)``.

    A first line longer than *max_length* bytes is let through too (the
    handler decides what to do with it).
    """

    max_length: int = attrs.field(
        default=8192, kw_only=True, validator=lambda _i, _a, v: check_int("max_length", v, 1)
    )
    timeout: float | None = attrs.field(default=10.0, validator=_timeout, kw_only=True)

    def wanted(self, data: bytes, /) -> int:
        if b"\n" in data or len(data) >= self.max_length:
            return 0
        return len(data) + 1


@final
@attrs.frozen
class AtLeast:
    """Let a connection through when *size* bytes have arrived: ``at_least(size, *, timeout=10.0)``."""

    size: int = attrs.field(validator=lambda _i, _a, v: check_int("size", v, 1))
    timeout: float | None = attrs.field(default=10.0, validator=_timeout, kw_only=True)

    def wanted(self, data: bytes, /) -> int:
        return 0 if len(data) >= self.size else self.size


any_byte = AnyByte
first_line = FirstLine
at_least = AtLeast
