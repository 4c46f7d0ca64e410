"""The serve loop over many sources: several intake sources, sources watched during a run."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from servekit._runtime.loop import Loop, Run

TIMEOUT = 10.0


class Owner:
    def __init__(self, intake: dict[int, Callable[[], object]]) -> None:
        self.intake = intake
        self.loop = Loop(self)

    def loop_run(self) -> Run:
        return Run(self.intake, lambda: None, None)


@contextmanager
def serving(loop: Loop) -> Iterator[threading.Thread]:
    thread = threading.Thread(target=loop.serve_forever, args=(0.5,))
    thread.start()
    try:
        yield thread
    finally:
        loop.shutdown()
        thread.join(TIMEOUT)
        assert not thread.is_alive()


def readable_pair() -> tuple[socket.socket, socket.socket]:
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    return ours, theirs


def test_every_intake_source_is_served() -> None:
    (a, a_peer), (b, b_peer) = readable_pair(), readable_pair()
    got: dict[str, bytes] = {}
    both = threading.Event()

    def take(name: str, sock: socket.socket) -> Callable[[], None]:
        def callback() -> None:
            got[name] = sock.recv(16)
            if len(got) == 2:
                both.set()

        return callback

    owner = Owner({a.fileno(): take("a", a), b.fileno(): take("b", b)})
    with a, a_peer, b, b_peer, serving(owner.loop):
        a_peer.send(b"to a")
        b_peer.send(b"to b")
        assert both.wait(TIMEOUT)
    assert got == {"a": b"to a", "b": b"to b"}


def test_sources_watched_during_a_run() -> None:
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

    owner = Owner({listener.fileno(): on_listener})
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


def test_a_closed_intake_source_ends_the_run() -> None:
    """Closing the listener under a running loop (classic server_close from another thread) ends it."""
    listener, peer = readable_pair()
    running = threading.Event()

    def on_listener() -> None:
        listener.recv(16)
        running.set()

    owner = Owner({listener.fileno(): on_listener})
    # A close does not wake a poll() blocked in another thread: the next wait (every 0.05 s) sees it.
    thread = threading.Thread(target=owner.loop.serve_forever, args=(0.05,))
    with peer:
        thread.start()
        peer.send(b"x")
        assert running.wait(TIMEOUT)  # the loop polls the listener now
        listener.close()
        thread.join(TIMEOUT)
        assert not thread.is_alive()
