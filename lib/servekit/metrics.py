"""Metrics: a server's counters in Prometheus' text format, served over HTTP on a listener of their own.

:func:`metrics_server` describes a small server that answers ``GET
/metrics`` (HTTP/1.0 and 1.1) with what a callable of yours returns --
usually :meth:`Bound.stats <servekit.Bound.stats>` -- rendered by
:meth:`Stats.prometheus <servekit.events.Stats.prometheus>`::

    bound = server(tcp("0.0.0.0", 8000), handle).bind()
    metrics = metrics_server(tcp("127.0.0.1", 9100), bound.stats).bind()

:func:`combined` adds the counters of several servers (the workers of a
pre-forked server) into one :class:`~servekit.events.Stats`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final, TypeVar

from .abc import Transport
from .connections import StreamConnection
from .dispatchers import threaded
from .events import Stats
from .servers import Server, server

__all__ = ("combined", "metrics_server")

_AddrT = TypeVar("_AddrT")

#: The content type of Prometheus' text exposition format.
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
#: The longest request head read, in bytes: a scraper's is a few hundred.
MAX_HEAD: Final = 8192
#: Seconds a scraper has to send its request.
REQUEST_TIMEOUT: Final = 5.0


def combined(stats: Iterable[Stats]) -> Stats:
    """The counters of several servers added up: counts and sums added, per-reason mappings merged."""
    items = list(stats)

    def added(name: str) -> int:
        return sum(int(getattr(each, name)) for each in items)

    def merged(name: str) -> dict[str, int]:
        total: dict[str, int] = {}
        for each in items:
            mapping: Mapping[str, int] = getattr(each, name)
            for key, count in mapping.items():
                total[key] = total.get(key, 0) + count
        return total

    return Stats(
        connections_accepted_total=added("connections_accepted_total"),
        connections_rejected_total=added("connections_rejected_total"),
        rejected_by_reason=merged("rejected_by_reason"),
        connections_active=added("connections_active"),
        connections_closed_total=added("connections_closed_total"),
        connections_gate_closed_total=added("connections_gate_closed_total"),
        connections_cut_total=added("connections_cut_total"),
        accept_errors_total=added("accept_errors_total"),
        handler_duration_seconds_count=added("handler_duration_seconds_count"),
        handler_duration_seconds_sum=sum(each.handler_duration_seconds_sum for each in items),
        handler_errors_total=added("handler_errors_total"),
        stage_errors_total=added("stage_errors_total"),
        stage_errors_by_stage=merged("stage_errors_by_stage"),
        closed_by_reason=merged("closed_by_reason"),
    )


def _respond(
    conn: StreamConnection[object], status: str, body: bytes, content_type: str, head_only: bool = False
) -> None:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    conn.wfile.write(head.encode("latin-1") + (b"" if head_only else body))


def metrics_server(
    transport: Transport[StreamConnection[_AddrT], _AddrT], stats: Callable[[], Stats], *, prefix: str = "servekit_"
) -> Server[StreamConnection[_AddrT], _AddrT]:
    """A server that answers ``GET /metrics`` with ``stats().prometheus(prefix)``, one request per connection.

    Anything else gets ``404`` (another path), ``405`` (another method) or
    ``400`` (not an HTTP request); a head longer than 8 KiB or slower than
    5 s is dropped.  Each request runs in a thread of its own, so a slow
    scraper delays nobody.
    """

    def answer(conn: StreamConnection[object]) -> None:
        conn.socket.settimeout(REQUEST_TIMEOUT)
        request_line = conn.rfile.readline(MAX_HEAD)
        read = len(request_line)
        while read < MAX_HEAD:  # the rest of the head, up to its blank line
            line = conn.rfile.readline(MAX_HEAD - read)
            read += len(line)
            if line in (b"\r\n", b"\n", b""):
                break
        parts = request_line.split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            _respond(conn, "400 Bad Request", b"not an HTTP/1.x request\n", "text/plain")
        elif parts[0] not in (b"GET", b"HEAD"):
            _respond(conn, "405 Method Not Allowed", b"GET /metrics\n", "text/plain")
        elif parts[1].split(b"?")[0] != b"/metrics":
            _respond(conn, "404 Not Found", b"GET /metrics\n", "text/plain")
        else:
            _respond(conn, "200 OK", stats().prometheus(prefix).encode(), CONTENT_TYPE, head_only=parts[0] == b"HEAD")

    return server(transport, answer, dispatcher=threaded(daemon=True))
