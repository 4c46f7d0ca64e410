"""Child processes: reading their lines with deadlines, reading their memory
and CPU from ``/proc``, and stopping them so that nothing is ever left behind.

Every server process is started in a session of its own, so its process
group holds the forked children of a forking server too; stopping ends with
``SIGKILL`` to that whole group, whatever state the server was in.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Final

__all__ = (
    "LineReader",
    "ServerFailed",
    "ServerProcess",
    "cpu_seconds",
    "live_tasks",
    "machine_busy_s",
    "memory_kib",
    "tree_pss_kib",
)

_TICK: Final = os.sysconf("SC_CLK_TCK")


class LineReader:
    """Lines from a pipe, each read with a deadline (``time.monotonic``)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._fd = stream.fileno()
        self._buf = b""
        self.eof = False
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._fd, selectors.EVENT_READ)

    def readline(self, deadline: float) -> str | None:
        """The next line without its newline; ``None`` at EOF or past the deadline."""
        while b"\n" not in self._buf:
            if self.eof:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._selector.select(remaining):
                return None
            chunk = os.read(self._fd, 65536)
            if not chunk:
                self.eof = True
                if self._buf:  # a last line without a newline
                    line, self._buf = self._buf, b""
                    return line.decode(errors="replace")
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace")

    def close(self) -> None:
        self._selector.close()


def _proc_status(pid: int) -> dict[str, int]:
    fields: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def memory_kib(pid: int) -> tuple[int, int]:
    """(current RSS, peak RSS) of one process in KiB; (0, 0) once it is gone."""
    fields = _proc_status(pid)
    return fields.get("VmRSS", 0), fields.get("VmHWM", 0)


def _cpu_ticks(pid: int) -> tuple[int, int]:
    """(own user + system ticks, reaped children's ticks) of one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0, 0
    # Fields after the command name, which is in parentheses and may hold spaces.
    rest = stat[stat.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(v) for v in rest[11:15])
    return utime + stime, cutime + cstime


def cpu_seconds(pid: int, tree: bool = False) -> float:
    """CPU time of a process and of the children it has reaped; with *tree*,
    also of its live descendants (a forking server's children at work)."""
    own, reaped = _cpu_ticks(pid)
    total = own + reaped
    if tree:
        todo = _children(pid)
        while todo:
            p = todo.pop()
            total += _cpu_ticks(p)[0]
            todo.extend(_children(p))
    return total / _TICK


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (all CPUs, all processes,
    interrupts included) since boot, from ``/proc/stat``."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return 0.0
    # cpu user nice system idle iowait irq softirq steal ...
    values = [int(v) for v in fields[1:9]]
    return (sum(values) - values[3] - values[4]) / _TICK


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tasks:
        try:
            kids.extend(int(k) for k in Path(f"/proc/{pid}/task/{tid}/children").read_text().split())
        except OSError:
            pass
    return kids


def live_tasks(pid: int) -> int:
    """Threads of a process plus its live (not zombie) descendant processes."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    count = next((int(line.split()[1]) for line in text.splitlines() if line.startswith("Threads:")), 0)
    todo = _children(pid)
    while todo:
        p = todo.pop()
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] != "Z":
            count += 1
        todo.extend(_children(p))
    return count


def tree_pss_kib(pid: int) -> tuple[int, int]:
    """(proportional set size of a process and all its descendants in KiB,
    number of processes).  PSS, not RSS: a forked child shares most of its
    pages with its parent, and a sum of RSS would count them once per child."""
    total, count, todo = 0, 0, [pid]
    while todo:
        p = todo.pop()
        try:
            text = Path(f"/proc/{p}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
                count += 1
                break
        todo.extend(_children(p))
    return total, count


class ServerFailed(Exception):
    """The server process did not come up (its reason is the message)."""


class ServerProcess:
    """A server process speaking bench/serve.py's protocol (the C ceiling
    server speaks it too): ``READY host port`` on stdout, stop on stdin EOF,
    then an optional ``STATS {json}`` line."""

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, log: Path) -> None:
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        self._lines = LineReader(self.proc.stdout)
        self.pid = self.proc.pid
        self.log_path = log

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill()

    def wait_ready(self, timeout: float) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        while True:
            line = self._lines.readline(deadline)
            if line is None:
                raise ServerFailed(f"no READY line within {timeout:g} s (exit code {self.proc.poll()})")
            if line.startswith("READY "):
                _, host, port = line.split()
                return host, int(port)
            if line.startswith("FAILED "):
                raise ServerFailed(line[7:])

    def stop(self, timeout: float) -> dict[str, object] | None:
        """Ask the server to stop (stdin EOF) and return its STATS, if any."""
        stats: dict[str, object] | None = None
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        while True:
            # Not "until EOF": a forked child may hold our stdout pipe open.
            line = self._lines.readline(deadline)
            if line is None:
                break
            if line.startswith("STATS "):
                stats = json.loads(line[6:])
                break
        try:
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        return stats

    def kill(self) -> None:
        """End the process group for certain: TERM, a bounded wait, KILL."""
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(2.0)
            except subprocess.TimeoutExpired:
                pass
        # Also reaches forked children left behind by a server that exited.
        self._signal_group(signal.SIGKILL)
        try:
            self.proc.wait(5.0)
        except subprocess.TimeoutExpired:
            pass
        self._lines.close()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self._log.close()

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
