"""The serve loop over many sources: intake, watched sources (read and write), timers, both kinds of run.

Every case runs with each poller the loop's private switch offers: ``poll``
throughout, ``epoll`` from the start (where the platform has it), and the
default (``poll``, moving to ``epoll`` once a run waits on many fds).
"""

from __future__ import annotations

import collections
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import pytest

from servekit._runtime.loop import Loop, Run

TIMEOUT = 10.0

#: A wait that is expected to run out: bounded, and only ever a negative check.
SHORT = 0.05

POLLERS = [pytest.param(False, id="poll"), pytest.param(None, id="default")]
if hasattr(select, "epoll"):
    POLLERS.append(pytest.param(True, id="epoll"))

LINUX = sys.platform.startswith("linux")

Callback = Callable[[], object]


class Owner:
    def __init__(
        self,
        intake: dict[int, Callback],
        epoll: bool | None = None,
        settled: Callable[[], bool] | None = None,
    ) -> None:
        self.intake = intake
        self.settled = settled
        self.loop = Loop(self, epoll=epoll)

    def loop_run(self) -> Run:
        return Run(self.intake, lambda: None, None, settled=self.settled)


@pytest.fixture(params=POLLERS)
def epoll(request: pytest.FixtureRequest) -> bool | None:
    """Which poller the loops of a test wait with (the loop's private switch)."""
    chosen: bool | None = request.param
    return chosen


@contextmanager
def serving(loop: Loop, poll_interval: float = 0.5) -> Iterator[threading.Thread]:
    thread = threading.Thread(target=loop.serve_forever, args=(poll_interval,))
    thread.start()
    try:
        yield thread
    finally:
        loop.shutdown(loop.serve_forever)  # (stops it too if it has not started yet)
        thread.join(TIMEOUT)
        assert not thread.is_alive()


def readable_pair() -> tuple[socket.socket, socket.socket]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    return ours, theirs


def fill(sock: socket.socket) -> int:
    """Fill *sock*'s send buffer (it is non-blocking) until it takes no more; how many bytes it took."""
    chunk = b"x" * 65536
    sent = 0
    while True:
        try:
            sent += sock.send(chunk)
        except BlockingIOError:
            return sent


def drain(sock: socket.socket, count: int) -> None:
    """Read *count* bytes off blocking *sock*."""
    while count:
        count -= len(sock.recv(min(count, 1 << 20)))


# -- intake ------------------------------------------------------------------------


def test_every_intake_source_is_served(epoll: bool | None) -> None:
    (a, a_peer), (b, b_peer) = readable_pair(), readable_pair()
    got: dict[str, bytes] = {}
    both = threading.Event()

    def take(name: str, sock: socket.socket) -> Callable[[], None]:
        def callback() -> None:
            got[name] = sock.recv(16)
            if len(got) == 2:
                both.set()

        return callback

    owner = Owner({a.fileno(): take("a", a), b.fileno(): take("b", b)}, epoll)
    with a, a_peer, b, b_peer, serving(owner.loop):
        a_peer.send(b"to a")
        b_peer.send(b"to b")
        assert both.wait(TIMEOUT)
    assert got == {"a": b"to a", "b": b"to b"}


def test_a_closed_intake_source_ends_the_run(epoll: bool | None) -> None:
    """Closing the listener under a running loop (classic server_close from another thread) ends it."""
    listener, peer = readable_pair()
    running = threading.Event()

    def on_listener() -> None:
        listener.recv(16)
        running.set()

    owner = Owner({listener.fileno(): on_listener}, epoll)
    # A close does not wake a wait blocked in another thread: the next one (every 0.05 s) sees it.
    thread = threading.Thread(target=owner.loop.serve_forever, args=(0.05,))
    with peer:
        thread.start()
        peer.send(b"x")
        assert running.wait(TIMEOUT)  # the loop waits on the listener now
        listener.close()
        thread.join(TIMEOUT)
        assert not thread.is_alive()


