"""Requests handed to child processes: the children's reports, their pids, their ends.

When a request is handled in a child process (the host's ``discard`` in the
parent, ``close_inherited`` and ``run`` in the child), the child keeps no
books: it writes two fixed-size records on a pipe the parent's loop watches
-- one when its ``run`` starts (the request's key and the child's pid), one
when the request ends (the handler's time, whether it or a stage failed,
bytes in and out) -- and the parent books the end.  From the first record
the parent knows the child's pid: it watches a pidfd of it, so a child that
exits without its second record (killed, crashed) ends its request too, and
a drain's deadline can stop every child still running (``SIGTERM``, then
``SIGKILL``).  None of this asks anything of the dispatcher beyond the
documented calls; one that reaps its children may also report their exit
status (the host's ``child_exited``), which is then the one given.

A request's key is its ``id()``, the same in the parent and in a forked child.
"""

from __future__ import annotations

import math
import os
import select
import signal
import struct
import threading
import time
from functools import partial
from typing import Final, Generic, Protocol, TypeVar, final

from ..abc import Request
from ..events import ChildFailed
from .loop import Loop

__all__ = ("Children",)

_ReqT = TypeVar("_ReqT", bound=Request[object])
_ReqT_contra = TypeVar("_ReqT_contra", contravariant=True)

#: One record: kind (S: started, E: ended), the request's key, the child's
#: pid, the handler's seconds, whether it failed, bytes in and out (-1: not
#: counted), the failed stage's name (empty: the handler ran), the name of
#: the exception's type.  Smaller than PIPE_BUF, so each write is whole.
_RECORD: Final = struct.Struct("=cQid?qq16s48s")
_STARTED: Final = b"S"
_ENDED: Final = b"E"

#: How often terminate() looks at a child it has no pidfd for, in seconds.
_CHECK_INTERVAL: Final = 0.01

class Ended(Protocol[_ReqT_contra]):
    """**Protocol:** the route's ``end``, as a child's request ends: released already (by the child)."""

    def __call__(
        self,
        request: _ReqT_contra,
        reason: str,
        handled: None,
        seconds: float | None,
        failure: BaseException | None,
        stage: str | None,
        traffic: tuple[int | None, int | None],
        released: bool,
        /,
    ) -> None: ...


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("utf-8", "replace")


class _Running(Exception):
    """The child has not exited (a wake-up for an fd number that was reused meanwhile)."""


def _exit_status(pid: int, pidfd: int) -> int | None:
    """The exit status of the exited child *pid* (``None``: it was reaped already, by its dispatcher).

    Raises :class:`_Running` if it has not exited.  The child is not reaped:
    reaping is its dispatcher's.
    """
    try:
        if pidfd >= 0 and hasattr(os, "P_PIDFD"):
            info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        else:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped already
        return None
    if info is None:
        raise _Running
    status = int(info.si_status)
    return status if info.si_code == os.CLD_EXITED else -status


