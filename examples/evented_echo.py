"""A line echo served by the reactor: thousands of connections, one thread.

Each line is echoed back (with ``--udp``, each datagram instead).  The
connections are held by the server's reactor on the serve loop, so an idle
one costs no thread; with ``--offload N`` each line is answered by a plain
blocking function on a pool of N threads (``--work-ms`` makes it block that
long), one line of a connection at a time.  A connection that completes no
line for ``--idle-timeout`` seconds -- silent, or trickling a byte at a time
-- is closed, and so is one that sends a line longer than ``--max-line``
bytes.  On SIGTERM (or Ctrl-C) the server drains -- connections waiting for
their next line are closed at once, the others get ``--drain-seconds`` --
prints the drain report and the server's counters as one line of JSON on
stdout, and exits 0.

Run:  python examples/evented_echo.py --host 127.0.0.1 --port 8000
Try:  printf 'hello\\n' | nc 127.0.0.1 8000
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import TypeVar

import _checkout  # noqa: F401  (servekit from this checkout's lib/ when it is not installed)
from servekit import Admission, Bound, Deadlines, Event, IPAddress, Request, format_address, run, server, tcp, udp
from servekit.framing import datagrams, lines

R = TypeVar("R", bound=Request[IPAddress])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--idle-timeout", type=float, default=5.0, help="seconds to complete a line (default 5)")
    parser.add_argument("--udp", action="store_true", help="echo UDP datagrams instead of TCP lines")
    parser.add_argument("--offload", type=int, default=0, metavar="N", help="answer on a pool of N threads")
    parser.add_argument("--work-ms", type=float, default=0.0, help="blocking work per line when offloaded (ms)")
    parser.add_argument("--max-line", type=int, default=65536, help="longest line, in bytes (default 65536)")
    parser.add_argument("--drain-seconds", type=float, default=10.0, help="drain deadline on SIGTERM (default 10)")
    parser.add_argument(
        "--max-connections", type=int, default=100_000, help="connections held at once; beyond, they wait in the backlog"
    )
    args = parser.parse_args(argv)
    if args.offload < 0 or args.idle_timeout <= 0 or args.max_line < 1:
        parser.error("--offload must be >= 0, --idle-timeout > 0 and --max-line >= 1")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    work = args.work_ms / 1000

    def echo(message: bytes) -> bytes:
        return message

    def blocking_echo(message: bytes) -> bytes:
        if work:
            time.sleep(work)  # stands for a blocking call: a database query, a file read
        return message

    answer = blocking_echo if args.offload else echo

    # Lifecycle events, counted by kind (Counter.update of one name is atomic).
    seen: collections.Counter[str] = collections.Counter()

    def on_event(event: Event) -> None:
        seen.update((type(event).__name__,))

    admission = Admission(max_connections=args.max_connections)
    if args.udp:
        return serve(server(udp(args.host, args.port), datagrams(answer, offload=args.offload),
                            admission=admission, on_event=on_event).bind(), args.drain_seconds, seen)  # fmt: skip
    return serve(
        server(
            tcp(args.host, args.port),
            lines(answer, max_length=args.max_line, offload=args.offload),
            # Each line must be complete within the idle timeout of the connection's start or last answer.
            deadlines=Deadlines(request=args.idle_timeout),
            admission=admission,
            on_event=on_event,
        ).bind(),
        args.drain_seconds,
        seen,
    )


def serve(bound: Bound[R, IPAddress], drain_seconds: float, seen: collections.Counter[str]) -> int:
    """Serve until SIGTERM, drain, print the report; the exit status."""
    print(f"listening on {format_address(bound.address)}", file=sys.stderr, flush=True)
    report = run(bound, drain_seconds=drain_seconds)
    print(json.dumps({**report.summary(), "stats": bound.stats()._asdict(), "events": dict(seen)}), flush=True)
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
