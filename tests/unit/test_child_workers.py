"""ChildWorkers: forks, reaps and reports each exit to the host's child_exited, with real forks."""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from servekit._runtime.workers import ChildWorkers

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or not hasattr(os, "pidfd_open"), reason="needs os.fork and os.pidfd_open (Linux)"
)

#: The bound on every wait, in seconds.  Never a sleep: only a limit.
TIMEOUT = 10.0


class Boom(BaseException):
    """Leaves a handler the way SystemExit would."""


class FakeHost:
    """A worker host whose route, in the child, is *behaviour*; exits are recorded in the parent."""

    def __init__(self, behaviour: Callable[[str], object]) -> None:
        self._behaviour = behaviour
        self.discarded: list[str] = []
        self.exits: list[tuple[int, int]] = []

    def run(self, request: str, /) -> None:
        self._behaviour(request)

    def discard(self, request: str, /) -> None:
        self.discarded.append(request)

    def drop(self, request: str, /) -> None:
        raise AssertionError("child workers never drop a request")

    def close_inherited(self) -> None:
        pass

    def child_exited(self, pid: int, status: int, /) -> None:
        self.exits.append((pid, status))

    def worker_failed(self, exc: BaseException, /) -> None:
        raise exc


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    try:
        yield r, w
    finally:
        os.close(r)
        os.close(w)


@pytest.fixture
def block() -> Iterator[int]:
    """The read end of a pipe nothing is ever written to: a child reading it blocks for good."""
    r, w = os.pipe()
    try:
        yield r
    finally:
        os.close(r)
        os.close(w)


def read_exactly(fd: int, n: int) -> bytes:
    """Read *n* bytes from *fd*, each wait bounded."""
    got = b""
    deadline = time.monotonic() + TIMEOUT
    while len(got) < n:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"got {got!r} of {n} bytes before the timeout"
        chunk = os.read(fd, n - len(got))
        assert chunk, "the pipe closed early"
        got += chunk
    return got


def wait_exited(pids: set[int]) -> None:
    """Wait (bounded) until each child in *pids* has exited; they are not reaped."""
    for pid in pids:
        fd = os.pidfd_open(pid)
        try:
            ready, _, _ = select.select([fd], [], [], TIMEOUT)
            assert ready, f"child {pid} did not exit"
        finally:
            os.close(fd)


def assert_gone(pids: set[int]) -> None:
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def start(host: FakeHost) -> ChildWorkers[str]:
    return ChildWorkers(host, 8, True)


@pytest.fixture
def cleanup() -> Iterator[list[ChildWorkers[str]]]:
    """Workers put here have every child killed and reaped at teardown, whatever the test did."""
    made: list[ChildWorkers[str]] = []
    yield made
    for workers in made:
        for pid in list(workers.pids):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        workers.reap(block=True)


