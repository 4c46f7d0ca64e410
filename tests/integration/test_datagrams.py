"""Datagrams: over-long ones are dropped and logged, unnamed Unix senders cannot be answered."""

from __future__ import annotations

import errno
import logging
import socket
import threading
from pathlib import Path

import pytest

from servekit import Datagram, server, udp, unix_datagram
from servekit.testing import datagram_exchange, serving

TIMEOUT = 10.0


class TestOverlongDatagrams:
    def test_dropped_and_logged_not_cut(self, caplog: pytest.LogCaptureFixture) -> None:
        """A 20,000-byte datagram never reaches the handler cut to 8,192 bytes; the next one does."""
        seen: list[int] = []

        def record(dg: Datagram) -> None:
            seen.append(len(dg.data))
            dg.reply(b"got %d" % len(dg.data))

        with serving(server(udp("127.0.0.1", 0), record).bind(), poll_interval=0.01) as bound:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.settimeout(TIMEOUT)
                client.bind(("127.0.0.1", 0))
                sender = client.getsockname()
                with caplog.at_level(logging.WARNING, logger="servekit.server"):
                    client.sendto(b"x" * 20_000, bound.address)
                    client.sendto(b"y" * 20_000, bound.address)
                    client.sendto(b"z" * 8192, bound.address)  # exactly the limit: whole
                    # Loopback keeps datagram order: a reply to a long one would come first.
                    assert client.recv(64) == b"got 8192"
        assert seen == [8192]
        drops = [r for r in caplog.records if "longer than max_packet_size=8192" in r.getMessage()]
        # The first drop is reported at once; the second falls in the same report interval.
        assert len(drops) == 1, [r.getMessage() for r in caplog.records]
        assert drops[0].levelno == logging.WARNING
        assert "dropped 1 datagram(s)" in drops[0].getMessage()
        assert f"(the latest from {sender!r})" in drops[0].getMessage()

    def test_small_limit(self) -> None:
        with serving(server(udp("127.0.0.1", 0, max_packet_size=4), lambda dg: dg.reply(dg.data)).bind(), poll_interval=0.01) as bound:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.settimeout(TIMEOUT)
                client.sendto(b"01234", bound.address)
                client.sendto(b"0123", bound.address)
                assert client.recv(64) == b"0123"


@pytest.mark.unix
class TestUnnamedUnixSender:
    def test_address_is_empty_and_reply_fails_clearly(self, short_tmp: Path) -> None:
        """An unbound Unix datagram client arrives as "", and reply() says why it cannot answer."""
        addresses: list[object] = []
        errors: list[Exception] = []
        done = threading.Event()

        def answer(dg: Datagram) -> None:
            addresses.append(dg.client_address)
            dg.reply(b"pong")

        def on_error(dg: Datagram, exc: Exception) -> None:
            errors.append(exc)
            done.set()

        path = str(short_tmp / "d.sock")
        with serving(server(unix_datagram(path), answer, on_error=on_error).bind(), poll_interval=0.01):
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
                client.sendto(b"ping", path)
                assert done.wait(TIMEOUT)
            # A named client is answered as before.
            assert datagram_exchange(path, b"ping", timeout=TIMEOUT, reply_path=str(short_tmp / "c.sock")) == b"pong"
        assert addresses == ["", str(short_tmp / "c.sock")]
        [error] = errors
        assert isinstance(error, OSError) and error.errno == errno.EDESTADDRREQ
        assert str(error) == (
            f"[Errno {errno.EDESTADDRREQ}] cannot reply to a datagram from an unnamed Unix socket (''): "
            "the sender must bind its socket to a path to get replies"
        )