def test_a_closed_intake_source_ends_handle_request_at_once(epoll: bool | None) -> None:
    listener, peer = readable_pair()
    owner = Owner({listener.fileno(): lambda: None}, epoll)
    listener.close()
    with peer:
        started = time.monotonic()
        assert owner.loop.handle_request(None) is False  # no time limit: it does not wait at all
        assert owner.loop.handle_request(TIMEOUT) is False
        assert time.monotonic() - started < TIMEOUT


# -- handle_request ------------------------------------------------------------------


def test_handle_request_serves_watched_sources_and_timers(epoll: bool | None) -> None:
    """Before the intake fires, handle_request serves what is watched and the timers that are due."""
    (listener, listener_peer), (watched, watched_peer) = readable_pair(), readable_pair()
    calls: list[str] = []

    def on_listener() -> None:
        calls.append("intake " + listener.recv(16).decode())

    def on_watched() -> None:
        calls.append("watched " + watched.recv(16).decode())
        listener_peer.send(b"new")  # the intake fires only now

    owner = Owner({listener.fileno(): on_listener}, epoll)
    loop = owner.loop
    with listener, listener_peer, watched, watched_peer:
        loop.watch(watched.fileno(), on_watched)
        loop.call_at(time.monotonic(), lambda: calls.append("timer"))
        watched_peer.send(b"w")
        assert loop.handle_request(TIMEOUT) is True
        assert calls == ["timer", "watched w", "intake new"]
        # A timer due later runs in a later run (of either kind).
        loop.call_at(time.monotonic() + SHORT, lambda: calls.append("later"))
        assert loop.handle_request(4 * SHORT) is False
        assert calls[-1] == "later"
        loop.unwatch(watched.fileno())


def test_handle_request_polls_the_intake_once_with_timeout_zero(epoll: bool | None) -> None:
    listener, peer = readable_pair()
    got: list[bytes] = []
    owner = Owner({listener.fileno(): lambda: got.append(listener.recv(16))}, epoll)
    with listener, peer:
        assert owner.loop.handle_request(0) is False
        peer.send(b"x")
        assert owner.loop.handle_request(0) is True
        assert got == [b"x"]


def test_handle_request_waits_until_settled(epoll: bool | None) -> None:
    """After the intake fires, handle_request returns once the owner says the loop's side is settled."""
    (listener, listener_peer), (parked, parked_peer) = readable_pair(), readable_pair()
    calls: list[str] = []

    def on_parked() -> None:
        calls.append("parked " + parked.recv(16).decode())
        owner.loop.unwatch(parked.fileno())

    def on_listener() -> None:
        calls.append("intake " + listener.recv(16).decode())
        owner.loop.watch(parked.fileno(), on_parked)

    def settled() -> bool:
        return len(calls) == 2

    owner = Owner({listener.fileno(): on_listener}, epoll, settled)
    with listener, listener_peer, parked, parked_peer:
        listener_peer.send(b"a")
        # Never settled in time: False, and the parked source is still watched.
        assert owner.loop.handle_request(SHORT) is False
        assert calls == ["intake a"]
        parked_peer.send(b"p")
        listener_peer.send(b"b")
        calls.clear()
        assert owner.loop.handle_request(TIMEOUT) is True
        assert sorted(calls) == ["intake b", "parked p"]


def test_handle_request_does_not_run_while_serve_forever_does(epoll: bool | None) -> None:
    listener, peer = readable_pair()
    inside: list[BaseException] = []
    called = threading.Event()

    def on_listener() -> None:
        listener.recv(16)
        try:
            owner.loop.handle_request(0)  # from inside a run: not re-entrant
        except RuntimeError as exc:
            inside.append(exc)
        called.set()

    owner = Owner({listener.fileno(): on_listener}, epoll)
    with listener, peer, serving(owner.loop):
        peer.send(b"x")
        assert called.wait(TIMEOUT)  # serve_forever runs now
        with pytest.raises(RuntimeError, match=r"serve_forever\(\) is already running"):
            owner.loop.handle_request(0)
    assert len(inside) == 1


