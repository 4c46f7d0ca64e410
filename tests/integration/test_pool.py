"""The pooled dispatcher: bounded threads, a full pool stops accepting, failures, close, no leaks.

Every wait is bounded (TIMEOUT) and waits for an event or a condition, never
a sleep.  "The server did not accept" is observed, not guessed: the loop asks
the workers' capacity before each of its waits, so after K more "full"
answers the loop has waited K times with its listener left out, and the
kernel's accept queue (TCP_INFO of the listening socket, on Linux) holds the
clients that were not accepted.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import sys
import threading
import collections
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Generic, TypeVar

import pytest

from servekit import Datagram, Event, Pooled, ServerClosedError, StreamConnection, WorkerHost, Workers, pooled, server
from servekit import tcp, udp
from servekit._runtime.pool import PoolWorkers
from servekit.testing import serving

TIMEOUT = 10.0

#: How many of the loop's waits with the listener left out make "it did not accept".
WAITS = 5

_R = TypeVar("_R")


# -- what the tests watch ----------------------------------------------------------------


class Watched:
    """A pooled dispatcher whose pool the test can see, and whose capacity answers it counts."""

    def __init__(self, dispatcher: Pooled) -> None:
        self._dispatcher = dispatcher
        self._cond = threading.Condition()
        self.full = 0  # capacity() answers "no room"
        self.closing = threading.Event()
        self.threads: Callable[[], list[threading.Thread]] = list

    def start(self, host: WorkerHost[_R], /) -> Workers[_R]:
        pool = self._dispatcher.start(host)
        assert isinstance(pool, PoolWorkers)
        self.threads = pool.threads
        return _WatchedWorkers(pool, self)

    def answered(self, room: bool) -> None:
        if not room:
            with self._cond:
                self.full += 1
                self._cond.notify_all()

    def wait_full(self, more: int = WAITS) -> None:
        """Wait until the loop has been told "full" *more* more times (and waited after each)."""
        with self._cond:
            target = self.full + more
            assert self._cond.wait_for(lambda: self.full >= target, TIMEOUT), f"full {self.full} < {target}"


class _WatchedWorkers(Generic[_R]):
    def __init__(self, inner: Workers[_R], watch: Watched) -> None:
        self._inner = inner
        self._watch = watch

    def dispatch(self, request: _R, /) -> None:
        self._inner.dispatch(request)

    def capacity(self) -> Sequence[int] | None:
        answer = self._inner.capacity()
        self._watch.answered(answer is None)
        return answer

    def service_actions(self) -> None:
        self._inner.service_actions()

    def close(self) -> None:
        self._watch.closing.set()
        self._inner.close()


class Counter:
    """A count that can be waited for (accepted connections, via ``verify``)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.value = 0

    def admit(self, address: object) -> bool:
        with self._cond:
            self.value += 1
            self._cond.notify_all()
        return True

    def wait_for(self, value: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.value >= value, TIMEOUT), f"{self.value} < {value}"


class Held:
    """Handlers that hold their connection until their gate opens; counts how many run at once."""

    def __init__(self, clients: int) -> None:
        self._cond = threading.Condition()
        self.gates = [threading.Event() for _ in range(clients)]
        self.running = 0
        self.most = 0
        self.started: list[int] = []
        self.threads: set[str] = set()

    def handle(self, conn: StreamConnection) -> None:
        index = int(conn.rfile.readline())
        with self._cond:
            self.running += 1
            self.most = max(self.most, self.running)
            self.started.append(index)
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()
        try:
            assert self.gates[index].wait(TIMEOUT), f"client {index} was never released"
            conn.wfile.write(b"ok %d\n" % index)
        finally:
            with self._cond:
                self.running -= 1
                self._cond.notify_all()

    def wait_until(self, predicate: Callable[[], bool]) -> None:
        with self._cond:
            assert self._cond.wait_for(predicate, TIMEOUT), f"running {self.running}, started {self.started}"

    def release_all(self) -> None:
        for gate in self.gates:
            gate.set()


