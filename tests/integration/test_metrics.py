"""servekit.metrics: GET /metrics over real sockets, and counters added up."""

from __future__ import annotations

import socket

import pytest

from servekit import Stats, server, tcp
from servekit.framing import lines
from servekit.metrics import combined, metrics_server
from servekit.testing import serving

TIMEOUT = 10.0


def _get(address: tuple[str, int], request: bytes) -> bytes:
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", b"200"),
        (b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", b"200"),
        (b"HEAD /metrics HTTP/1.1\r\n\r\n", b"200"),
        (b"GET / HTTP/1.1\r\n\r\n", b"404"),
        (b"POST /metrics HTTP/1.1\r\n\r\n", b"405"),
        (b"hello\r\n\r\n", b"400"),
    ],
)
def test_metrics_server_answers_get_metrics_and_refuses_the_rest(request_bytes: bytes, status: bytes) -> None:
    with serving(server(tcp("127.0.0.1", 0), lines(lambda line: line)).bind()) as served:
        with serving(metrics_server(tcp("127.0.0.1", 0), served.stats).bind()) as metrics:
            reply = _get(metrics.address, request_bytes)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.split()[1] == status, reply
    if status == b"200" and not request_bytes.startswith(b"HEAD"):
        assert b"servekit_connections_accepted_total 0\n" in body
    if request_bytes.startswith(b"HEAD"):
        assert body == b""


def test_combined_adds_counts_and_merges_reasons() -> None:
    one = Stats(1, 2, {"limit": 2}, 3, 4, 5, 6, 7, 8, 0.5, 9, 1, {"deadlines": 1}, {"deadline": 2})
    two = Stats(10, 1, {"limit": 1, "verify": 3}, 0, 1, 0, 0, 0, 2, 0.25, 0, 0, {}, {"too_long": 1, "deadline": 1})
    total = combined([one, two])
    assert total == Stats(11, 3, {"limit": 3, "verify": 3}, 3, 5, 5, 6, 7, 10, 0.75, 9, 1, {"deadlines": 1},
                          {"deadline": 3, "too_long": 1})  # fmt: skip
    assert combined([]) == Stats(0, 0, {}, 0, 0, 0, 0, 0, 0, 0.0, 0)