def _epoll_fds() -> int:
    """How many epoll fds this process holds."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[eventpoll]"
        except OSError:  # closed meanwhile (listdir's own, say)
            pass
    return count


@pytest.mark.skipif(not LINUX, reason="counts /proc/self/fd")
def test_handle_request_holds_no_fd_of_its_own() -> None:
    """A handle_request on a few fds waits with poll and makes no wake-up pair: no fd per call."""
    listener, peer = readable_pair()
    during: list[int] = []
    owner = Owner({listener.fileno(): lambda: during.append(len(os.listdir("/proc/self/fd")))})
    with listener, peer:
        before = len(os.listdir("/proc/self/fd"))
        peer.send(b"x")
        assert owner.loop.handle_request(TIMEOUT) is True
    assert during == [before]


# -- watched sources ------------------------------------------------------------------


def test_sources_watched_during_a_run(epoll: bool | None) -> None:
    """A callback may watch another fd (a parked connection, say); unwatched, it is left alone."""
    (listener, listener_peer), (parked, parked_peer) = readable_pair(), readable_pair()
    calls: list[str] = []
    parked_seen, second = threading.Event(), threading.Event()

    def on_parked() -> None:
        calls.append(parked.recv(16).decode())
        owner.loop.unwatch(parked.fileno())
        parked_seen.set()

    def on_listener() -> None:
        calls.append(listener.recv(16).decode())
        if len(calls) == 1:
            owner.loop.watch(parked.fileno(), on_parked)
        else:
            second.set()

    owner = Owner({listener.fileno(): on_listener}, epoll)
    with listener, listener_peer, parked, parked_peer:
        with serving(owner.loop):
            parked_peer.send(b"early")  # not watched yet: it waits
            listener_peer.send(b"new")
            assert parked_seen.wait(TIMEOUT)
            parked_peer.send(b"late")  # unwatched again
            listener_peer.send(b"again")
            assert second.wait(TIMEOUT)
        assert calls == ["new", "early", "again"]
        assert parked.recv(16) == b"late"  # nobody read it


def test_sources_watched_between_runs_are_served_by_the_next(epoll: bool | None) -> None:
    """The loop keeps its watched sources between runs: before the first, after a shutdown, across kinds."""
    (listener, listener_peer), (a, a_peer), (b, b_peer) = readable_pair(), readable_pair(), readable_pair()
    seen: dict[str, threading.Event] = {"a": threading.Event(), "b": threading.Event()}
    got: list[str] = []

    def reader(name: str, sock: socket.socket) -> Callable[[], None]:
        def callback() -> None:
            got.append(name + " " + sock.recv(16).decode())
            seen[name].set()

        return callback

    owner = Owner({listener.fileno(): lambda: listener.recv(16)}, epoll)
    loop = owner.loop
    with listener, listener_peer, a, a_peer, b, b_peer:
        loop.watch(a.fileno(), reader("a", a))  # before the first run
        a_peer.send(b"1")
        with serving(loop):
            assert seen["a"].wait(TIMEOUT)
        loop.watch(b.fileno(), reader("b", b))  # between runs
        seen["a"].clear()
        a_peer.send(b"2")
        b_peer.send(b"1")
        with serving(loop):  # a shutdown lost no source
            assert seen["a"].wait(TIMEOUT)
            assert seen["b"].wait(TIMEOUT)
        b_peer.send(b"2")
        listener_peer.send(b"x")
        assert loop.handle_request(TIMEOUT) is True  # and handle_request serves them too
        assert sorted(got) == ["a 1", "a 2", "b 1", "b 2"]
        loop.unwatch(a.fileno())
        loop.unwatch(b.fileno())
        loop.unwatch(b.fileno())  # unknown fds are ignored


def test_write_interest(epoll: bool | None) -> None:
    """on_write fires once a full send buffer has room again; watch() again turns write interest off and on."""
    (listener, listener_peer), (ours, theirs) = readable_pair(), readable_pair()
    calls: list[str] = []

    def on_listener() -> None:
        listener.recv(16)

    def on_read() -> None:
        calls.append("read " + ours.recv(16).decode())
        listener_peer.send(b"x")

    def on_write() -> None:
        calls.append("write")
        owner.loop.watch(ours.fileno(), on_read)  # write interest off: the buffer has room now
        listener_peer.send(b"x")

    owner = Owner({listener.fileno(): on_listener}, epoll)
    loop = owner.loop
    with listener, listener_peer, ours, theirs:
        theirs.setblocking(True)
        sent = fill(ours)
        loop.watch(ours.fileno(), on_read, on_write)
        assert loop.handle_request(SHORT) is False  # full: not writable
        assert calls == []
        drain(theirs, sent)  # the peer reads: room again
        assert loop.handle_request(TIMEOUT) is True
        assert calls == ["write"]
        # Writable still, but write interest is off: only reads are served.
        theirs.send(b"r")
        assert loop.handle_request(TIMEOUT) is True
        assert calls == ["write", "read r"]
        assert loop.handle_request(SHORT) is False
        # On again (the read callback kept): writable, so it fires at once.
        loop.watch(ours.fileno(), on_read, on_write)
        assert loop.handle_request(TIMEOUT) is True
        assert calls == ["write", "read r", "write"]
        loop.unwatch(ours.fileno())


def test_a_callback_that_unwatches_its_own_fd(epoll: bool | None) -> None:
    """Readable and writable at once: a read callback that unwatches or re-watches its fd is obeyed at once."""
    (listener, listener_peer), (ours, theirs) = readable_pair(), readable_pair()
    calls: list[str] = []

    def old_write() -> None:
        calls.append("old write")

    def new_write() -> None:
        calls.append("new write")
        owner.loop.unwatch(ours.fileno())

    def unwatching_read() -> None:
        calls.append("read " + ours.recv(16).decode())
        owner.loop.unwatch(ours.fileno())
        listener_peer.send(b"x")

    def rewatching_read() -> None:
        calls.append("read " + ours.recv(16).decode())
        owner.loop.watch(ours.fileno(), None, new_write)
        listener_peer.send(b"x")

    owner = Owner({listener.fileno(): lambda: listener.recv(16)}, epoll)
    loop = owner.loop
    with listener, listener_peer, ours, theirs:
        theirs.send(b"1")  # readable, and writable (its send buffer is empty)
        loop.watch(ours.fileno(), unwatching_read, old_write)
        assert loop.handle_request(TIMEOUT) is True
        assert calls == ["read 1"]  # not the write callback of an fd no longer watched
        calls.clear()
        theirs.send(b"2")
        loop.watch(ours.fileno(), rewatching_read, old_write)
        assert loop.handle_request(TIMEOUT) is True
        assert calls == ["read 2", "new write"]  # the callback watched now, not the stale one


def test_an_fd_closed_while_watched_is_forgotten(epoll: bool | None) -> None:
    """An fd closed without unwatch() breaks no run: it is forgotten (poll reports it, epoll refuses it)."""
    (listener, listener_peer), (gone, gone_peer) = readable_pair(), readable_pair()
    owner = Owner({listener.fileno(): lambda: listener.recv(16)}, epoll)
    loop = owner.loop
    with listener, listener_peer, gone_peer:
        loop.watch(gone.fileno(), lambda: None)
        gone.close()
        listener_peer.send(b"x")
        assert loop.handle_request(TIMEOUT) is True
        listener_peer.send(b"y")
        assert loop.handle_request(TIMEOUT) is True
        loop.unwatch(gone.fileno())  # (forgotten already: nothing to do)


def test_many_sources_at_once(epoll: bool | None) -> None:
    """A few thousand sources, all ready at once: each is served exactly once."""
    count = 3000
    listener, listener_peer = readable_pair()
    served: collections.Counter[int] = collections.Counter()
    done = threading.Event()
    pairs: list[tuple[socket.socket, socket.socket]] = []

    def reader(sock: socket.socket) -> Callable[[], None]:
        def callback() -> None:
            fd = sock.fileno()
            served[fd] += 1
            if sock.recv(16) == b"x":
                loop.unwatch(fd)
            if len(served) == count:
                done.set()

        return callback

    def on_listener() -> None:
        listener.recv(16)
        for ours, _ in pairs[count // 2 :]:
            loop.watch(ours.fileno(), reader(ours))  # during the run

    owner = Owner({listener.fileno(): on_listener}, epoll)
    loop = owner.loop
    with ExitStack() as stack:
        for sock in (listener, listener_peer):
            stack.enter_context(sock)
        for _ in range(count):
            ours, theirs = readable_pair()
            stack.enter_context(ours)
            stack.enter_context(theirs)
            pairs.append((ours, theirs))
            theirs.send(b"x")
        for ours, _ in pairs[: count // 2]:
            loop.watch(ours.fileno(), reader(ours))  # before the run
        with serving(loop):
            listener_peer.send(b"go")
            assert done.wait(TIMEOUT)
        assert len(served) == count
        assert set(served.values()) == {1}


@pytest.mark.skipif(not (LINUX and hasattr(select, "epoll")), reason="looks for epoll fds in /proc/self/fd")
def test_a_run_moves_to_epoll_once_it_waits_on_many_fds() -> None:
    """By default a run waits with poll; a callback that watches many fds moves it to epoll, mid-run."""
    count = 50
    listener, listener_peer = readable_pair()
    pollers: list[int] = []
    served: collections.Counter[int] = collections.Counter()
    done = threading.Event()
    pairs: list[tuple[socket.socket, socket.socket]] = []

    def reader(sock: socket.socket) -> Callable[[], None]:
        def callback() -> None:
            if not served:
                pollers.append(_epoll_fds())  # after the move
            served[sock.fileno()] += 1
            sock.recv(16)
            loop.unwatch(sock.fileno())
            if len(served) == count:
                done.set()

        return callback

    def on_listener() -> None:
        listener.recv(16)
        pollers.append(_epoll_fds())  # before it
        for ours, _ in pairs:
            loop.watch(ours.fileno(), reader(ours))

    owner = Owner({listener.fileno(): on_listener})
    loop = owner.loop
    with ExitStack() as stack:
        for sock in (listener, listener_peer):
            stack.enter_context(sock)
        for _ in range(count):
            ours, theirs = readable_pair()
            stack.enter_context(ours)
            stack.enter_context(theirs)
            pairs.append((ours, theirs))
            theirs.send(b"x")
        before = _epoll_fds()
        with serving(loop):
            listener_peer.send(b"go")
            assert done.wait(TIMEOUT)
        assert pollers == [before, before + 1]
        assert set(served.values()) == {1}
        assert _epoll_fds() == before  # closed with the run


# -- bad input ------------------------------------------------------------------------


def test_watch_rejects_bad_input() -> None:
    owner = Owner({})
    with pytest.raises(ValueError, match=r"watch\(3\): no callback"):
        owner.loop.watch(3, None, None)
    with pytest.raises(ValueError, match=r"watch\(-1\)"):
        owner.loop.watch(-1, lambda: None)
    with pytest.raises(TypeError):  # a str is no fd
        owner.loop.watch("3", lambda: None)  # type: ignore[arg-type]


def test_epoll_switch_on_a_platform_without_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import servekit._runtime.loop as loop_module

    monkeypatch.setattr(loop_module, "HAVE_EPOLL", False)
    with pytest.raises(ValueError, match="epoll=True"):
        Loop(Owner({}), epoll=True)


def test_poll_and_epoll_bits_agree() -> None:
    """The loop speaks poll's bits to both pollers: epoll's must be the same numbers."""
    if not hasattr(select, "epoll"):
        pytest.skip("no epoll")
    assert (select.EPOLLIN, select.EPOLLOUT, select.EPOLLERR, select.EPOLLHUP) == (
        select.POLLIN,
        select.POLLOUT,
        select.POLLERR,
        select.POLLHUP,
    )
