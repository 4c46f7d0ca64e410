"""``python -m bench.forkcost``: what one request costs a fork-per-request server, parent and child.

A ``ForkingTCPServer`` echo (``StreamRequestHandler``; ``--kind udp``: a
``ForkingUDPServer`` one; ``--kind udp-bare``: a ``ForkingUDPServer`` whose
``BaseRequestHandler`` answers on the socket, as the bench's does) of the standard library and of
``servekit.classic`` runs pinned to CPU 0 (when there are two CPUs); one
client on another CPU makes its requests one after another.  The
server reports its own ``getrusage`` and its reaped children's at two points
(``SIGUSR1``), before and after the measured requests, so what is printed per
request is exact CPU time and page-fault counts of the parent and of its
children, not a rate::

    per request = (after - before) / requests

Every variant's server runs from the start, and in a round they take turns
request by request (each as often first, last and after each other), so all are
measured over the same seconds: the machine's drift (its CPU time per
request moves by a quarter over a minute here) moves the figures of a round
together.  The summary gives each variant's medians over the rounds and its
ratio to the standard library: the median of the rounds' own ratios, with
each round's.  ``--starts`` starts fresh server processes that many times
(by default once a round): where a process places its objects moves its
page faults, and sixteen starts of the same two trees gave ratios from 1.03
to 1.09.  servekit's ``.pyc`` files are written first, as ``pip install``
does (compiled at each start, servekit would hold megabytes more, copied at
every fork).  ``--lib PATH`` adds a variant that imports
``servekit`` from another checkout's ``lib/`` (to compare with an earlier
commit: ``git worktree add /tmp/old <commit>`` then ``--lib /tmp/old/lib``).
``--imported`` adds the standard library's server in a process that has
imported ``servekit.classic`` too, without using it: what the import alone
costs each fork (its memory, copied and torn down with every child).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence

from bench.harness import servekit_path
from bench.importcost import precompile

#: The server process: argv[1] is "stdlib", "imported" (the standard
#: library's server, with servekit.classic imported beside it and not used)
#: or "classic", argv[2] the poll interval, argv[3] the kind; prints its
#: port, then a line of figures at every SIGUSR1; stops on SIGTERM.
_SERVER = r"""
import resource, signal, sys
if sys.argv[1] in ("stdlib", "imported"):
    import socketserver as mod
    if sys.argv[1] == "imported":
        import servekit.classic
else:
    import servekit.classic as mod

def handle(self):
    for line in self.rfile:
        self.wfile.write(line)

def answer(self):
    data, sock = self.request
    sock.sendto(data, self.client_address)

if sys.argv[3] == "tcp":
    server = mod.ForkingTCPServer(("127.0.0.1", 0), type("Echo", (mod.StreamRequestHandler,), {"handle": handle}))
elif sys.argv[3] == "udp":
    server = mod.ForkingUDPServer(("127.0.0.1", 0), type("Echo", (mod.DatagramRequestHandler,), {"handle": handle}))
else:
    server = mod.ForkingUDPServer(("127.0.0.1", 0), type("Echo", (mod.BaseRequestHandler,), {"handle": answer}))

def report(signum, frame):
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime,
          me.ru_minflt, children.ru_minflt, flush=True)

signal.signal(signal.SIGUSR1, report)
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
print(server.server_address[1], flush=True)
server.serve_forever(float(sys.argv[2]))
"""

#: How long any one step may take, in seconds.
TIMEOUT = 30.0


def _request(port: int, kind: str) -> None:
    if kind != "tcp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(TIMEOUT)
            client.sendto(b"x" * 31 + b"\n", ("127.0.0.1", port))
            client.recvfrom(64)
        return
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
        client.sendall(b"x" * 31 + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = client.recv(64)
            if not chunk:
                raise ConnectionError("the server closed the connection before its answer")
            answer += chunk


def _figures(proc: subprocess.Popen[str]) -> list[float]:
    assert proc.stdout is not None
    proc.send_signal(signal.SIGUSR1)
    return [float(field) for field in proc.stdout.readline().split()]


#: The servers' poll interval (``serve_forever(POLL)``), in seconds.
POLL = 0.5


def _until_reaped() -> None:
    """Pause past a poll interval: both servers reap at every wake-up of their loop."""
    threading.Event().wait(POLL + 0.1)  # (a pause between phases, not a synchronisation)


@contextlib.contextmanager
def _server(variant: str, lib: str | None, kind: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A forking echo server of *variant* and *kind* (pinned to CPU 0), and its port."""
    env = dict(os.environ)
    if lib is not None:
        env["PYTHONPATH"] = os.pathsep.join([lib, *filter(None, [env.get("PYTHONPATH")])])
    pin = ["taskset", "-c", "0"] if (os.cpu_count() or 1) >= 2 and shutil.which("taskset") else []
    with subprocess.Popen(
        [*pin, sys.executable, "-c", _SERVER, variant, str(POLL), kind], stdout=subprocess.PIPE, text=True, env=env
    ) as proc:
        try:
            assert proc.stdout is not None
            yield proc, int(proc.stdout.readline())
        finally:
            proc.terminate()
            proc.wait(TIMEOUT)