@final
class Children(Generic[_ReqT]):
    """The parent's view of the requests its children handle, and a child's reports to it."""

    __slots__ = ("_blind", "_ended", "_held", "_keys", "_lock", "_loop", "_pids", "_reader", "_writer")

    def __init__(self, loop: Loop, ended: Ended[_ReqT]) -> None:
        self._loop = loop
        self._ended = ended
        # The reader is the loop's; each child writes without blocking.
        self._reader, self._writer = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        # key -> (request, when it was handed over), until its child reports its end.
        self._held: dict[int, tuple[_ReqT, float]] = {}
        # key -> (pid, pidfd or -1) of the children that reported their start.
        self._pids: dict[int, tuple[int, int]] = {}
        # pid -> key, the other way round; the keys of those that have no
        # pidfd (looked at by tend()).
        self._keys: dict[int, int] = {}
        self._blind: set[int] = set()
        # The loop's thread and a reaper (close, a drain) both read the pipe.
        self._lock = threading.Lock()
        loop.watch(self._reader, self.read)

    # -- in the parent ---------------------------------------------------------------------

    def handed(self, request: _ReqT, since: float) -> None:
        """*request* (taken at *since*) is now a child's."""
        self._held[id(request)] = (request, since)

    def holds(self, key: int) -> bool:
        """Whether the request with *key* is a child's."""
        return key in self._held

    def read(self) -> int:
        """Read the children's records (the loop's callback for the pipe); how many were read."""
        with self._lock:
            try:
                data = os.read(self._reader, _RECORD.size * 256)
            except OSError:  # empty (or closed)
                return 0
        size = _RECORD.size
        for at in range(0, len(data) - len(data) % size, size):
            kind, key, pid, seconds, failed, bytes_in, bytes_out, stage, name = _RECORD.unpack_from(data, at)
            if kind == _STARTED:
                self._started(key, pid)
                continue
            failure = None
            if failed:
                what = "handler" if not stage.rstrip(b"\0") else f"{_text(stage)} stage"
                failure = ChildFailed(f"the {what} raised {_text(name)}")
            traffic = (None if bytes_in < 0 else bytes_in, None if bytes_out < 0 else bytes_out)
            self._end(key, None if stage.rstrip(b"\0") else seconds, failure, _text(stage) or None, traffic)
        return len(data) // size

    def _started(self, key: int, pid: int) -> None:
        if key not in self._held:
            return
        previous = self._keys.get(pid)
        if previous == key:
            return
        if previous is not None:
            # That child said earlier it ran another request (a dispatcher
            # that forks other than in its dispatch); this record is its run's.
            pid, fd = self._pids.pop(previous)
            self._blind.discard(previous)
            if fd >= 0:
                self._loop.watch(fd, partial(self._gone, key))
        else:
            fd = -1
            if hasattr(os, "pidfd_open"):
                try:
                    fd = os.pidfd_open(pid)
                except OSError:  # gone and reaped already, or no fd free: looked at by tend()
                    pass
                else:
                    self._loop.watch(fd, partial(self._gone, key))
        self._pids[key] = (pid, fd)
        self._keys[pid] = key
        if fd < 0:
            self._blind.add(key)

    def tend(self) -> None:
        """Look at the children the loop cannot watch (no pidfd): end the requests of those gone.

        The runtime calls it after every wake-up of the loop while :attr:`blind` is set.
        """
        for key in list(self._blind):
            self._gone(key)

    @property
    def blind(self) -> bool:
        """Whether a child holding a request has no pidfd for the loop to watch."""
        return bool(self._blind)

    def _gone(self, key: int, status: int | None = None, *, known: bool = False) -> None:
        """The child that held *key* has exited (*status*, if *known*): end its request if it did not report.

        Without a known status the child is looked at first: a wake-up of
        its pidfd's number may be meant for an fd closed and reused since.
        """
        # Its report, if it sent one, is in the pipe already.
        while key in self._held and self.read():
            pass
        if key not in self._held:
            return
        if not known:
            pid, fd = self._pids.get(key, (0, -1))
            try:
                status = _exit_status(pid, fd) if pid else None
            except _Running:
                return
        what = "exited without reporting" if status is None else f"exited with status {status}"
        self._end(key, None, ChildFailed(f"the child {what}"), None, (None, None))

    def _end(
        self,
        key: int,
        seconds: float | None,
        failure: BaseException | None,
        stage: str | None,
        traffic: tuple[int | None, int | None],
    ) -> None:
        entry = self._held.pop(key, None)
        pid, fd = self._pids.pop(key, (0, -1))
        self._keys.pop(pid, None)
        self._blind.discard(key)
        if fd >= 0:
            self._loop.unwatch(fd)
            os.close(fd)
        if entry is None:  # reported already
            return
        request, since = entry
        if seconds is None and stage is None:  # no report: its time with the child is what is known
            seconds = time.monotonic() - since
        self._ended(request, "finished" if stage is None else stage, None, seconds, failure, stage, traffic, True)

    def exited(self, pid: int, status: int) -> None:
        """The dispatcher reaped child *pid* with *status* (in the serving thread, or once the loop has stopped)."""
        if pid not in self._keys:
            self.read()  # its start record may still be in the pipe
        key = self._keys.get(pid)
        if key is not None:
            self._gone(key, status, known=True)

    def settle(self) -> None:
        """The workers are closed: book the ends the children reported, and those of children gone silent."""
        while self.read():
            pass
        for key in list(self._pids):
            self._gone(key)

    def terminate(self, grace: float) -> None:
        """Stop every child still holding a request: ``SIGTERM``, then ``SIGKILL`` after *grace* seconds.

        Each one's request ends as its child exits.  Returns once all have
        exited, or after a bounded wait past the ``SIGKILL``.  For a thread
        that runs while the loop does not (a drain, after the loop stopped).
        """
        self.read()
        deadline = time.monotonic() + grace
        self._signal_all(signal.SIGTERM)
        self._await_exits(deadline)
        if self._held:
            self._signal_all(signal.SIGKILL)
            self._await_exits(time.monotonic() + grace + 1.0)

    def _signal_all(self, signum: int) -> None:
        for key, (pid, fd) in list(self._pids.items()):
            if key not in self._held:
                continue
            try:
                if fd >= 0 and hasattr(signal, "pidfd_send_signal"):
                    # Through the pidfd the signal cannot reach a process
                    # that has taken over the pid of a child reaped elsewhere.
                    signal.pidfd_send_signal(fd, signum)
                else:
                    os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _await_exits(self, deadline: float) -> None:
        """End the requests of the children as they exit, until none is left or *deadline* passes."""
        while self._held:
            watched = {fd: key for key, (_, fd) in self._pids.items() if fd >= 0 and key in self._held}
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if len(watched) < len(self._held):  # a child without a pidfd: look again shortly
                left = min(left, _CHECK_INTERVAL)
            poller = select.poll()
            for fd in watched:
                poller.register(fd, select.POLLIN)
            poller.register(self._reader, select.POLLIN)
            for fd, _ in poller.poll(math.ceil(left * 1000)):
                key = watched.get(fd)
                if key is not None:
                    self._gone(key)
            self.read()
            self.tend()

    # -- in the child ----------------------------------------------------------------------

    def become_child(self) -> None:
        """In a new child process: it keeps no books, it reports to the parent.

        The parent's pidfds are closed here too (see ``ChildWorkers.dispatch``).
        """
        os.close(self._reader)
        self._reader = -1
        for _, fd in self._pids.values():
            if fd >= 0:
                os.close(fd)
        self._pids.clear()
        self._keys.clear()
        self._blind.clear()

    def report_start(self, request: _ReqT) -> None:
        """In the child: its ``run`` of *request* begins."""
        self._write(_RECORD.pack(_STARTED, id(request), os.getpid(), 0.0, False, -1, -1, b"", b""))

    def report_end(
        self,
        request: _ReqT,
        seconds: float | None,
        failure: BaseException | None,
        stage: str | None,
        traffic: tuple[int | None, int | None],
    ) -> None:
        """In the child: *request* ended (dropped if the pipe is full: the parent learns the end from the
        child's exit, through the pidfd it opened at the child's start record)."""
        bytes_in, bytes_out = traffic
        self._write(
            _RECORD.pack(
                _ENDED,
                id(request),
                os.getpid(),
                0.0 if seconds is None else seconds,
                failure is not None,
                -1 if bytes_in is None else bytes_in,
                -1 if bytes_out is None else bytes_out,
                b"" if stage is None else stage.encode("utf-8", "replace")[:16],
                b"" if failure is None else type(failure).__qualname__.encode("utf-8", "replace")[:48],
            )
        )

    def _write(self, record: bytes) -> None:
        try:
            os.write(self._writer, record)
        except OSError:
            pass

    def close(self) -> None:
        """Close the pipe and the pidfds (the server is closed)."""
        for _, fd in self._pids.values():
            if fd >= 0:
                self._loop.unwatch(fd)
                os.close(fd)
        self._pids.clear()
        if self._reader >= 0:
            self._loop.unwatch(self._reader)
            os.close(self._reader)
        os.close(self._writer)
        self._reader = self._writer = -1

