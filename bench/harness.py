"""Runs the cells: every selected server under every workload it supports,
each run in a fresh server process, all runs of all servers in one go.

Order: run 1 of every cell, then run 2, ...; within a run, workload by
workload, the servers in registry order.  So a server and its twin are
measured minutes (not seconds) apart in the two runs, and a burst of noise on
the machine shows up as a difference between the runs rather than as a
difference between two servers.

Most servers are built by ``bench/serve.py`` in a process of its own; the
entries that are a command line (``python -m servekit ... --workers N``) are
started as they are, found listening through their log, measured as a process
tree, and stopped with SIGTERM (see :func:`_wait_listening`, :func:`_stop_command`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from bench.generator import Generator, GeneratorFailed, LoadResult, LoadSpec, find_generator
from bench.importcost import import_time, precompile
from bench.procs import (
    ServerFailed,
    ServerProcess,
    _children,
    cpu_seconds,
    live_tasks,
    machine_busy_s,
    memory_kib,
    tree_pss_kib,
)
from bench.serve import _first_answer
from bench.servers import ENTRIES, WORKLOADS, Entry, Workload, proto_of

__all__ = ("Cell", "Options", "Results", "connections_of", "over_capacity", "run_all")

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Options:
    seconds: float = 2.0  # measured time per cell
    runs: int = 3
    idle: int = 1000  # idle connections held in the idle workload
    active: int = 4  # active connections measuring latency next to them
    keepalive: int = 16  # connections in the keep-alive workload
    # Concurrent clients of the conn workload: below socketserver's listen
    # backlog of 5, so no SYN is dropped and the figure is the server's
    # accept + dispatch + teardown, not the kernel's one-second SYN retry.
    conn: int = 4
    udp: int = 16  # sockets of the udp workload, one datagram in flight each
    # The blocking workload: keep-alive connections whose every line costs
    # the handler work_ms of blocking (time.sleep), to compare the reactor's
    # offload pool with a pool of the same size alone.
    blocking: int = 32
    work_ms: float = 1.0
    timeout_ms: int = 2000
    size: int = 32
    poll_interval: float = 0.5  # the library default; smoke runs shorten it
    only: tuple[str, ...] = ()
    workloads: tuple[Workload, ...] = WORKLOADS
    generator: str = "auto"
    import_repeats: int = 5
    smoke: bool = False
    host: str = "127.0.0.1"
    # Server on CPU 0, generator on the last CPU (see _cpu_plan).
    pin: bool = True
    # TCP source addresses 127.0.0.1..N of the generator (loadgen.c: TIME_WAIT).
    sources: int = 16


@dataclass
class Cell:
    entry: str
    workload: Workload
    run: int
    load: LoadResult | None = None
    error: str | None = None
    rss_before_kib: int = 0
    rss_idle_kib: int = 0
    peak_kib: int = 0  # VmHWM of the server process
    tree_peak_kib: int = 0  # forking servers: peak PSS of the process tree
    tree_peak_procs: int = 0
    server_cpu_s: float = 0.0
    server_cpu_wall_s: float = 0.0  # the wall time server_cpu_s was counted over
    # CPU the rest of the machine used meanwhile (other processes, interrupts):
    # a noise gauge for a shared machine, in seconds over server_cpu_wall_s.
    other_cpu_s: float = 0.0
    startup_s: float | None = None
    shutdown_s: float | None = None
    shutdown_call_s: float | None = None
    close_s: float | None = None
    wind_down_s: float | None = None  # until its threads/children were gone
    stop_error: str | None = None  # the figures stand, but the server misbehaved
    notes: list[str] = field(default_factory=list)
    tracebacks: int = 0
    log_tail: str = ""
    # Pre-forked servers (a command line whose process has children): each
    # worker's CPU seconds over server_cpu_wall_s, and the most connections it
    # held at once (sampled every 0.1 s).
    worker_cpu_s: list[float] = field(default_factory=list)
    worker_conns: list[int] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.load.rate if self.load is not None else 0.0

    @property
    def per_idle_kib(self) -> float | None:
        if self.load is None or not self.load.idle_open or not self.rss_idle_kib:
            return None
        return (self.rss_idle_kib - self.rss_before_kib) / self.load.idle_open


@dataclass
class Results:
    options: Options
    command: str
    machine: dict[str, str]
    servekit: str  # where it was imported from
    pinning: str  # which CPUs the servers and the generator ran on
    generator: str
    entries: list[str]
    skipped: dict[str, str]
    cells: list[Cell] = field(default_factory=list)
    imports: dict[str, float] = field(default_factory=dict)  # module -> seconds
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def cells_of(self, entry: str, workload: Workload) -> list[Cell]:
        return [c for c in self.cells if c.entry == entry and c.workload == workload]


# ----------------------------------------------------------------- machine


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": str(os.cpu_count()),
        "cpu model": cpu,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "kernel": f"{platform.system()} {platform.release()}",
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def servekit_path() -> str:
    """Make ``servekit`` importable in the child processes and say from where:
    the installed one (``pip install -e .``), else this checkout's lib/."""
    paths = [str(REPO)]
    spec = importlib.util.find_spec("servekit")
    if spec is None:
        paths.append(str(REPO / "lib"))
        sys.path.append(str(REPO / "lib"))
        spec = importlib.util.find_spec("servekit")
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([*paths, *([old] if old else [])])
    return (spec.origin or "?") if spec is not None else "not found"


