"""ChildWorkers: the host's child_exited, terminate(grace) and default_sigterm, with real forks."""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

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

    def __init__(self, behaviour: Callable[[str], None]) -> None:
        self._behaviour = behaviour
        self.discarded: list[str] = []
        self.exits: list[tuple[str, int]] = []

    def run(self, request: str, /) -> None:
        self._behaviour(request)

    def discard(self, request: str, /) -> None:
        self.discarded.append(request)

    def close_inherited(self) -> None:
        pass

    def worker_failed(self, exc: BaseException, /) -> None:
        raise exc

    def child_exited(self, request: str, status: int) -> None:
        self.exits.append((request, status))


class SilentHost:
    """A host without child_exited, as servekit.classic's is."""

    def run(self, request: str, /) -> None:
        pass

    def discard(self, request: str, /) -> None:
        pass

    def close_inherited(self) -> None:
        pass

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


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def start(host: FakeHost | SilentHost, *, default_sigterm: bool = False) -> ChildWorkers[str]:
    return ChildWorkers(host, 8, True, default_sigterm=default_sigterm)


@pytest.fixture
def cleanup() -> Iterator[list[ChildWorkers[str]]]:
    """Workers put here have every child killed and reaped at teardown, whatever the test did."""
    made: list[ChildWorkers[str]] = []
    yield made
    for workers in made:
        workers.terminate(0)


class TestChildExited:
    def test_normal_exit_reported_once_with_status_0(self, cleanup: list[ChildWorkers[str]]) -> None:
        """A child whose route returns is reported once, with its request and status 0."""
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
        assert host.exits == [("a", 0)]
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
        wait_exited(set(workers.pids))
        workers.reap()
        assert host.exits == [("b", 1)]

    def test_killed_child_has_negative_status(self, cleanup: list[ChildWorkers[str]]) -> None:
        """A child ended by a signal is reported with minus the signal's number."""
        host = FakeHost(lambda request: os.kill(os.getpid(), signal.SIGKILL))
        workers = start(host)
        cleanup.append(workers)
        workers.dispatch("c")
        workers.reap(block=True)
        assert host.exits == [("c", -signal.SIGKILL)]

    def test_each_request_is_matched_to_its_child(self) -> None:
        """Several children, each exit reported with the request that child handled."""
        codes = {"zero": 0, "three": 3, "five": 5}

        def leave(request: str) -> None:
            os._exit(codes[request])

        host = FakeHost(leave)
        workers = start(host)
        for request in codes:
            workers.dispatch(request)
        workers.close()  # block_on_close: waits for them all
        assert sorted(host.exits) == sorted(codes.items())

    def test_child_reaped_elsewhere_is_reported_with_status_0(self) -> None:
        """Another part of the program reaped the child first: its status is lost, 0 is reported."""
        host = FakeHost(lambda request: os._exit(7))
        workers = start(host)
        workers.dispatch("d")
        (pid,) = workers.pids
        os.waitpid(pid, 0)
        workers.reap()
        assert host.exits == [("d", 0)]
        assert workers.pids == set()

    def test_pid_not_forked_here_is_reaped_without_a_call(self) -> None:
        """A pid put into ``pids`` from outside (classic's adopted set) is reaped, not reported."""
        host = FakeHost(lambda request: None)
        workers = start(host)
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        workers.pids.add(pid)
        wait_exited({pid})
        workers.reap()
        assert host.exits == []
        assert workers.pids == set()
        assert_gone({pid})

    def test_host_without_child_exited_keeps_no_request(self) -> None:
        """With no child_exited (servekit.classic), the parent holds no reference to the requests."""
        workers = start(SilentHost())
        workers.dispatch("e")
        assert workers._requests == {}
        workers.close()
        assert workers.pids == set()


