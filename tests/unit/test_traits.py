"""``WorkerTraits``: what a kind of workers declares; ``accepts_per_wakeup`` sets how many connections a wake-up takes.

The workers here are written as a user writes them: public imports only
(``servekit``, ``servekit.abc``).  A server's ``handle_request()`` is one
wake-up of the loop, so the connections taken by each call show the batch,
on real loopback connections all waiting in the listen backlog first.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Generic, TypeVar

import pytest

from servekit import IPAddress, StreamConnection, server, tcp
from servekit.abc import WorkerHost, Workers, WorkerTraits
from servekit.framing import lines

TIMEOUT = 10.0

R = TypeVar("R")
Conn = StreamConnection[IPAddress]


class Counting:
    """Each request run at once on the loop's thread, counted; declares *traits* (``None``: nothing)."""

    def __init__(self, traits: WorkerTraits | None) -> None:
        self.traits = traits
        self.workers: list[CountingWorkers[object]] = []

    def start(self, host: WorkerHost[R], /) -> Workers[R]:
        workers = CountingWorkers(host) if self.traits is None else DeclaringWorkers(host, self.traits)
        self.workers.append(workers)  # type: ignore[arg-type]  # (counted, whatever their requests)
        return workers


class CountingWorkers(Generic[R]):
    def __init__(self, host: WorkerHost[R]) -> None:
        self.host = host
        self.dispatched = 0

    def dispatch(self, request: R, /) -> None:
        self.dispatched += 1
        self.host.run(request)

    def capacity(self) -> Sequence[int] | None:
        return None

    def service_actions(self) -> None:
        pass

    def close(self) -> None:
        pass


class DeclaringWorkers(CountingWorkers[R]):
    def __init__(self, host: WorkerHost[R], traits: WorkerTraits) -> None:
        super().__init__(host)
        self.traits = traits


@contextmanager
def waiting_clients(address: IPAddress, count: int) -> Iterator[None]:
    """*count* clients connected to *address*, all in its listen backlog (on loopback, connect() returns then)."""
    with ExitStack() as stack:
        for _ in range(count):
            stack.enter_context(socket.create_connection(address, timeout=TIMEOUT))
        yield


def taken_per_wakeup(traits: WorkerTraits | None, clients: int = 8, wakeups: int = 2) -> list[int]:
    """The requests dispatched after each of *wakeups* ``handle_request()`` calls, *clients* waiting."""
    dispatcher = Counting(traits)

    def handler(conn: Conn) -> None:
        pass

    with server(tcp("127.0.0.1", 0), handler, dispatcher=dispatcher).bind() as bound:
        (workers,) = dispatcher.workers
        with waiting_clients(bound.address, clients):
            seen = []
            for _ in range(wakeups):
                assert bound.handle_request()
                seen.append(workers.dispatched)
    return seen


class TestAcceptsPerWakeup:
    def test_the_default_is_one(self) -> None:
        """Declared or not, workers take one connection per wake-up unless they say otherwise."""
        assert WorkerTraits("threads").accepts_per_wakeup == 1
        assert WorkerTraits("loop", False, False).accepts_per_wakeup == 1

    def test_workers_that_declare_nothing_take_one_per_wakeup(self) -> None:
        """A user's workers without traits: one connection per wake-up."""
        assert taken_per_wakeup(None) == [1, 2]

    def test_declared_traits_without_it_take_one_per_wakeup(self) -> None:
        """Traits that leave it out: one connection per wake-up."""
        assert taken_per_wakeup(WorkerTraits("loop", capacity=False, service=False)) == [1, 2]

    def test_a_users_declared_batch_is_honoured(self) -> None:
        """``accepts_per_wakeup=4``: each wake-up takes four of the eight connections waiting."""
        traits = WorkerTraits("loop", capacity=False, service=False, accepts_per_wakeup=4)
        assert taken_per_wakeup(traits) == [4, 8]

    def test_a_batch_stops_when_the_backlog_is_empty(self) -> None:
        """A batch larger than the backlog takes what is there, and the wake-up ends."""
        traits = WorkerTraits("loop", capacity=False, service=False, accepts_per_wakeup=32)
        assert taken_per_wakeup(traits, clients=3, wakeups=1) == [3]

    def test_the_reactor_takes_32_per_wakeup(self) -> None:
        """The reactor's workers (an evented handler's) take up to 32 connections per wake-up."""

        def echo(line: bytes) -> bytes:
            return line

        with server(tcp("127.0.0.1", 0, backlog=64), lines(echo)).bind() as bound, waiting_clients(bound.address, 40):
            assert bound.handle_request()
            assert bound.stats().connections_accepted_total == 32
            assert bound.handle_request()
            assert bound.stats().connections_accepted_total == 40

    @pytest.mark.parametrize("bad", [0, -1, 1.5, True])
    def test_a_batch_that_is_not_a_positive_int_is_refused_at_bind(self, bad: object) -> None:
        """Nothing of the server is left behind: the error names the field and the value."""
        traits = WorkerTraits("loop", accepts_per_wakeup=bad)  # type: ignore[arg-type]  # (what a user may pass)
        dispatcher = Counting(traits)
        spec = server(tcp("127.0.0.1", 0), lambda conn: None, dispatcher=dispatcher)
        with pytest.raises(ValueError, match=rf"^traits.accepts_per_wakeup must be an int >= 1, got {bad!r}$"):
            spec.bind()