def raise_fd_limit(needed: int, log: Callable[[str], None]) -> int:
    """Raise the soft RLIMIT_NOFILE (inherited by the servers and the
    generator) towards *needed*; returns how many descriptors there are."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        log(f"note: RLIMIT_NOFILE hard limit is {hard}; wanted {needed}")
    return target


def _check_requirements(entries: Iterable[Entry]) -> dict[str, str]:
    """module -> error text, for the modules that fail to import.  Checked in
    a child interpreter, like the one the servers will run in."""
    modules = sorted({m for e in entries for m in e.requires})
    code = (
        "import importlib, json, sys\n"
        "bad = {}\n"
        "for m in sys.argv[1:]:\n"
        "    try: importlib.import_module(m)\n"
        "    except Exception as e: bad[m] = f'{type(e).__name__}: {e}'\n"
        "print(json.dumps(bad))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *modules], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    try:
        bad: dict[str, str] = json.loads(proc.stdout)
    except ValueError:
        return dict.fromkeys(modules, f"import check failed: {proc.stderr[-300:]}")
    return bad


def select_entries(only: tuple[str, ...]) -> tuple[list[Entry], dict[str, str]]:
    """The entries to run (with the ceiling, and the twins and the other
    entries the chosen ones are compared with, always included) and the
    skipped ones with the reason."""
    chosen = [e for e in ENTRIES if not only or any(s in e.name for s in only)]
    names = {e.name for e in chosen} | {"ceiling"}
    for e in chosen:
        names.update(e.twin.values())
        names.update(e.compare_with)
    candidates = [e for e in ENTRIES if e.name in names]
    bad = _check_requirements(candidates)
    run: list[Entry] = []
    skipped: dict[str, str] = {}
    for e in candidates:
        missing = [m for m in e.requires if m in bad]
        if missing:
            skipped[e.name] = f"import {missing[0]} failed ({bad[missing[0]]})"
        else:
            run.append(e)
    return run, skipped


# ------------------------------------------------------------------- cells


def _cpu_plan(pin: bool) -> tuple[set[int], set[int]] | None:
    """(server CPUs, generator CPUs), or ``None`` to let the scheduler place them.

    One core each, so neither steals the other's: without pinning, the
    threads of a GIL-bound server migrate between cores and hand the GIL
    across them, and a threaded server's throughput jumps by 2x between two
    identical runs (seen here: 35,000 to 82,000 req/s).  Pinned, the same
    cell repeats within a few percent.  Python threads use one core at a
    time anyway; forking servers are held to one core too, like every other.
    """
    if not pin or not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return {cpus[0]}, {cpus[-1]}


@contextlib.contextmanager
def _pinned(cpus: set[int] | None) -> Iterator[None]:
    """Run the block (and the processes it starts) on *cpus*: affinity is
    per thread on Linux and inherited by children."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