class TestChildExited:
    def test_normal_exit_reported_once_with_status_0(self, cleanup: list[ChildWorkers[str]]) -> None:
        """A child whose route returns is reported once, with its pid and status 0."""
        host = FakeHost(lambda request: None)
        workers = start(host)
        cleanup.append(workers)
        workers.dispatch("a")
        assert host.discarded == ["a"]
        pids = set(workers.pids)
        wait_exited(pids)
        workers.reap()
        workers.reap()
        workers.close()
        assert host.exits == [(pid, 0) for pid in pids]
        assert workers.pids == set()
        assert_gone(pids)

    def test_base_exception_is_status_1(self, cleanup: list[ChildWorkers[str]]) -> None:
        """A BaseException that leaves the route ends the child with status 1."""

        def fail(request: str) -> None:
            raise Boom

        host = FakeHost(fail)
        workers = start(host)
        cleanup.append(workers)
        workers.dispatch("b")
        (pid,) = workers.pids
        wait_exited({pid})
        workers.reap()
        assert host.exits == [(pid, 1)]

    def test_killed_child_has_negative_status(self, cleanup: list[ChildWorkers[str]]) -> None:
        """A child ended by a signal is reported with minus the signal's number."""
        host = FakeHost(lambda request: os.kill(os.getpid(), signal.SIGKILL))
        workers = start(host)
        cleanup.append(workers)
        workers.dispatch("c")
        (pid,) = workers.pids
        workers.reap(block=True)
        assert host.exits == [(pid, -signal.SIGKILL)]

    def test_each_child_is_reported_with_its_own_status(self) -> None:
        """Several children, each exit reported with that child's pid and status."""
        codes = {"zero": 0, "three": 3, "five": 5}
        host = FakeHost(lambda request: os._exit(codes[request]))
        workers = start(host)
        forked: dict[int, int] = {}
        for request in codes:
            before = set(workers.pids)
            workers.dispatch(request)
            (pid,) = workers.pids - before
            forked[pid] = codes[request]
        workers.close()  # block_on_close: waits for them all
        assert sorted(host.exits) == sorted(forked.items())

    def test_child_reaped_elsewhere_is_reported_with_status_0(self) -> None:
        """Another part of the program reaped the child first: its status is lost, 0 is reported."""
        host = FakeHost(lambda request: os._exit(7))
        workers = start(host)
        workers.dispatch("d")
        (pid,) = workers.pids
        os.waitpid(pid, 0)
        workers.reap()
        assert host.exits == [(pid, 0)]
        assert workers.pids == set()

    def test_a_pid_put_in_from_outside_is_reaped_and_reported(self) -> None:
        """A pid put into ``pids`` from outside (classic's adopted set) is reaped like the others."""
        host = FakeHost(lambda request: None)
        workers = start(host)
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        workers.pids.add(pid)
        wait_exited({pid})
        workers.reap()
        assert host.exits == [(pid, 0)]
        assert workers.pids == set()
        assert_gone({pid})

    def test_forked_from_another_thread_and_reaped_on_close(self, pipe: tuple[int, int]) -> None:
        """A child forked by a thread other than the main one (the serving thread) runs and is reaped."""
        ready_r, ready_w = pipe
        host = FakeHost(lambda request: os.write(ready_w, request.encode()))
        workers = start(host)
        thread = threading.Thread(target=workers.dispatch, args=("t",))
        thread.start()
        thread.join(TIMEOUT)
        assert not thread.is_alive()
        assert read_exactly(ready_r, 1) == b"t"
        (pid,) = workers.pids
        workers.close()
        assert host.exits == [(pid, 0)]


class TestCapacity:
    def test_at_max_children_it_offers_the_children_s_pidfds(self, block: int, cleanup: list[ChildWorkers[str]]) -> None:
        """Full: capacity() gives a pidfd per child, which turns readable when that child exits."""
        host = FakeHost(lambda request: os.read(block, 1))
        workers = ChildWorkers(host, 2, True)
        cleanup.append(workers)
        assert workers.capacity() is None
        workers.dispatch("slow")
        workers.dispatch("slow")
        fds = workers.capacity()
        assert fds is not None and len(fds) == 2
        ready, _, _ = select.select(list(fds), [], [], 0)
        assert ready == []
        for pid in list(workers.pids):
            os.kill(pid, signal.SIGKILL)
        wait_exited(set(workers.pids))
        assert workers.capacity() is None  # reaped on the way
        assert sorted(status for _, status in host.exits) == [-signal.SIGKILL, -signal.SIGKILL]


class TestWithoutHost:
    """No host: the owner forks (fork()), handles the request in the child itself and leaves (exit())."""

    def test_the_owner_runs_on_in_the_child_and_the_workers_reap_it(
        self, pipe: tuple[int, int], cleanup: list[ChildWorkers[str]]
    ) -> None:
        r, w = pipe
        workers: ChildWorkers[str] = ChildWorkers(None, 8, True, report_exits=False, close_inherited=False)
        cleanup.append(workers)
        if workers.fork():
            try:
                os.write(w, b"child %d" % os.getpid())
            finally:
                workers.exit(3)
        (pid,) = workers.pids
        assert read_exactly(r, len(b"child %d" % pid)) == b"child %d" % pid
        wait_exited({pid})
        workers.reap()
        assert workers.pids == set()
        assert_gone({pid})

    def test_without_a_host_dispatch_is_refused(self) -> None:
        workers: ChildWorkers[str] = ChildWorkers(None, 8, True, report_exits=False, close_inherited=False)
        with pytest.raises(TypeError, match="no host"):
            workers.dispatch("a")
        assert workers.pids == set()

    @pytest.mark.parametrize(("report_exits", "close_inherited"), [(True, False), (False, True)])
    def test_without_a_host_what_needs_one_is_refused(self, report_exits: bool, close_inherited: bool) -> None:
        with pytest.raises(ValueError, match=f"report_exits={report_exits!r} and close_inherited={close_inherited!r}"):
            ChildWorkers(None, 8, True, report_exits=report_exits, close_inherited=close_inherited)
