"""``python -m bench.instructions``: instructions per request, counted by callgrind.

Requests per second on a shared virtual machine move by 10 % from one run to
the next; the number of instructions a server executes for a request does
not.  This mode runs each server process under ``valgrind --tool=callgrind``
(the count is user space only: the kernel's share of a request, the same for
every server on the same socket calls, is not in it) and drives it with one
client that makes its requests one after another::

    per request = (count after N requests - count after 0 requests) / N

Both counts include start-up, the start-up probe and shutdown, which cancel
out.  ``PYTHONHASHSEED=0`` keeps dictionary layouts, and so the counts,
nearly the same from one run to the next.  Threads run one at a time under
valgrind, so this measures work, not contention: a GIL hand-off costs the
instructions it runs, not the time it waits.  Forking servers are left out:
a forked child's count starts from its parent's at the fork, so the
children's totals cannot simply be added up.

Workloads: ``conn`` (a connection per request), ``keepalive`` (one
connection, N lines), ``udp`` (one socket, N datagrams); ``idle`` has no
per-request meaning here.  Ratios are server over twin: lower is fewer
instructions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

from bench.harness import REPO, select_entries, servekit_path
from bench.importcost import precompile
from bench.procs import ServerProcess
from bench.servers import Entry, Workload, proto_of

COUNTED: Final[tuple[Workload, ...]] = ("conn", "keepalive", "udp")
_TIMEOUT: Final = 120.0  # valgrind starts Python in seconds, not milliseconds
_LINE: Final = b"x" * 31 + b"\n"
_COLLECTED: Final = re.compile(rb"Collected\s*:\s*([0-9]+)")


@dataclass
class Count:
    entry: str
    workload: Workload
    requests: int
    per_request: float | None  # None: the cell failed
    error: str | None = None


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"connection closed after {data!r}")
        data += chunk
    return data


def _conn(address: tuple[str, int], n: int) -> None:
    for _ in range(n):
        with socket.create_connection(address, timeout=_TIMEOUT) as sock:
            sock.sendall(_LINE)
            if _read_line(sock) != _LINE:
                raise ConnectionError("wrong echo")
            # A forking server's child shares nothing with us, but the
            # server must see EOF to finish the request: say we are done.
            sock.shutdown(socket.SHUT_WR)


def _keepalive(address: tuple[str, int], n: int) -> None:
    with socket.create_connection(address, timeout=_TIMEOUT) as sock:
        for _ in range(n):
            sock.sendall(_LINE)
            if _read_line(sock) != _LINE:
                raise ConnectionError("wrong echo")
        sock.shutdown(socket.SHUT_WR)


def _udp(address: tuple[str, int], n: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(_TIMEOUT)
        for _ in range(n):
            sock.sendto(_LINE, address)
            if sock.recvfrom(4096)[0] != _LINE:
                raise ConnectionError("wrong echo")


_CLIENTS: Final[dict[Workload, Callable[[tuple[str, int], int], None]]] = {
    "conn": _conn,
    "keepalive": _keepalive,
    "udp": _udp,
}


def _instructions(entry: Entry, workload: Workload, n: int, workdir: Path) -> int:
    """Instructions of the server process serving *n* requests."""
    logs = workdir / f"{entry.name}-{workload}-{n}"
    logs.mkdir()
    argv = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", f"--log-file={logs}/vg.%p",
        sys.executable, "-m", "bench.serve", entry.name, proto_of(workload), "127.0.0.1", "0.5",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    with ServerProcess(argv, env=env, cwd=REPO, log=logs / "server.log") as server:
        host, port = server.wait_ready(_TIMEOUT)
        _CLIENTS[workload]((host, port), n)
        if server.stop(_TIMEOUT) is None:
            raise RuntimeError(f"no STATS from the server; see {logs / 'server.log'}")
    (log,) = logs.glob("vg.*")  # one process: forking servers are not counted
    found = _COLLECTED.search(log.read_bytes())
    if found is None:
        raise RuntimeError(f"no callgrind total in {log}")
    return int(found.group(1))


def count(entry: Entry, workload: Workload, n: int, workdir: Path) -> Count:
    try:
        base = _instructions(entry, workload, 0, workdir)
        loaded = _instructions(entry, workload, n, workdir)
    except Exception as exc:  # reported in the table; the other cells go on
        return Count(entry.name, workload, n, None, f"{type(exc).__name__}: {exc}")
    return Count(entry.name, workload, n, (loaded - base) / n)


def render(counts: list[Count], entries: list[Entry], n: int) -> str:
    by = {(c.entry, c.workload): c for c in counts}
    lines = [
        f"Instructions per request -- callgrind, user space, {n} requests one after another "
        "minus none; server / twin: lower is fewer",
        f"  {'server':28} {'workload':9} {'instr/request':>14}  {'vs twin':26} {'ratio':>6}",
    ]
    for workload in COUNTED:
        for e in entries:
            c = by.get((e.name, workload))
            if c is None:
                continue
            if c.per_request is None:
                lines.append(f"  {e.name:28} {workload:9} {'FAILED':>14}  {c.error}")
                continue
            twin = e.twin.get(proto_of(workload))
            t = by.get((twin, workload)) if twin else None
            ratio = f"{c.per_request / t.per_request:5.2f}x" if t and t.per_request else ""
            lines.append(f"  {e.name:28} {workload:9} {c.per_request:14,.0f}  {twin or '':26} {ratio:>6}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--only", action="append", default=[], metavar="SUBSTRING",
                        help="only servers whose name contains it (repeatable; their twins always run)")
    parser.add_argument("--workloads", default=",".join(COUNTED), help=f"a subset of {','.join(COUNTED)}")
    parser.add_argument("--requests", type=int, default=200, help="requests per measured run (default 200)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the counts as JSON")
    args = parser.parse_args(argv)
    workloads = [w for w in COUNTED if w in args.workloads.split(",")]
    unknown = set(args.workloads.split(",")) - set(COUNTED)
    if unknown or args.requests < 1:
        parser.error(f"workloads must be among {','.join(COUNTED)}, requests >= 1")
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian: apt install valgrind)", file=sys.stderr)
        return 2
    where = servekit_path()
    precompile(where)
    entries, skipped = select_entries(tuple(args.only))
    # The C ceiling server is not Python; forked children cannot be counted apart.
    entries = [e for e in entries if e.build is not None and not e.forks]
    for name, why in skipped.items():
        print(f"skipped {name}: {why}", file=sys.stderr)
    counts: list[Count] = []
    with tempfile.TemporaryDirectory(prefix="servekit-instr-") as tmp:
        for workload in workloads:
            for e in entries:
                if workload in e.workloads:
                    c = count(e, workload, args.requests, Path(tmp))
                    counts.append(c)
                    shown = "FAILED: " + str(c.error) if c.per_request is None else f"{c.per_request:,.0f}"
                    print(f"{workload:9} {e.name:28} {shown}", file=sys.stderr, flush=True)
    print(f"servekit: {where}")
    print(render(counts, entries, args.requests))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(c) for c in counts], indent=1))
    return 1 if any(c.per_request is None for c in counts) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
