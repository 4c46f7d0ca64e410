"""The load generator: the C program compiled at bench time, or the Python
fallback when the machine has no C compiler.

Both speak the same command line and print the same ``result {json}`` line
(see ``bench/loadgen.c``); both also serve the trivial echo server whose
figures are the generator's ceiling.  The C build is cached by a hash of the
source and the compiler, so a run compiles at most once.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.procs import LineReader
from bench.servers import Proto, Workload, load_mode

__all__ = ("Generator", "LoadResult", "LoadSpec", "find_generator")

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class LoadSpec:
    workload: Workload
    connections: int  # active connections (udp: sockets), each closed-loop
    seconds: float
    idle: int = 0  # idle connections held (idle workload)
    timeout_ms: int = 2000  # per request
    size: int = 32  # bytes per line, newline included
    idle_timeout_s: float = 60.0  # to open the idle connections
    max_requests: int = 0  # 0: bounded by time only
    sources: int = 16  # TCP source addresses 127.0.0.1..N (see loadgen.c: TIME_WAIT)


@dataclass(frozen=True)
class LoadResult:
    requests: int
    elapsed: float
    refused: int
    reset: int
    timeout: int
    other: int
    late: int
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    idle_open: int
    idle_held: int
    idle_lost: int
    setup_failed: int
    cpu_s: float  # the generator's own CPU time in the measured phase
    idle_setup_s: float | None

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def errors(self) -> int:
        return self.refused + self.reset + self.timeout + self.other


class GeneratorFailed(Exception):
    pass


@dataclass(frozen=True)
class Generator:
    argv: tuple[str, ...]  # the program; "run ..." or "serve ..." follows
    description: str

    def serve_argv(self, proto: Proto, host: str) -> list[str]:
        return [*self.argv, "serve", proto, host]

    def run(
        self,
        spec: LoadSpec,
        address: tuple[str, int],
        on_idle_ready: Callable[[int, float], None] | None = None,
    ) -> LoadResult:
        argv = [
            *self.argv, "run", load_mode(spec.workload), address[0], str(address[1]),
            "-c", str(spec.connections),
            "-d", f"{spec.seconds:g}",
            "-t", str(spec.timeout_ms),
            "-s", str(spec.size),
            "-n", str(spec.max_requests),
            "-i", str(spec.idle),
            "-T", f"{spec.idle_timeout_s:g}",
            "-S", str(spec.sources),
        ]  # fmt: skip
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None and proc.stderr is not None
        lines = LineReader(proc.stdout)
        deadline = time.monotonic() + spec.seconds + spec.idle_timeout_s + 30.0
        result: dict[str, float] | None = None
        idle_setup: float | None = None
        try:
            while result is None:
                line = lines.readline(deadline)
                if line is None:
                    break
                if line.startswith("idle-ready "):
                    _, opened, took = line.split()
                    idle_setup = float(took)
                    if on_idle_ready is not None:
                        on_idle_ready(int(opened), idle_setup)
                elif line.startswith("result "):
                    result = json.loads(line[7:])
        finally:
            lines.close()
            if proc.poll() is None and result is None:
                proc.kill()
            try:
                proc.wait(10.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            stderr = proc.stderr.read().decode(errors="replace")
            proc.stdout.close()
            proc.stderr.close()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if result is None:
            raise GeneratorFailed(f"load generator gave no result (exit {proc.returncode}): {stderr[-500:]}")
        # The C generator times its measured phase itself; otherwise the whole
        # process (the Python fallback also opens its connections meanwhile).
        cpu = float(result.get("cpu_s", (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)))
        return LoadResult(
            requests=int(result["requests"]),
            elapsed=float(result["elapsed"]),
            refused=int(result["refused"]),
            reset=int(result["reset"]),
            timeout=int(result["timeout"]),
            other=int(result["other"]),
            late=int(result["late"]),
            p50_us=float(result["p50_us"]),
            p90_us=float(result["p90_us"]),
            p99_us=float(result["p99_us"]),
            max_us=float(result["max_us"]),
            idle_open=int(result["idle_open"]),
            idle_held=int(result["idle_held"]),
            idle_lost=int(result["idle_lost"]),
            setup_failed=int(result["setup_failed"]),
            cpu_s=cpu,
            idle_setup_s=idle_setup,
        )


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "servekit-bench"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError:  # a read-only or missing home: the temp directory will do
        path = Path(tempfile.gettempdir()) / f"servekit-bench-{os.getuid()}"
        path.mkdir(parents=True, exist_ok=True)
    return path


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def compile_c(log: Callable[[str], None]) -> Generator | None:
    """The C generator, compiled now unless an identical build is cached."""
    cc = _compiler()
    if cc is None:
        return None
    source = HERE / "loadgen.c"
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    flags = ["-O2", "-std=gnu99", "-Wall"]
    key = hashlib.sha256(source.read_bytes() + version.encode() + " ".join(flags).encode()).hexdigest()[:16]
    binary = _cache_dir() / f"loadgen-{key}"
    first_line = version.splitlines()[0] if version else cc
    description = f"C, one epoll thread (bench/loadgen.c, {first_line})"
    if binary.exists():
        return Generator((str(binary),), description)
    tmp = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")
    proc = subprocess.run([cc, *flags, "-o", str(tmp), str(source)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        log(f"compiling bench/loadgen.c failed, using the Python generator:\n{proc.stderr[-2000:]}")
        tmp.unlink(missing_ok=True)
        return None
    os.replace(tmp, binary)
    return Generator((str(binary),), description)


def python_generator(why: str) -> Generator:
    workers = min(4, os.cpu_count() or 1)
    return Generator(
        (sys.executable, "-m", "bench.pyloadgen"),
        f"Python fallback, up to {workers} processes of threads (bench/pyloadgen.py; {why}); "
        "its trivial server is asyncio, so its ceiling is low",
    )


def find_generator(choice: str, log: Callable[[str], None]) -> Generator:
    """``auto`` (C if it compiles, else Python), ``c`` or ``python``."""
    if choice != "python":
        gen = compile_c(log)
        if gen is not None:
            return gen
        if choice == "c":
            raise GeneratorFailed("no C compiler could build bench/loadgen.c")
        return python_generator("no C compiler could build bench/loadgen.c")
    return python_generator("chosen with --generator python")
