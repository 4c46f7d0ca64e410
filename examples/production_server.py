"""A line-protocol server composed the way servekit recommends for production.

Each line is echoed back; ``SLEEP <seconds>`` sleeps that long, then answers
``SLEPT``.  A connection that completes no line for ``--idle-timeout``
seconds -- silent or trickling a byte at a time -- is closed.  On SIGTERM (or
Ctrl-C) the server drains for at most ``--drain-seconds``, prints the drain
report as one line of JSON on stdout and exits 0.  The report also carries
the server's counters (``"stats"``) and how many lifecycle events of each
kind it saw (``"events"``).

Run:  python examples/production_server.py --host 127.0.0.1 --port 8000
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
import time
from collections.abc import Sequence

import _checkout  # noqa: F401  (servekit from this checkout's lib/ when it is not installed)
from servekit import (
    Admission,
    Bound,
    Deadlines,
    DeadlineExceeded,
    Event,
    IPAddress,
    StreamConnection,
    first_line,
    format_address,
    pooled,
    run,
    server,
    tcp,
)

Conn = StreamConnection[IPAddress]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--idle-timeout", type=float, default=5.0, help="seconds to complete a line (default 5)")
    parser.add_argument("--drain-seconds", type=float, default=10.0, help="drain deadline on SIGTERM (default 10)")
    parser.add_argument("--workers", type=int, default=64, help="worker threads (default 64)")
    parser.add_argument(
        "--max-connections", type=int, default=10_000, help="connections held at once, beyond: wait in the backlog"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

    def handle(conn: Conn) -> None:
        for line in conn.rfile:
            if line.startswith(b"SLEEP "):
                time.sleep(float(line.split()[1]))
                conn.wfile.write(b"SLEPT\n")
            else:
                conn.wfile.write(line)
            if bound.draining.is_set():
                return  # one answer more, then the connection ends cleanly

    # Lifecycle events, counted by kind (Counter.update of one name is atomic).
    seen: collections.Counter[str] = collections.Counter()

    def on_event(event: Event) -> None:
        seen.update((type(event).__name__,))

    def on_error(conn: Conn, exc: Exception) -> None:
        if not isinstance(exc, (DeadlineExceeded, ConnectionError)):  # a slow or vanished client is no error
            logging.getLogger("production_server").error("request from %r failed", conn.client_address, exc_info=exc)

    spec = server(
        tcp(args.host, args.port),
        handle,
        # A bounded pool: when it is full, clients wait in the kernel's backlog.
        # block_on_close=False: after the drain deadline nobody waits for cut handlers.
        dispatcher=pooled(workers=args.workers, queue=args.workers * 4, block_on_close=False),
        # Silent and trickling clients wait on the loop, in no worker, until their first line.
        gate=first_line(timeout=args.idle_timeout),
        # Then each line must be complete within the idle timeout of the last answer.
        deadlines=Deadlines(request=args.idle_timeout),
        # At most this many connections at once (at the gate and in the pool).
        admission=Admission(max_connections=args.max_connections),
        on_error=on_error,
        on_event=on_event,
    )
    bound: Bound[Conn, IPAddress] = spec.bind()

    def ready(served: Bound[Conn, IPAddress]) -> None:
        print(f"listening on {format_address(served.address)}", file=sys.stderr, flush=True)

    report = run(bound, drain_seconds=args.drain_seconds, ready=ready)
    print(json.dumps({**report.summary(), "stats": bound.stats()._asdict(), "events": dict(seen)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
