"""Several listeners in one server: one loop, one set of workers, one lifecycle, drain and stats.

Real sockets: 127.0.0.1, ::1 (when the machine has an IPv6 loopback) and a Unix
socket in a short temporary directory, all bound by one ``server((...))``.
Every wait is bounded; the conftest's ``no_leaks`` fixture fails a test that
leaves a thread, a child or an fd behind.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from servekit import (
    Accepted,
    Address,
    Datagram,
    Deadlines,
    Server,
    IPAddress,
    StreamConnection,
    Transport,
    first_line,
    pooled,
    server,
    tcp,
    threaded,
    udp,
    unix_datagram,
    unix_stream,
)
from servekit.abc import Acceptor, Listener
from servekit.events import ConnectionClosed
from servekit.testing import EventLog, datagram_exchange, recv_line, serving

TIMEOUT = 10.0


def where(conn: StreamConnection[Address]) -> None:
    """Answer with the address of the listener the connection came through."""
    line = conn.rfile.readline()
    conn.wfile.write(repr(conn.server_address).encode() + b" " + line)


def connect(address: Address) -> socket.socket:
    if isinstance(address, tuple):
        return socket.create_connection(address, timeout=TIMEOUT)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.settimeout(TIMEOUT)
        client.connect(address)
    except BaseException:
        client.close()
        raise
    return client


@pytest.fixture
def transports(short_tmp: Path) -> tuple[Transport[StreamConnection[Address], Address], ...]:
    """127.0.0.1, ::1 and a Unix socket (the tests that take them are marked ipv6)."""
    return (tcp("127.0.0.1", 0), tcp("::1", 0), unix_stream(str(short_tmp / "s.sock")))


@pytest.mark.ipv6
def test_one_server_serves_every_listener_and_counts_them_together(
    transports: tuple[Transport[StreamConnection[Address], Address], ...], short_tmp: Path
) -> None:
    log = EventLog()
    spec = server(transports, where, dispatcher=threaded(), on_event=log)
    with serving(spec.bind(), poll_interval=0.05) as bound:
        addresses = bound.addresses
        assert len(addresses) == 3
        assert bound.address == addresses[0]
        assert addresses[0][0] == "127.0.0.1" and addresses[1][0] == "::1"
        assert addresses[2] == str(short_tmp / "s.sock")
        for address in addresses:  # each request knows the listener it came through
            with connect(address) as client:
                client.sendall(b"hi\n")
                assert recv_line(client) == repr(address).encode() + b" hi\n"
        log.wait_for(ConnectionClosed, 3, timeout=TIMEOUT)
        stats = bound.stats()
        listeners = {event.listener for event in log.of(Accepted)}
    assert stats.connections_accepted_total == 3
    assert stats.connections_closed_total == 3
    assert stats.handler_duration_seconds_count == 3
    assert len(listeners) == 3  # each Accepted names the listener it came through
    assert not os.path.exists(short_tmp / "s.sock")  # close removed the socket file


@pytest.mark.ipv6
def test_a_drain_covers_every_listener(transports: tuple[Transport[StreamConnection[Address], Address], ...]) -> None:
    """Connections on each listener, in flight when the drain begins, are finished; then every listener is closed."""
    release = threading.Event()

    def slow(conn: StreamConnection[Address]) -> None:
        conn.wfile.write(b"started\n")
        assert release.wait(TIMEOUT)
        conn.wfile.write(b"done\n")

    with serving(server(transports, slow, dispatcher=pooled(workers=4)).bind(), poll_interval=0.05) as bound:
        clients = [connect(address) for address in bound.addresses]
        try:
            for client in clients:
                assert recv_line(client) == b"started\n"
            reports = []
            drainer = threading.Thread(target=lambda: reports.append(bound.drain(TIMEOUT)))
            drainer.start()
            assert bound.draining.wait(TIMEOUT)
            release.set()
            drainer.join(TIMEOUT)
            assert not drainer.is_alive()
            answers = [recv_line(client) for client in clients]
        finally:
            for client in clients:
                client.close()
        for address in bound.addresses:  # every listener is closed now
            with pytest.raises(OSError):
                connect(address).close()
    [report] = reports
    assert answers == [b"done\n"] * len(clients)
    assert report.cut == 0 and report.finished == len(clients)


def test_a_gate_holds_the_connections_of_every_listener(short_tmp: Path) -> None:
    spec = server(
        (tcp("127.0.0.1", 0), unix_stream(str(short_tmp / "g.sock"))),
        where,
        gate=first_line(timeout=5.0),
        deadlines=Deadlines(request=5.0),  # the deadline stage keeps the listener's address
    )
    with serving(spec.bind(), poll_interval=0.05) as bound:
        for address in bound.addresses:
            with connect(address) as client:
                client.sendall(b"line\n")
                assert recv_line(client) == repr(address).encode() + b" line\n"


def test_datagram_listeners_together() -> None:
    def shout(dgram: Datagram[IPAddress]) -> None:
        dgram.reply(dgram.data.upper())

    with serving(server((udp("127.0.0.1", 0), udp("127.0.0.1", 0)), shout).bind(), poll_interval=0.05) as bound:
        assert len(set(bound.addresses)) == 2
        for address in bound.addresses:
            assert datagram_exchange(address, b"hey", timeout=TIMEOUT) == b"HEY"


class TestKinds:
    def test_stream_and_datagram_transports_together_are_refused_at_server(self) -> None:
        with pytest.raises(TypeError, match="one kind of request, got stream and datagram transports together"):
            server((tcp("127.0.0.1", 0), udp("127.0.0.1", 0)), print)  # type: ignore[type-var]

    def test_a_user_transport_of_another_kind_is_refused_at_bind_with_nothing_left_open(self) -> None:
        """A transport servekit does not know is judged by its socket, at bind; the listeners made are closed."""

        class Disguised:  # a user's transport: a UDP socket behind its own class
            def __init__(self) -> None:
                self.inner = udp("127.0.0.1", 0)

            def listen(self) -> Listener[IPAddress]:
                return self.inner.listen()

            def acceptor(self) -> Acceptor[StreamConnection[IPAddress]]:
                return tcp("127.0.0.1", 0).acceptor()

        spec = server((tcp("127.0.0.1", 0), Disguised()), where)
        with pytest.raises(TypeError, match="all stream or all datagram sockets: TCP 127.0.0.1:.*, UDP 127.0.0.1:"):
            spec.bind()

    def test_gate_and_deadlines_are_refused_for_datagrams(self, short_tmp: Path) -> None:
        with pytest.raises(TypeError, match="gate= applies to stream connections only; .*yields datagrams"):
            server(udp("127.0.0.1", 0), print, gate=first_line())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="deadlines= applies to stream connections only; .*yields datagrams"):
            server(unix_datagram(str(short_tmp / "d.sock")), print, deadlines=Deadlines(idle=1.0))  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="gate= applies to stream connections only"):  # unchecked: the class itself
            Server(udp("127.0.0.1", 0), print, gate=first_line())

    def test_an_empty_tuple_is_refused(self) -> None:
        with pytest.raises(ValueError, match=r"a non-empty tuple of transports, got \(\)"):
            server((), print)

    def test_something_else_is_refused_naming_it(self) -> None:
        with pytest.raises(TypeError, match="got str '127.0.0.1:80'"):
            server("127.0.0.1:80", print)  # type: ignore[call-overload]


def test_a_failed_bind_of_a_later_listener_closes_the_earlier_ones(short_tmp: Path) -> None:
    """Binding is all or nothing: a later transport that cannot bind leaves nothing of the earlier ones."""
    taken = short_tmp / "taken"
    taken.write_text("not a socket")
    spec = server((tcp("127.0.0.1", 0), unix_stream(str(taken))), where)
    with pytest.raises(OSError, match="Address already in use"):
        spec.bind()
    assert taken.read_text() == "not a socket"