class _TreeSampler(threading.Thread):
    """Samples the PSS of a forking server's process tree while load runs
    (and calls *also*, if given, at each sample)."""

    def __init__(self, pid: int, period: float = 0.1, also: Callable[[], None] | None = None) -> None:
        super().__init__(daemon=True, name="bench-tree-sampler")
        self._pid = pid
        self._period = period
        self._also = also
        self._done = threading.Event()
        self.peak_kib = 0
        self.peak_procs = 0

    def run(self) -> None:
        while not self._done.is_set():
            kib, procs = tree_pss_kib(self._pid)
            if kib > self.peak_kib:
                self.peak_kib, self.peak_procs = kib, procs
            if self._also is not None:
                self._also()
            self._done.wait(self._period)

    def finish(self) -> None:
        self._done.set()
        self.join(5.0)


def _sockets(pid: int) -> int:
    """How many sockets process *pid* has open."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    count = 0
    for fd in fds:
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count


class _Workers:
    """The worker processes of a pre-forked server (its children, as they are
    when it is ready): each one's CPU over the measured phase, and the most
    connections each held at once (its sockets beyond those it had before the
    load: the listener, the supervisor's channel...).  They show how the
    kernel spread the load over the workers sharing the listening socket."""

    def __init__(self, pid: int) -> None:
        self.baseline = {worker: _sockets(worker) for worker in sorted(_children(pid))}
        self.most = dict.fromkeys(self.baseline, 0)
        self.cpu_before: dict[int, float] = {}
        self.start_cpu()

    def start_cpu(self) -> None:
        self.cpu_before = {worker: cpu_seconds(worker) for worker in self.baseline}

    def sample(self) -> None:
        for worker in self.baseline:
            self.most[worker] = max(self.most[worker], _sockets(worker))

    def cpu(self) -> list[float]:
        return [max(0.0, cpu_seconds(worker) - before) for worker, before in self.cpu_before.items()]

    def held(self) -> list[int]:
        """After the load: the most connections each worker held.  (Its own
        sockets are the fewer of before and now: at the first count the
        start-up probe's connection may not yet have been closed.)"""
        return [most - min(self.baseline[worker], _sockets(worker) or most) for worker, most in self.most.items()]


# ------------------------------------------------------ command-line servers

#: servekit's command line logs "listening on HOST:PORT" once it has bound.
_LISTENING: Final = re.compile(r"listening on (\S+):(\d+)")


def _wait_listening(srv: ServerProcess, log: Path, launched: float, timeout: float) -> tuple[tuple[str, int], float]:
    """The address a command-line server listens on, read from its log, once it
    has answered one request; and the seconds from its launch to that answer
    (interpreter start-up and imports included)."""
    deadline = time.monotonic() + timeout
    while True:
        code = srv.proc.poll()
        if code is not None:
            raise ServerFailed(f"exited with status {code} before it was listening")
        found = _LISTENING.search(log.read_text(errors="replace")) if log.exists() else None
        if found is not None:
            break
        if time.monotonic() > deadline:
            raise ServerFailed(f"no 'listening on HOST:PORT' in its log within {timeout:g} s")
        time.sleep(0.01)
    address = (found[1].strip("[]"), int(found[2]))
    try:
        _first_answer("tcp", address)
    except Exception as exc:  # (the cell fails, with the reason)
        why = f"{type(exc).__name__}: {exc}"
        raise ServerFailed(f"listening on {address[0]}:{address[1]} but no answer: {why}") from exc
    return address, time.perf_counter() - launched


def _stop_command(srv: ServerProcess, timeout: float) -> tuple[float | None, str | None]:
    """SIGTERM to a command-line server's process -- to it alone, as a service
    manager's main-process stop does: its workers are its to stop -- and wait
    for it.  (The seconds from SIGTERM until it exited, what went wrong if
    anything: a status other than 0, a process of it still running after it.)"""
    sent = time.perf_counter()
    try:
        os.kill(srv.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        code = srv.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None, f"still running {timeout:g} s after SIGTERM (killed)"
    took = time.perf_counter() - sent
    if code != 0:
        return took, f"exit status {code} after SIGTERM"
    # (its process group: its workers, which it must have stopped and reaped)
    left_until = time.monotonic() + 1.0
    while True:
        try:
            os.killpg(srv.pid, 0)
        except ProcessLookupError:
            return took, None
        except PermissionError:
            return took, None
        if time.monotonic() > left_until:
            return took, "exited 0, but processes of its group were still running 1 s later"
        time.sleep(0.01)


def connections_of(workload: Workload, opts: Options) -> int:
    """The active connections (udp: sockets) of *workload*."""
    return {"conn": opts.conn, "keepalive": opts.keepalive, "idle": opts.active, "udp": opts.udp,
            "blocking": opts.blocking}[workload]  # fmt: skip


def over_capacity(entry: Entry, workload: Workload, opts: Options) -> int | None:
    """The connections *workload* holds at once when *entry* serves fewer
    (its pool's workers, its children), else ``None``.  Only keepalive and
    idle are judged so: past the bound those connections only wait and time
    out.  (``conn`` holds its few clients; ``blocking`` runs past a pool's
    size on purpose.)"""
    if entry.capacity is None or workload not in ("keepalive", "idle"):
        return None
    held = opts.keepalive if workload == "keepalive" else opts.idle + opts.active
    return held if held > entry.capacity else None


def _spec(workload: Workload, opts: Options) -> LoadSpec:
    connections = connections_of(workload, opts)
    idle = opts.idle if workload == "idle" else 0
    return LoadSpec(
        workload,
        connections,
        opts.seconds,
        idle=idle,
        timeout_ms=opts.timeout_ms,
        size=opts.size,
        # The time allowed to open the held connections (idle, and the active
        # ones of keepalive and blocking, 4 handshakes at a time): opening
        # takes about 2 ms a connection on a threaded server here.
        idle_timeout_s=30.0 + (idle + connections) * 0.01,
        sources=opts.sources,
    )


def _server_argv(entry: Entry, workload: Workload, gen: Generator, opts: Options) -> list[str]:
    proto = proto_of(workload)
    if entry.command is not None:
        return entry.command(opts.host)
    if entry.build is None:
        return gen.serve_argv(proto, opts.host)
    work_ms = opts.work_ms if workload == "blocking" else 0.0
    return [sys.executable, "-m", "bench.serve", entry.name, proto, opts.host, repr(opts.poll_interval),
            repr(work_ms)]  # fmt: skip


def _wind_down(pid: int, tasks: int, timeout: float) -> float | None:
    """Wait until the server is back to *tasks* threads and child processes
    after the clients closed; how long that took, ``None`` on timeout.

    Shutdown latency is measured after this, on a quiet server: with
    thousands of threads exiting at once, CPython's GIL keeps the serving
    thread waiting for seconds, and that is a thread-exit cost, not
    ``shutdown()``'s."""
    start = time.monotonic()
    delay = 0.001
    while live_tasks(pid) > tasks:
        if time.monotonic() - start > timeout:
            return None
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
    return time.monotonic() - start


def _stat(stats: dict[str, object], key: str) -> float | None:
    value = stats.get(key)
    return float(value) if isinstance(value, (int, float)) and value == value else None


def run_cell(entry: Entry, workload: Workload, run: int, gen: Generator, opts: Options, logdir: Path) -> Cell:
    cell = Cell(entry.name, workload, run)
    log = logdir / f"{entry.name}.{workload}.{run}.log"
    plan = _cpu_plan(opts.pin and entry.pinned)
    server_cpus, gen_cpus = plan if plan is not None else (None, None)
    launched = time.perf_counter()
    with _pinned(server_cpus):
        srv = ServerProcess(_server_argv(entry, workload, gen, opts), env=os.environ, cwd=REPO, log=log)
    with srv:
        try:
            if entry.command is not None:
                address, cell.startup_s = _wait_listening(srv, log, launched, 60.0)
            else:
                address = srv.wait_ready(60.0)
        except ServerFailed as exc:
            cell.error = f"server did not start: {exc}"
        else:
            cell.rss_before_kib = memory_kib(srv.pid)[0]
            tasks_before = live_tasks(srv.pid)
            workers = _Workers(srv.pid) if entry.command is not None else None
            cpu_before = [cpu_seconds(srv.pid, tree=entry.forks), time.monotonic(), machine_busy_s()]
            also = workers.sample if workers is not None else None
            sampler = _TreeSampler(srv.pid, also=also) if entry.forks else None
            if sampler is not None:
                sampler.start()

            def on_idle_ready(opened: int, took: float) -> None:
                cell.rss_idle_kib = memory_kib(srv.pid)[0]
                # The server's CPU counts from here: opening is not the measured phase.
                cpu_before[:] = [cpu_seconds(srv.pid, tree=entry.forks), time.monotonic(), machine_busy_s()]
                if workers is not None:
                    workers.start_cpu()

            try:
                with _pinned(gen_cpus):
                    cell.load = gen.run(_spec(workload, opts), address, on_idle_ready)
            except GeneratorFailed as exc:
                cell.error = str(exc)
            else:
                if cell.load.requests == 0:
                    load = cell.load
                    cell.error = (f"no request completed (refused {load.refused}, reset {load.reset}, "
                                  f"timed out {load.timeout}, other {load.other})")  # fmt: skip
            cell.server_cpu_s = cpu_seconds(srv.pid, tree=entry.forks) - cpu_before[0]
            if workers is not None:
                cell.worker_cpu_s = workers.cpu()
            cell.server_cpu_wall_s = time.monotonic() - cpu_before[1]
            busy = machine_busy_s() - cpu_before[2]
            gen_cpu = cell.load.cpu_s if cell.load is not None else 0.0
            cell.other_cpu_s = max(0.0, busy - cell.server_cpu_s - gen_cpu)
            if sampler is not None:
                sampler.finish()
                cell.tree_peak_kib, cell.tree_peak_procs = sampler.peak_kib, sampler.peak_procs
            cell.peak_kib = memory_kib(srv.pid)[1]
            cell.wind_down_s = _wind_down(srv.pid, tasks_before, 10.0 + 0.02 * opts.idle)
            if workers is not None:
                cell.worker_conns = workers.held()
            if cell.wind_down_s is None:
                cell.notes.append("threads or children still running after the clients left")
            if entry.command is not None:
                cell.shutdown_s, cell.stop_error = _stop_command(srv, timeout=30.0)
                stats = None
            else:
                stats = srv.stop(timeout=30.0)
            if stats is not None:
                cell.startup_s = _stat(stats, "startup_s")
                cell.shutdown_s = _stat(stats, "shutdown_s")
                cell.shutdown_call_s = _stat(stats, "shutdown_call_s")
                cell.close_s = _stat(stats, "close_s")
                if stats.get("error"):
                    cell.error = str(stats["error"])
            elif entry.build is not None:
                cell.stop_error = "server did not stop within 30 s (killed)"
    text = log.read_text(errors="replace") if log.exists() else ""
    cell.tracebacks = text.count("Traceback (most recent call last)")
    cell.log_tail = text[-1500:]
    return cell


def _describe(cell: Cell) -> str:
    if cell.error:
        return f"FAILED: {cell.error}"
    if cell.stop_error:
        return f"STOP FAILED: {cell.stop_error}"
    assert cell.load is not None
    load = cell.load
    text = f"{load.rate:10,.0f} req/s  p50 {load.p50_us / 1000:.2f} ms  p99 {load.p99_us / 1000:.2f} ms"
    if load.errors:
        text += f"  errors {load.errors}"
    if cell.tracebacks:
        text += f"  ({cell.tracebacks} tracebacks logged)"
    return text


# ----------------------------------------------------------------- imports


#: What each import figure measures: the statement that makes an API usable.
#: ``import servekit`` alone loads nothing (its names load on first use), so
#: the composed API is measured by importing a name.
IMPORTS: Final = {
    "servekit": "from servekit import server",
    "servekit.classic": "import servekit.classic",
    "socketserver": "import socketserver",
    "asyncio": "import asyncio",
}


# --------------------------------------------------------------------- all


def run_all(opts: Options, command: str, log: Callable[[str], None]) -> Results:
    started = time.monotonic()
    needed = opts.idle + opts.active + max(opts.keepalive, opts.blocking) + 256
    fds = raise_fd_limit(needed, log)
    if "idle" in opts.workloads and fds < needed:
        idle = max(0, fds - opts.active - max(opts.keepalive, opts.blocking) - 256)
        log(f"note: only {fds} file descriptors: idle workload reduced to {idle} connections")
        opts = Options(**{**opts.__dict__, "idle": idle})
    where = servekit_path()
    precompile(where)
    gen = find_generator(opts.generator, log)
    entries, skipped = select_entries(opts.only)
    cpus = _cpu_plan(opts.pin)
    pinning = (
        f"server on CPU {sorted(cpus[0])}, generator on CPU {sorted(cpus[1])} (--no-pin: let the scheduler place them)"
        if cpus is not None
        else "not pinned: the scheduler places server and generator"
    )
    unpinned = [e.name for e in entries if not e.pinned]
    if cpus is not None and unpinned:
        pinning += f"; never pinned: {', '.join(unpinned)} (their workers and the generator share all CPUs)"
    results = Results(opts, command, machine_info(), where, pinning, gen.description,
                      [e.name for e in entries], skipped)  # fmt: skip
    for name, why in skipped.items():
        log(f"skipped {name}: {why}")
    for workload in opts.workloads:
        for entry in entries:
            held = over_capacity(entry, workload, opts) if workload in entry.workloads else None
            if held is not None:
                note = (f"{entry.name} skipped in {workload}: it serves at most {entry.capacity} connections "
                        f"at once, the workload holds {held}")  # fmt: skip
                results.notes.append(note)
                log(f"note: {note}")
    # Every second run takes the servers in reverse order, so a server and
    # its twin swap places and a slow drift of the machine favours neither.
    plan = [
        (run, workload, entry)
        for run in range(1, opts.runs + 1)
        for workload in opts.workloads
        for entry in (entries if run % 2 else entries[::-1])
        if workload in entry.workloads and over_capacity(entry, workload, opts) is None
    ]
    with tempfile.TemporaryDirectory(prefix="servekit-bench-") as tmp:
        for k, (run, workload, entry) in enumerate(plan, 1):
            cell = run_cell(entry, workload, run, gen, opts, Path(tmp))
            results.cells.append(cell)
            log(f"[{k:3}/{len(plan)}] run {run} {workload:9} {entry.name:28} {_describe(cell)}")
            if (cell.error or cell.stop_error) and cell.log_tail.strip():
                log("    server log (tail): " + cell.log_tail.strip().replace("\n", "\n    "))
    for module, statement in IMPORTS.items():
        if module.startswith("servekit") and "servekit.threaded" in skipped:
            continue
        value = import_time(statement, opts.import_repeats)
        if value is not None:
            results.imports[module] = value
    results.wall_s = time.monotonic() - started
    return results