@contextmanager
def clients(address: tuple[str, int], count: int, first: int = 0) -> Iterator[list[socket.socket]]:
    """*count* connected clients, each having sent its index as a line."""
    socks: list[socket.socket] = []
    try:
        for index in range(first, first + count):
            sock = socket.create_connection(address, timeout=TIMEOUT)
            socks.append(sock)
            sock.sendall(b"%d\n" % index)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def answer(sock: socket.socket) -> bytes:
    """Everything until EOF (a reset fails the test)."""
    chunks = []
    while chunk := sock.recv(1024):
        chunks.append(chunk)
    return b"".join(chunks)


def backlog(fd: int) -> int | None:
    """Connections waiting in the kernel's accept queue of the listening socket *fd* (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    with socket.socket(fileno=os.dup(fd)) as sock:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    # struct tcp_info: 8 one-byte fields, then rto, ato, snd_mss, rcv_mss,
    # unacked -- which for a listener is the accept queue's length.
    waiting: int = struct.unpack_from("I", info, 24)[0]
    return waiting


def pool_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("servekit-pool-")]


# -- bounded threads, a full pool stops accepting ----------------------------------------


class TestBounded:
    def test_threads_stay_bounded_and_the_rest_wait_in_the_backlog(self) -> None:
        """4 workers, 50 connections held open: 4 run, 4 are queued, 42 wait unaccepted; all answered."""
        held, accepted, watch = Held(50), Counter(), Watched(pooled(workers=4))
        threads_before = threading.active_count()
        srv = server(tcp("127.0.0.1", 0), held.handle, dispatcher=watch, verify=accepted.admit)
        with serving(srv.bind(), poll_interval=0.01) as bound, clients(bound.address, 50) as socks:
            held.wait_until(lambda: held.running == 4)
            accepted.wait_for(8)
            watch.wait_full()
            assert accepted.value == 8  # 4 running and 4 queued, after the loop waited 5 times
            assert held.running == 4
            assert backlog(bound.fileno()) in (42, None)
            assert len(watch.threads()) == 4
            # The pool, the serving thread: no thread per connection.
            assert threading.active_count() == threads_before + 4 + 1
            held.release_all()
            assert [answer(sock) for sock in socks] == [b"ok %d\n" % i for i in range(50)]
        assert held.most == 4
        assert sorted(held.started) == list(range(50))
        assert len(held.threads) == 4

    def test_a_full_pool_accepts_again_when_a_slot_frees(self) -> None:
        """2 workers, queue 1: the 4th and 5th clients wait unaccepted until a handler ends."""
        held, accepted, watch = Held(5), Counter(), Watched(pooled(workers=2, queue=1))
        srv = server(tcp("127.0.0.1", 0), held.handle, dispatcher=watch, verify=accepted.admit)
        with serving(srv.bind(), poll_interval=0.01) as bound, clients(bound.address, 3) as first:
            held.wait_until(lambda: sorted(held.started) == [0, 1])
            accepted.wait_for(3)
            watch.wait_full()
            with clients(bound.address, 2, first=3) as later:
                watch.wait_full()
                assert accepted.value == 3
                assert backlog(bound.fileno()) in (2, None)
                held.gates[0].set()  # a slot frees: client 2 leaves the queue, client 3 is accepted
                assert answer(first[0]) == b"ok 0\n"
                held.wait_until(lambda: sorted(held.started) == [0, 1, 2])
                accepted.wait_for(4)
                watch.wait_full()
                assert accepted.value == 4
                assert backlog(bound.fileno()) in (1, None)
                held.release_all()
                assert [answer(sock) for sock in first[1:] + later] == [b"ok %d\n" % i for i in range(1, 5)]
        assert held.most == 2

    def test_a_worker_wakes_the_waiting_loop_at_once(self) -> None:
        """With a 60 s poll interval only the pool's fd can wake the loop to accept again."""
        held, accepted = Held(3), Counter()
        srv = server(tcp("127.0.0.1", 0), held.handle, dispatcher=pooled(workers=1, queue=1), verify=accepted.admit)
        with serving(srv.bind(), poll_interval=60) as bound, clients(bound.address, 3) as socks:
            held.wait_until(lambda: held.started == [0])
            accepted.wait_for(2)
            held.gates[0].set()
            assert answer(socks[0]) == b"ok 0\n"
            accepted.wait_for(3)  # well before the loop's next timeout
            held.release_all()
            assert [answer(sock) for sock in socks[1:]] == [b"ok 1\n", b"ok 2\n"]