def measure(servers: Sequence[tuple[subprocess.Popen[str], int]], requests: int, kind: str) -> list[list[float]]:
    """Each server's parent CPU µs, children CPU µs, parent faults, children faults, per request.

    The servers take turns request by request, so that they are measured
    over the same seconds.  Each turn starts one server further along, and
    every other series of turns goes the other way round, so that every
    server is as often first, last and after each other one: a server's
    request costs a few per cent more or less by what ran on the CPU just
    before it (measured: the same tree 1.03x last and 1.06x in the middle).
    """
    befores = [_figures(proc) for proc, _ in servers]
    ports = [port for _, port in servers]
    for turn in range(requests):
        start = turn % len(ports)
        order = ports[start:] + ports[:start]
        for port in order if (turn // len(ports)) % 2 == 0 else order[::-1]:
            _request(port, kind)
    _until_reaped()
    figures = []
    for (proc, _), before in zip(servers, befores):
        after = _figures(proc)
        parent_cpu, child_cpu, parent_faults, child_faults = ((b - a) / requests for a, b in zip(before, after))
        figures.append([parent_cpu * 1e6, child_cpu * 1e6, parent_faults, child_faults])
    return figures


def _start(
    variants: Sequence[tuple[str, str | None]], kind: str, requests: int, rounds: int
) -> Iterator[list[list[float]]]:
    """*rounds* rounds of :func:`measure` over a new set of server processes, one per variant.

    Where a process places its objects (and so how many pages a request
    writes) differs from one process to the next, by a few per cent of the
    cost: a run starts its servers several times.
    """
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(_server(name, lib, kind)) for name, lib in variants]
        for _, port in servers:
            for _ in range(min(200, requests)):  # warm up
                _request(port, kind)
        _until_reaped()
        for _ in range(rounds):
            yield measure(servers, requests, kind)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.forkcost",
        description="CPU time and page faults per request of a fork-per-request server, parent and children.",
    )
    parser.add_argument("--requests", type=int, default=300, help="measured requests per variant and round")
    parser.add_argument("--rounds", type=int, default=16, help="rounds (default 16)")
    parser.add_argument(
        "--kind",
        choices=("tcp", "udp", "udp-bare"),
        default="tcp",
        help="ForkingTCPServer (default), ForkingUDPServer, or a ForkingUDPServer whose"
        " BaseRequestHandler answers on the socket itself (the bench's UDP echo)",
    )
    parser.add_argument(
        "--starts", type=int, default=16, help="new server processes this many times (default 16, at most --rounds)"
    )
    parser.add_argument("--lib", action="append", default=[], help="another checkout's lib/ (repeatable)")
    parser.add_argument(
        "--imported",
        action="store_true",
        help="also the standard library's server with servekit.classic imported beside it, unused:"
        " what the import alone costs a fork",
    )
    args = parser.parse_args(argv)
    if args.requests < 1 or args.rounds < 1 or args.starts < 1:
        parser.error(
            f"--requests, --rounds and --starts must be at least 1,"
            f" not {args.requests}, {args.rounds} and {args.starts}"
        )
    starts = min(args.starts, args.rounds)
    # Without .pyc files each server would compile servekit at start-up and
    # hold that much more memory, copied at every fork.
    precompile(servekit_path())
    for lib in args.lib:
        precompile(os.path.join(lib, "servekit", "__init__.py"))
    variants: list[tuple[str, str | None]] = [("stdlib", None), ("classic", None)]
    variants += [("classic", lib) for lib in args.lib]
    if args.imported:
        variants.append(("imported", None))
    labels = [name if lib is None else f"{name} ({lib})" for name, lib in variants]
    totals: list[list[float]] = [[] for _ in variants]
    faults: list[list[tuple[float, float]]] = [[] for _ in variants]
    for start in range(starts):
        rounds = args.rounds // starts + (start < args.rounds % starts)
        for figures in _start(variants, args.kind, args.requests, rounds):
            for k, (parent, child, parent_faults, child_faults) in enumerate(figures):
                totals[k].append(parent + child)
                faults[k].append((parent_faults, child_faults))
                print(
                    f"{labels[k]:40} parent {parent:7.1f} µs  children {child:7.1f} µs"
                    f"  total {parent + child:7.1f} µs  faults: parent {parent_faults:6.1f}"
                    f"  children {child_faults:6.1f}",
                    flush=True,
                )
    print("median total CPU per request; page faults parent, children; ratio to stdlib [each round's]:")
    for k, label in enumerate(labels):
        ratios = [mine / base for mine, base in zip(totals[k], totals[0])]
        parent_faults = statistics.median(f[0] for f in faults[k])
        child_faults = statistics.median(f[1] for f in faults[k])
        print(
            f"  {label:40} {statistics.median(totals[k]):7.1f} µs"
            f"  faults {parent_faults:6.1f} {child_faults:6.1f}  {statistics.median(ratios):5.3f}x"
            f" [{' '.join(f'{r:.2f}' for r in ratios)}]"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
