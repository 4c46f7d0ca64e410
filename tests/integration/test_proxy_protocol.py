"""The PROXY protocol on real sockets: headers read on the loop before admission, and behind a real HAProxy.

HAProxy (Debian's ``haproxy``; ``.ci/run`` installs it) forwards to
``python -m servekit examples.whoami:handler --proxy-protocol v1|v2`` with
``send-proxy`` / ``send-proxy-v2`` and health checks that send a header
too (``check-send-proxy``); ``whoami`` must answer with the real client's
address and port, and HAProxy must mark the server UP.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from servekit import IPAddress, Rejected, StreamConnection, server, tcp
from servekit.proxy import ProxyHeader, ProxyProtocol, header
from servekit.testing import EventLog, recv_line, serving

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0


def whoami(conn: StreamConnection[IPAddress]) -> None:
    host, port = conn.client_address
    conn.wfile.write(f"{host} {port} {conn.rfile.readline().decode().strip()}\n".encode())


def _send(address: tuple[str, int], *pieces: bytes) -> bytes:
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        for piece in pieces:
            sock.sendall(piece)
        return recv_line(sock)


V2_TCP4 = (
    b"\r\n\r\n\x00\r\nQUIT\n" + b"\x21\x11\x00\x0c" + socket.inet_aton("203.0.113.7") + socket.inet_aton("10.0.0.1")
    + (4242).to_bytes(2, "big") + (80).to_bytes(2, "big")
)  # fmt: skip
V2_LOCAL = b"\r\n\r\n\x00\r\nQUIT\n" + b"\x20\x00\x00\x00"


def test_v1_and_v2_headers_give_the_handler_the_real_client_split_or_whole() -> None:
    with serving(server(tcp("127.0.0.1", 0), whoami, proxy=ProxyProtocol()).bind()) as bound:
        assert _send(bound.address, b"PROXY TCP4 198.51.100.2 10.0.0.1 5555 80\r\nhello\n") == b"198.51.100.2 5555 hello\n"
        assert _send(bound.address, b"PROXY TCP6 2001:db8::1 ::1 6", b"666 80\r", b"\nsplit\n") == b"2001:db8::1 6666 split\n"
        assert _send(bound.address, V2_TCP4[:7], V2_TCP4[7:20], V2_TCP4[20:] + b"two\n") == b"203.0.113.7 4242 two\n"
        with socket.create_connection(bound.address, timeout=TIMEOUT) as sock:  # LOCAL: the connection's own
            sock.sendall(V2_LOCAL + b"local\n")
            assert recv_line(sock) == b"127.0.0.1 %d local\n" % sock.getsockname()[1]


def _v2_with_tlvs(*tlvs: tuple[int, bytes]) -> bytes:
    """A v2 PROXY header, TCP over IPv4 from 203.0.113.7:4242 to 10.0.0.1:443, with *tlvs* (type, value)."""
    body = socket.inet_aton("203.0.113.7") + socket.inet_aton("10.0.0.1") + (4242).to_bytes(2, "big") + (443).to_bytes(2, "big")
    body += b"".join(bytes([kind]) + len(value).to_bytes(2, "big") + value for kind, value in tlvs)
    return b"\r\n\r\n\x00\r\nQUIT\n" + b"\x21\x11" + len(body).to_bytes(2, "big") + body


def test_the_handler_reads_the_whole_header_with_its_tlvs() -> None:
    headers: list[ProxyHeader | None] = []

    def told(conn: StreamConnection[IPAddress]) -> None:
        headers.append(header(conn))
        whoami(conn)

    with serving(server(tcp("127.0.0.1", 0), told, proxy=ProxyProtocol()).bind()) as bound:
        assert _send(bound.address, _v2_with_tlvs((0x01, b"h2"), (0x02, b"example.org")) + b"a\n") == b"203.0.113.7 4242 a\n"
        assert _send(bound.address, b"PROXY TCP4 198.51.100.2 10.0.0.1 5555 80\r\nb\n") == b"198.51.100.2 5555 b\n"
        assert _send(bound.address, V2_LOCAL + b"c\n").endswith(b" c\n")
    with serving(server(tcp("127.0.0.1", 0), told).bind()) as bound:
        assert _send(bound.address, b"d\n").endswith(b" d\n")
    first, second, third, fourth = headers
    assert first is not None and first.version == 2 and first.alpn == b"h2" and first.authority == "example.org"
    assert [kind for kind, _ in first.tlvs] == [0x01, 0x02]
    assert second is not None and second.version == 1 and second.tlvs == () and second.source == ("198.51.100.2", 5555)
    assert third is not None and third.command == "LOCAL" and third.source is None
    assert fourth is None


def test_no_valid_header_an_untrusted_peer_and_a_late_header_are_refused_and_counted() -> None:
    log = EventLog()
    proxy = ProxyProtocol(versions=(1,), timeout=0.5)
    with serving(server(tcp("127.0.0.1", 0), whoami, proxy=proxy, on_event=log).bind()) as bound:
        assert _send(bound.address, b"GET / HTTP/1.1\r\n\r\n") == b""  # not a header: closed, nothing said
        assert _send(bound.address, V2_TCP4 + b"x\n") == b""  # v2 where only v1 is accepted
        with socket.create_connection(bound.address, timeout=TIMEOUT) as slow:
            slow.sendall(b"PROXY TCP4 1.2.3.4 ")  # and nothing more: closed at the header deadline
            assert recv_line(slow) == b""
        log.wait_for(Rejected, count=3, timeout=TIMEOUT)
        stats = bound.stats()
    assert stats.rejected_by_reason == {"proxy": 3} and stats.connections_accepted_total == 0, stats
    log.clear()
    spec = server(tcp("127.0.0.1", 0), whoami, proxy=ProxyProtocol(trusted=("10.0.0.0/8",)), on_event=log)
    with serving(spec.bind()) as bound:
        assert _send(bound.address, b"PROXY TCP4 1.2.3.4 10.0.0.1 1 2\r\nx\n") == b""  # 127.0.0.1 is not trusted
        log.wait_for(Rejected, timeout=TIMEOUT)
        assert bound.stats().rejected_by_reason == {"proxy": 1}


def test_proxy_protocol_arguments_are_checked_by_name() -> None:
    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0, got 0"):
        ProxyProtocol(timeout=0)
    with pytest.raises(ValueError, match="trusted: 'nonsense' is not a network"):
        ProxyProtocol(trusted=["nonsense"])
    with pytest.raises(TypeError, match="not one string"):
        ProxyProtocol(trusted="10.0.0.0/8")
    with pytest.raises(TypeError, match="proxy must be a servekit.proxy.ProxyProtocol"):
        server(tcp("127.0.0.1", 0), whoami, proxy="v2")  # type: ignore[call-overload]


# -- behind a real HAProxy ----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _server_state(stats_socket: str) -> str:
    """HAProxy's status of its one backend server (UP, DOWN, ...), from its stats socket."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(stats_socket)
        sock.sendall(b"show stat\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    for line in data.decode().splitlines():
        fields = line.split(",")
        if len(fields) > 17 and fields[0] == "whoami" and fields[1] == "one":
            return fields[17]
    return "?"


@pytest.mark.skipif(shutil.which("haproxy") is None and not os.environ.get("CI"), reason="no haproxy")
@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize("encrypted", [False, True], ids=["tcp", "tls"])
def test_behind_haproxy_health_checks_pass_and_whoami_sees_the_real_client(
    tmp_path: Path, version: str, encrypted: bool, make_certificate: Callable[[str], tuple[Path, Path]]
) -> None:
    """HAProxy in TCP mode; with *encrypted*, the client's TLS passes through it to a server with
    ``--tls-cert`` (the PROXY header comes first, in cleartext, then the client's handshake)."""
    haproxy = shutil.which("haproxy")
    assert haproxy is not None, "haproxy is missing (Debian's haproxy package; .ci/run installs it)"
    backend, frontend = _free_port(), _free_port()
    stats_socket = str(tmp_path / "stats.sock")
    send = "send-proxy-v2" if version == "v2" else "send-proxy"
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        f"""global
    stats socket {stats_socket} mode 600 level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend front
    bind 127.0.0.1:{frontend}
    default_backend whoami
backend whoami
    server one 127.0.0.1:{backend} {send} check check-send-proxy inter 200ms fall 2 rise 1
"""
    )
    cert, key = make_certificate("localhost")
    certificates = ["--tls-cert", str(cert), "--tls-key", str(key)] if encrypted else []
    app = subprocess.Popen(
        [sys.executable, "-m", "servekit", "examples.whoami:handler", "--bind", f"tcp://127.0.0.1:{backend}",
         "--proxy-protocol", version, *certificates],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    proxy = None
    try:
        assert app.stderr is not None
        assert "listening on" in app.stderr.readline()
        proxy = subprocess.Popen([haproxy, "-f", str(config), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + TIMEOUT
        state = "?"
        pause = threading.Event()
        while time.monotonic() < deadline:  # a bound: HAProxy checks every 0.2 s
            if os.path.exists(stats_socket):
                state = _server_state(stats_socket)
                if state == "UP":
                    break
            pause.wait(0.05)
        assert state == "UP", state
        with socket.create_connection(("127.0.0.1", frontend), timeout=TIMEOUT) as client:
            port = client.getsockname()[1]
            if encrypted:
                context = ssl.create_default_context(cafile=str(cert))
                with context.wrap_socket(client, server_hostname="localhost") as secure:
                    assert recv_line(secure) == b"127.0.0.1 %d\n" % port
            else:
                assert recv_line(client) == b"127.0.0.1 %d\n" % port
        app.send_signal(signal.SIGTERM)
        _, err = app.communicate(timeout=TIMEOUT)
        assert app.returncode == 0, err
    finally:
        for proc in (proxy, app):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=TIMEOUT)
