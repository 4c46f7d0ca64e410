"""The server process: build one registry entry, announce it, serve, report.

    python -m bench.serve NAME tcp|udp HOST POLL_INTERVAL [WORK_MS]

WORK_MS (default 0): how long the handler blocks before each echo, for the
``blocking`` workload (only the entries that list it use it).

Protocol with the harness (bench/procs.py), on standard streams:

1. Bind the server, answer one request from a client in this process, then
   print ``READY host port``.  The time from just before the bind to that
   first answer is the start-up figure.
2. Serve in the main thread until standard input reaches EOF (the harness
   closes it; it also does when the harness dies, so nothing is left behind).
3. Stop the server from the watcher thread and time it: ``stop`` is
   ``shutdown()`` for the socketserver family and servekit, and the figure is
   until ``serve`` has returned in the main thread, whichever is later.
4. Close the server and print ``STATS {json}``.

Each server runs in its own process so its memory (``/proc``) and CPU are its
own, and so a crash or a hang cannot take the harness with it.

The entries that are servekit's command line (``python -m servekit
bench.serve:lines_echo ...``, see ``cli_command`` in bench/servers.py) serve
what this module defines: :data:`lines_echo`, the reactor's ``lines(echo)``
(made on first use, so that importing this module loads no servekit), and
:func:`stream_echo`, the same echo as a blocking handler.  And

    python -m bench.serve --supervised MODULE:HANDLER --bind URL --workers N

is ``python -m servekit`` with the same arguments, except that ``--workers 1``
is served by the pre-fork supervisor too (a parent and one forked worker)
instead of in the process itself: the one-worker baseline of the pre-fork
entries, the same machinery as ``--workers 2`` with only the count changed.
"""

from __future__ import annotations

import importlib
import json
import socket
import sys
import threading
import time
from typing import TYPE_CHECKING

from bench.servers import Proto, Serving, by_name

if TYPE_CHECKING:
    import argparse

    from servekit import StreamConnection


def _echo_line(line: bytes) -> bytes:
    return line


def stream_echo(conn: StreamConnection) -> None:
    """The echo as a blocking handler (``python -m servekit bench.serve:stream_echo``:
    run on the pool of ``--threads`` threads of each worker)."""
    for line in conn.rfile:
        conn.wfile.write(line)


def __getattr__(name: str) -> object:
    """``lines_echo``: ``servekit.framing.lines(echo)``, made on first use."""
    if name == "lines_echo":
        from servekit.framing import lines

        handler = lines(_echo_line)
        globals()[name] = handler
        return handler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _supervised(argv: list[str]) -> int:
    """``python -m servekit`` with *argv*, one worker included served by the supervisor."""
    from servekit import _cli

    serve_workers = _cli._serve_workers

    def serve_here(
        handler: _cli.Handler,
        transports: tuple[_cli.StreamTransport, ...],
        metrics: _cli.StreamTransport | None,
        args: argparse.Namespace,
    ) -> int:
        # (the CLI's own pre-fork path, whatever the count)
        return serve_workers(handler, args.target, transports, metrics, args)

    _cli._serve_here = serve_here
    return _cli.main(argv)


def _first_answer(proto: Proto, address: tuple[str, int]) -> None:
    """One request, as a client: the server answers only once it really serves."""
    payload = b"startup probe\n"
    if proto == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(10.0)
            sock.sendto(payload, address)
            data, _ = sock.recvfrom(4096)
    else:
        with socket.create_connection(address, timeout=10.0) as sock:
            sock.sendall(payload)
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            # A forking server's child inherits this process's copy of our end
            # of the connection, so close() alone would never give it EOF.
            sock.shutdown(socket.SHUT_WR)
    if data != payload:
        raise RuntimeError(f"startup probe: sent {payload!r}, got {data!r}")


def _emit(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class _Watcher(threading.Thread):
    """Probes the server, then waits for EOF on stdin and stops it."""

    def __init__(self, serving: Serving, proto: Proto, started: float) -> None:
        super().__init__(name="bench-watcher", daemon=True)
        self.serving = serving
        self.proto = proto
        self.started = started
        self.startup_s = float("nan")
        self.stop_called = float("nan")
        self.stop_returned = float("nan")
        self.error: str | None = None

    def run(self) -> None:
        try:
            _first_answer(self.proto, self.serving.address)
            self.startup_s = time.perf_counter() - self.started
            host, port = self.serving.address
            _emit(f"READY {host} {port}")
        except Exception as exc:  # reported to the harness, which marks the cell failed
            self.error = f"{type(exc).__name__}: {exc}"
            _emit(f"FAILED {self.error}")
        else:
            # Blocks until the harness closes our stdin (or dies).
            while sys.stdin.buffer.read(65536):
                pass
        self.stop_called = time.perf_counter()
        self.serving.stop()
        self.stop_returned = time.perf_counter()


def main(argv: list[str]) -> int:
    if argv[:1] == ["--supervised"]:
        return _supervised(argv[1:])
    if len(argv) not in (4, 5) or argv[1] not in ("tcp", "udp"):
        print("usage: python -m bench.serve NAME tcp|udp HOST POLL_INTERVAL [WORK_MS]", file=sys.stderr)
        return 2
    name, proto_arg, host, poll = argv[0], argv[1], argv[2], float(argv[3])
    work_s = float(argv[4]) / 1000 if len(argv) == 5 else 0.0
    proto: Proto = "udp" if proto_arg == "udp" else "tcp"
    entry = by_name(name)
    build = entry.build
    if build is None:
        print(f"{name} is not a Python server", file=sys.stderr)
        return 2
    for module in entry.requires:  # imports are not start-up: see the import figure
        loaded = importlib.import_module(module)
        for name in getattr(loaded, "__all__", ()):  # names a package loads lazily (servekit's)
            getattr(loaded, name)
    started = time.perf_counter()
    serving = build(proto, host, poll, work_s)
    watcher = _Watcher(serving, proto, started)
    watcher.start()
    serving.serve()
    served_until = time.perf_counter()
    watcher.join(30.0)
    close_start = time.perf_counter()
    serving.close()
    closed = time.perf_counter()
    stopped = max(served_until, watcher.stop_returned)
    stats = {
        "startup_s": watcher.startup_s,
        # From shutdown() being called until serving has stopped.
        "shutdown_s": stopped - watcher.stop_called,
        # Until the stop call returned: socketserver's and servekit's shutdown()
        # wait for the loop; asyncio's and gevent's stop is only scheduled.
        "shutdown_call_s": watcher.stop_returned - watcher.stop_called,
        "close_s": closed - close_start,
        "error": watcher.error,
    }
    _emit("STATS " + json.dumps(stats))
    return 0 if watcher.error is None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