class TestTerminate:
    def test_no_children(self) -> None:
        """With no child running it returns [] at once."""
        workers = start(FakeHost(lambda request: None))
        assert workers.terminate(TIMEOUT) == []

    def test_blocked_children_end_on_sigterm(
        self, pipe: tuple[int, int], block: int, cleanup: list[ChildWorkers[str]]
    ) -> None:
        """Children blocked on a read die of SIGTERM well within the grace; nothing is left behind."""
        ready_r, ready_w = pipe

        def wait(request: str) -> None:
            os.write(ready_w, b"+")
            os.read(block, 1)  # never returns: the child holds the write end too

        host = FakeHost(wait)
        fds = fd_count()
        workers = start(host)
        cleanup.append(workers)
        for request in ("x", "y", "z"):
            workers.dispatch(request)
        read_exactly(ready_r, 3)
        pids = set(workers.pids)
        began = time.monotonic()
        killed = workers.terminate(TIMEOUT)
        elapsed = time.monotonic() - began
        assert killed == []
        # Woken by the exits, not by the end of the grace.
        assert elapsed < TIMEOUT / 2
        assert sorted(host.exits) == [(r, -signal.SIGTERM) for r in ("x", "y", "z")]
        assert workers.pids == set()
        assert_gone(pids)
        assert fd_count() == fds  # no pidfd is left open

    def test_child_ignoring_sigterm_is_killed_after_grace(
        self, pipe: tuple[int, int], block: int, cleanup: list[ChildWorkers[str]]
    ) -> None:
        """A child that ignores SIGTERM is SIGKILLed once the grace is over and returned in the list."""
        ready_r, ready_w = pipe

        def stubborn(request: str) -> None:
            if request == "stubborn":
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.write(ready_w, b"+")
            os.read(block, 1)

        host = FakeHost(stubborn)
        fds = fd_count()
        workers = start(host)
        cleanup.append(workers)
        workers.dispatch("stubborn")
        (stubborn_pid,) = workers.pids
        workers.dispatch("meek")
        read_exactly(ready_r, 2)
        pids = set(workers.pids)
        grace = 0.3
        began = time.monotonic()
        killed = workers.terminate(grace)
        assert time.monotonic() - began >= grace
        assert killed == [stubborn_pid]
        assert sorted(host.exits) == [("meek", -signal.SIGTERM), ("stubborn", -signal.SIGKILL)]
        assert workers.pids == set()
        assert_gone(pids)
        assert fd_count() == fds

    def test_without_pidfds_it_checks_by_waitpid(
        self, pipe: tuple[int, int], block: int, monkeypatch: pytest.MonkeyPatch, cleanup: list[ChildWorkers[str]]
    ) -> None:
        """Where there are no pidfds, the same outcome through short waitpid checks."""
        ready_r, ready_w = pipe

        def stubborn(request: str) -> None:
            if request == "stubborn":
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            os.write(ready_w, b"+")
            os.read(block, 1)

        host = FakeHost(stubborn)
        workers = start(host)
        cleanup.append(workers)
        workers.dispatch("stubborn")
        (stubborn_pid,) = workers.pids
        workers.dispatch("meek")
        read_exactly(ready_r, 2)
        pids = set(workers.pids)
        fds = fd_count()
        monkeypatch.delattr(os, "pidfd_open")
        killed = workers.terminate(0.3)
        monkeypatch.undo()
        assert killed == [stubborn_pid]
        assert sorted(host.exits) == [("meek", -signal.SIGTERM), ("stubborn", -signal.SIGKILL)]
        assert workers.pids == set()
        assert_gone(pids)
        assert fd_count() == fds

    def test_grace_must_be_a_non_negative_number(self) -> None:
        workers = start(FakeHost(lambda request: None))
        with pytest.raises(ValueError, match="grace must be a number of seconds >= 0, not -1"):
            workers.terminate(-1)
        with pytest.raises(ValueError, match="not nan"):
            workers.terminate(float("nan"))


class TestDefaultSigterm:
    @pytest.fixture
    def python_sigterm_handler(self) -> Iterator[list[int]]:
        """A Python SIGTERM handler in this process (as servekit.run() installs), restored afterwards."""
        calls: list[int] = []

        def handler(signum: int, frame: FrameType | None) -> None:
            calls.append(signum)

        previous = signal.signal(signal.SIGTERM, handler)
        try:
            yield calls
        finally:
            signal.signal(signal.SIGTERM, previous)

    @pytest.mark.parametrize(("default_sigterm", "status"), [(True, -signal.SIGTERM), (False, -signal.SIGKILL)])
    def test_parent_handler_is_reset_in_the_child(
        self,
        default_sigterm: bool,
        status: int,
        python_sigterm_handler: list[int],
        pipe: tuple[int, int],
        block: int,
        cleanup: list[ChildWorkers[str]],
    ) -> None:
        """With default_sigterm the child dies of SIGTERM; without, the inherited handler keeps it alive."""
        ready_r, ready_w = pipe

        def wait(request: str) -> None:
            os.write(ready_w, b"+")
            os.read(block, 1)  # the inherited handler only interrupts it, and the read goes on

        host = FakeHost(wait)
        workers = start(host, default_sigterm=default_sigterm)
        cleanup.append(workers)
        workers.dispatch("w")
        (pid,) = workers.pids
        read_exactly(ready_r, 1)
        killed = workers.terminate(0.3 if status == -signal.SIGKILL else TIMEOUT)
        assert killed == ([] if default_sigterm else [pid])
        assert host.exits == [("w", status)]
        assert python_sigterm_handler == []  # the parent itself was not signalled

    def test_forked_from_another_thread(
        self, python_sigterm_handler: list[int], pipe: tuple[int, int], block: int, cleanup: list[ChildWorkers[str]]
    ) -> None:
        """The reset works in a child forked by a thread other than the main one (the serving thread)."""
        ready_r, ready_w = pipe

        def wait(request: str) -> None:
            os.write(ready_w, b"+")
            os.read(block, 1)

        host = FakeHost(wait)
        workers = start(host, default_sigterm=True)
        cleanup.append(workers)
        thread = threading.Thread(target=workers.dispatch, args=("t",))
        thread.start()
        thread.join(TIMEOUT)
        assert not thread.is_alive()
        read_exactly(ready_r, 1)
        assert workers.terminate(TIMEOUT) == []
        assert host.exits == [("t", -signal.SIGTERM)]
