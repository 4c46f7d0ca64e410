"""The Python fallback of bench/loadgen.c, for machines without a C compiler.

Same command line, same output lines.  Blocking sockets, one thread per
connection, the connections spread over a few worker processes so the GIL of
one process is not the limit.  It is several times slower than the C program;
the harness prints its ceiling in the same run, so a reader can tell whether
it held the servers back.

    python -m bench.pyloadgen serve tcp|udp HOST
    python -m bench.pyloadgen run MODE HOST PORT [-c N -d S -n N -i N -t MS -s N -T S -S N]
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

_KINDS = ("refused", "reset", "timeout", "other")


# ---------------------------------------------------------------- the server


class _Echo(asyncio.Protocol):
    _transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._transport.write(data)


class _DatagramEcho(asyncio.DatagramProtocol):
    # asyncio's own datagram transport does not subclass DatagramTransport
    # (3.11), so no isinstance check: both have sendto().
    _transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self._transport.sendto(data, addr)


async def _serve(proto: str, host: str) -> None:
    loop = asyncio.get_running_loop()
    if proto == "udp":
        transport, _ = await loop.create_datagram_endpoint(_DatagramEcho, local_addr=(host, 0))
        port = transport.get_extra_info("sockname")[1]
    else:
        server = await loop.create_server(_Echo, host, 0)
        port = server.sockets[0].getsockname()[1]
    # Until EOF on stdin, read in a thread as stdin may not be pollable; the
    # thread starts before READY, as the harness counts threads from there.
    eof = loop.run_in_executor(None, sys.stdin.buffer.read)
    print(f"READY {host} {port}", flush=True)
    await eof


# ------------------------------------------------------------- the clients


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*_KINDS, "late"), 0))
    lock: threading.Lock = field(default_factory=threading.Lock)


def _classify(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return "reset"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "other"


def _recv_exact(sock: socket.socket, size: int) -> None:
    got = 0
    while got < size:
        chunk = sock.recv(size - got)
        if not chunk:
            raise ConnectionResetError("closed by the server")
        got += len(chunk)


def _open(address: tuple[str, int], message: bytes, timeout: float) -> socket.socket:
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(message)
    _recv_exact(sock, len(message))
    return sock


def _client(
    mode: str, address: tuple[str, int], args: argparse.Namespace, start: float, end: float, tally: _Tally, slot: int
) -> None:
    timeout = args.t / 1000.0
    message = b"x" * (args.s - 1) + b"\n"
    latencies: list[float] = []
    counts = dict.fromkeys((*_KINDS, "late"), 0)
    sock: socket.socket | None = None
    seq = 0
    # See loadgen.c (-S): spread the per-request connections over loopback
    # source addresses so TIME_WAIT does not exhaust the ports of one.
    source: tuple[str, int] | None = None
    if args.S > 1 and address[0].startswith("127."):
        source = (f"127.0.0.{1 + slot % args.S}", 0)
    try:
        if mode in ("keepalive", "idle"):
            try:
                sock = _open(address, message, timeout)
            except OSError:
                sock = None
        elif mode == "udp":
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.settimeout(timeout)
            sock.connect(address)
        time.sleep(max(0.0, start - time.monotonic()))
        while time.monotonic() < end and (args.n == 0 or len(latencies) < args.n):
            t0 = time.monotonic()
            try:
                if mode == "conn":
                    with socket.create_connection(address, timeout=timeout, source_address=source) as conn:
                        conn.sendall(message)
                        _recv_exact(conn, len(message))
                elif mode == "udp":
                    assert sock is not None
                    seq += 1
                    tag = f"{slot} {seq} ".encode()
                    sock.send(tag + message[len(tag) :])
                    while True:
                        data = sock.recv(65536)
                        if data.startswith(tag):
                            break
                        counts["late"] += 1
                else:
                    if sock is None:
                        sock = socket.create_connection(address, timeout=timeout)
                    sock.sendall(message)
                    _recv_exact(sock, len(message))
            except OSError as exc:
                if source is not None and exc.errno == errno.EADDRNOTAVAIL:
                    source = None  # this sandbox binds 127.0.0.1 only
                    continue
                counts[_classify(exc)] += 1
                if mode != "udp" and sock is not None:
                    sock.close()
                    sock = None
                time.sleep(0.01)
                continue
            latencies.append((time.monotonic() - t0) * 1e6)
    finally:
        if sock is not None:
            sock.close()
        with tally.lock:
            tally.latencies.extend(latencies)
            for key, value in counts.items():
                tally.counts[key] += value


def _worker(args: argparse.Namespace) -> int:
    tally = _Tally()
    address = (args.host, args.port)
    # Started (which takes a while on a loaded machine): say so, and learn
    # the measured window, which opens only once every worker is ready.
    print("ready", flush=True)
    start, end = (float(word) for word in sys.stdin.readline().split())
    threads = [
        threading.Thread(target=_client, args=(args.mode, address, args, start, end, tally, k))
        for k in range(args.c)
    ]
    for thread in threads:
        thread.start()
    # This process's CPU time in the measured phase, roughly: from its start.
    time.sleep(max(0.0, start - time.monotonic()))
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    for thread in threads:
        thread.join()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime
    print(json.dumps({"latencies": tally.latencies, "cpu_s": cpu, **tally.counts}), flush=True)
    return 0


def _percentile(values: list[float], q: float) -> float:
    return values[int(q * (len(values) - 1) + 0.5)] if values else 0.0


def _run(args: argparse.Namespace) -> int:
    address = (args.host, args.port)
    message = b"x" * (args.s - 1) + b"\n"
    idle: list[socket.socket] = []
    setup_failed = 0
    if args.mode == "idle":
        t0 = time.monotonic()
        for _ in range(args.i):
            if time.monotonic() - t0 > args.T:
                break
            try:
                idle.append(_open(address, message, args.t / 1000.0))
            except OSError:
                setup_failed += 1
        print(f"idle-ready {len(idle)} {time.monotonic() - t0:.6f}", flush=True)
    workers = max(1, min(args.c, os.cpu_count() or 1, 4))
    shares = [args.c // workers + (k < args.c % workers) for k in range(workers)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bench.pyloadgen", "worker", args.mode, args.host, str(args.port),
             "-c", str(share), "-t", str(args.t), "-s", str(args.s), "-n", str(args.n // workers), "-S", str(args.S)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for share in shares
    ]  # fmt: skip
    # The window opens once every worker has started (a worker that died
    # says nothing: its end of file), with time for the clients to connect.
    for proc in procs:
        assert proc.stdout is not None
        proc.stdout.readline()
    start = time.monotonic() + 0.2
    end = start + args.d
    for proc in procs:
        assert proc.stdin is not None
        try:
            proc.stdin.write(f"{start!r} {end!r}\n".encode())
            proc.stdin.flush()  # (communicate() below closes it)
        except OSError:  # it died: its count is missing below
            pass
    tally = _Tally()
    cpu = 0.0
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=args.d + args.t / 1000.0 + 30.0)
            part = json.loads(out)
        except (subprocess.TimeoutExpired, ValueError):
            proc.kill()
            proc.wait()
            continue
        tally.latencies.extend(part.pop("latencies"))
        cpu += float(part.pop("cpu_s"))
        for key, value in part.items():
            tally.counts[key] += int(value)
    held = len(idle)
    for sock in idle:
        sock.close()
    lat = sorted(tally.latencies)
    result = {
        "mode": args.mode, "requests": len(lat), "elapsed": args.d, **tally.counts,
        "p50_us": _percentile(lat, 0.5), "p90_us": _percentile(lat, 0.9), "p99_us": _percentile(lat, 0.99),
        "max_us": lat[-1] if lat else 0.0, "idle_open": held, "idle_held": held, "idle_lost": 0,
        "setup_failed": setup_failed, "cpu_s": cpu,
    }  # fmt: skip
    print("result " + json.dumps(result), flush=True)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "serve":
        asyncio.run(_serve(argv[1], argv[2]))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.pyloadgen")
    parser.add_argument("command", choices=("run", "worker"))
    parser.add_argument("mode", choices=("conn", "keepalive", "idle", "udp"))
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("-c", type=int, default=4)
    parser.add_argument("-d", type=float, default=1.0)
    parser.add_argument("-n", type=int, default=0)
    parser.add_argument("-i", type=int, default=0)
    parser.add_argument("-t", type=int, default=2000)
    parser.add_argument("-s", type=int, default=32)
    parser.add_argument("-T", type=float, default=60.0)
    parser.add_argument("-S", type=int, default=1)
    args = parser.parse_args(argv)
    return _worker(args) if args.command == "worker" else _run(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