class TestDatagrams:
    def test_udp_through_the_pool(self) -> None:
        """Datagrams from several senders are answered, by the pool's threads."""
        seen: set[str] = set()

        def pong(dg: Datagram) -> None:
            seen.add(threading.current_thread().name)
            dg.reply(dg.data.upper())

        with serving(server(udp("127.0.0.1", 0), pong, dispatcher=pooled(workers=3)).bind(), poll_interval=0.01) as bound:
            senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
            try:
                for round_ in range(25):
                    for number, sock in enumerate(senders):
                        sock.settimeout(TIMEOUT)
                        sock.sendto(b"d%d-%d" % (number, round_), bound.address)
                    for number, sock in enumerate(senders):
                        assert sock.recv(64) == b"D%d-%d" % (number, round_)
            finally:
                for sock in senders:
                    sock.close()
        assert seen and all(name.startswith("servekit-pool-") for name in seen)
        assert len(seen) <= 3


# -- failures ------------------------------------------------------------------------------


class Host:
    """A WorkerHost for a pool driven directly: requests are names; "exit" raises SystemExit."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.gate = threading.Event()
        self.ran: list[str] = []
        self.running = 0
        self.dropped: list[str] = []
        self.failures: list[BaseException] = []

    def run(self, request: str, /) -> None:
        if request == "exit":
            raise SystemExit(3)
        with self._cond:
            self.running += 1
            self._cond.notify_all()
        try:
            assert self.gate.wait(TIMEOUT)
        finally:
            with self._cond:
                self.running -= 1
                self.ran.append(request)
                self._cond.notify_all()

    def discard(self, request: str, /) -> None:
        raise AssertionError("a pool never hands a request to another process")

    def drop(self, request: str, /) -> None:
        self.dropped.append(request)

    def close_inherited(self) -> None:
        raise AssertionError("a pool never forks")

    def child_exited(self, pid: int, status: int, /) -> None:
        raise AssertionError("a pool has no children")

    def worker_failed(self, exc: BaseException, /) -> None:
        with self._cond:
            self.failures.append(exc)
            self._cond.notify_all()

    def wait_until(self, predicate: Callable[[], bool]) -> None:
        with self._cond:
            assert self._cond.wait_for(predicate, TIMEOUT), f"ran {self.ran}, running {self.running}"


def readable(fd: int, timeout: float = 0.0) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


class TestPoolWorkers:
    def test_a_failed_worker_is_reported_and_replaced(self) -> None:
        host = Host()
        pool = PoolWorkers(host, 3, 3, True)
        try:
            before = pool.threads()
            assert len(before) == 3
            pool.dispatch("exit")
            host.wait_until(lambda: len(host.failures) == 1)
            [exc] = host.failures
            assert isinstance(exc, SystemExit) and exc.code == 3
            after = pool.threads()
            assert len(after) == 3
            [failed] = set(before) - set(after)
            [successor] = set(after) - set(before)
            assert successor.name.startswith("servekit-pool-")
            failed.join(TIMEOUT)
            assert not failed.is_alive()
            # Still three workers: three requests run at once.
            for name in "abc":
                pool.dispatch(name)
            host.wait_until(lambda: host.running == 3)
        finally:
            host.gate.set()
            pool.close()
        assert sorted(host.ran) == ["a", "b", "c"]
        assert pool.threads() == []
        assert not any(t.is_alive() for t in before + after)

    def test_the_full_signal_is_set_by_a_worker_and_emptied_before_room_is_reported(self) -> None:
        host = Host()
        pool = PoolWorkers(host, 1, 2, True)
        try:
            assert pool.capacity() is None
            pool.dispatch("a")
            host.wait_until(lambda: host.running == 1)
            pool.dispatch("b")
            assert pool.capacity() is None  # one queued, room for one more
            pool.dispatch("c")
            [fd] = pool.capacity() or [-1]
            assert fd >= 0 and not readable(fd)
            assert list(pool.capacity() or ()) == [fd]  # asked again: the same fd
            host.gate.set()  # the worker finishes "a" and takes "b" off the full queue
            assert readable(fd, TIMEOUT)
            assert pool.capacity() is None
            assert not readable(fd)  # emptied: a later full pool does not wake the loop at once
        finally:
            host.gate.set()
            pool.close()
        assert host.ran == ["a", "b", "c"]

    def test_close_without_block_drops_what_is_queued(self) -> None:
        host = Host()
        pool = PoolWorkers(host, 1, 3, False)
        threads = pool.threads()
        try:
            pool.dispatch("a")
            host.wait_until(lambda: host.running == 1)
            pool.dispatch("b")
            pool.dispatch("c")
            pool.close()
            pool.close()
            assert host.dropped == ["b", "c"]
            assert host.ran == []  # "a" still runs: not waited for
        finally:
            host.gate.set()
        for thread in threads:
            thread.join(TIMEOUT)
        assert host.ran == ["a"]


class TestServerFailures:
    @pytest.mark.parametrize("exc_type", [SystemExit, KeyboardInterrupt])
    def test_propagates_from_serve_forever_and_closes(self, exc_type: type[BaseException]) -> None:
        """As with threaded(): the server stops, closes, and serve_forever raises it."""

        def quit_now(conn: StreamConnection) -> None:
            raise exc_type

        watch = Watched(pooled(workers=2))
        bound = server(tcp("127.0.0.1", 0), quit_now, dispatcher=watch).bind()
        port = bound.port
        raised: list[BaseException] = []

        def run() -> None:
            try:
                bound.serve_forever(poll_interval=60)
            except BaseException as exc:
                raised.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as client:
            assert answer(client) == b""
        thread.join(TIMEOUT)
        assert not thread.is_alive()
        assert [type(exc) for exc in raised] == [exc_type]
        assert bound.closed
        assert watch.threads() == []  # closed with the server, joined
        assert pool_threads() == []
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
        with pytest.raises(ServerClosedError):
            bound.serve_forever()


# -- close ------------------------------------------------------------------------------------


class TestClose:
    def test_block_on_close_finishes_running_and_queued_requests(self) -> None:
        held, watch = Held(4), Watched(pooled(workers=2, queue=2))
        bound = server(tcp("127.0.0.1", 0), held.handle, dispatcher=watch).bind()
        with serving(bound, poll_interval=0.01), clients(bound.address, 4) as socks:
            held.wait_until(lambda: held.running == 2)
            watch.wait_full(1)  # two more accepted and queued
            threads = watch.threads()
            closer = threading.Thread(target=bound.close)
            closer.start()
            assert watch.closing.wait(TIMEOUT)
            assert closer.is_alive()  # no handler can end before its gate opens
            held.release_all()
            closer.join(TIMEOUT)
            assert not closer.is_alive()
            assert not any(t.is_alive() for t in threads)
            assert [answer(sock) for sock in socks] == [b"ok %d\n" % i for i in range(4)]
        bound.close()  # idempotent
        assert sorted(held.started) == [0, 1, 2, 3]

    def test_without_block_on_close_queued_connections_are_closed_unanswered(self) -> None:
        held, watch = Held(4), Watched(pooled(workers=2, queue=2, block_on_close=False))
        bound = server(tcp("127.0.0.1", 0), held.handle, dispatcher=watch).bind()
        with clients(bound.address, 4) as socks:
            with serving(bound, poll_interval=0.01):
                held.wait_until(lambda: held.running == 2)
                watch.wait_full(1)
                threads = watch.threads()
            assert bound.closed  # close() returned with two handlers still running
            assert held.running == 2
            for sock in socks[2:]:  # dropped: closed by the server, never handled
                try:
                    assert answer(sock) == b""
                except ConnectionResetError:
                    pass  # closed with the client's line unread: a reset is fine
            held.release_all()
            assert [answer(sock) for sock in socks[:2]] == [b"ok 0\n", b"ok 1\n"]
            for thread in threads:
                thread.join(TIMEOUT)
        assert sorted(held.started) == [0, 1]


# -- options ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"workers": 0}, ValueError, "workers must be >= 1, got 0"),
        ({"workers": 2.5}, TypeError, "workers must be an int, got float 2.5"),
        ({"workers": True}, TypeError, "workers must be an int, got bool True"),
        ({"queue": 0}, ValueError, "queue must be >= 1, got 0"),
        ({"queue": "8"}, TypeError, "queue must be an int or None, got str '8'"),
        ({"block_on_close": "yes"}, TypeError, "block_on_close must be a bool, got str 'yes'"),
    ],
)
def test_options_are_validated(options: dict[str, object], error: type[Exception], message: str) -> None:
    with pytest.raises(error) as info:
        pooled(**options)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_defaults() -> None:
    assert pooled() == Pooled(workers=16, queue=None, block_on_close=True)
    assert pooled is Pooled
    host = Host()
    pool = pooled(workers=3).start(host)
    try:
        assert isinstance(pool, PoolWorkers)
        assert (pool.size, pool.limit, pool.block_on_close) == (3, 3, True)
        names = [t.name for t in pool.threads()]
        assert len(names) == 3 and all(name.startswith("servekit-pool-") for name in names)
    finally:
        pool.close()


# -- no leaks -------------------------------------------------------------------------------


def test_twenty_thousand_requests_leave_nothing_behind() -> None:
    """One connection per request, 4 clients at once, through 4 workers; the fixture checks fds and threads.

    Every request is seen once by each kind of event, and stats() agrees.
    """
    requests, client_threads = 20_000, 4
    most_threads = 0
    lock = threading.Lock()
    seen: collections.Counter[str] = collections.Counter()

    def on_event(event: Event) -> None:
        with lock:
            seen[type(event).__name__] += 1

    def echo(conn: StreamConnection) -> None:
        nonlocal most_threads
        conn.socket.sendall(conn.socket.recv(64))
        count = threading.active_count()
        if count > most_threads:
            with lock:
                most_threads = max(most_threads, count)

    failures: list[BaseException] = []
    threads_before = threading.active_count()
    fds_before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    spec = server(tcp("127.0.0.1", 0), echo, dispatcher=pooled(workers=4), on_event=on_event)
    with serving(spec.bind(), poll_interval=0.01) as bound:

        def client(count: int) -> None:
            try:
                for i in range(count):
                    with socket.create_connection(bound.address, timeout=TIMEOUT) as sock:
                        sock.sendall(b"%d" % i)
                        assert answer(sock) == b"%d" % i
            except BaseException as exc:  # reported by the test thread
                failures.append(exc)

        workers = [threading.Thread(target=client, args=(requests // client_threads,)) for _ in range(client_threads)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join(60)
        assert not any(thread.is_alive() for thread in workers)
    assert failures == []
    stats = bound.stats()  # the server has stopped: its books are final
    assert seen == {kind: requests for kind in ("Accepted", "HandlerStarted", "HandlerFinished", "ConnectionClosed")}
    assert stats.connections_accepted_total == stats.connections_closed_total == requests
    assert stats.handler_duration_seconds_count == requests and stats.handler_errors_total == 0
    assert stats.connections_active == 0 and stats.connections_rejected_total == 0
    # The pool (4), the serving thread and the clients: never a thread per request.
    assert most_threads <= threads_before + 4 + 1 + client_threads
    assert pool_threads() == []
    if fds_before is not None:
        assert len(os.listdir("/proc/self/fd")) == fds_before
