"""TLS on real sockets with real handshakes: certificates made at test time with ``openssl``.

The handshake runs in the worker under a total deadline, never on the serve
loop: 100 silent clients delay no one; a failed or late handshake is a
``StageFailed`` event of the ``"tls"`` stage; SNI and ALPN are told;
certificates are read again without a restart; a PROXY header before the
handshake is read on the loop.
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from servekit import Address, Deadlines, IPAddress, StageFailed, StreamConnection, first_line, server, tcp, threaded
from servekit.framing import lines
from servekit.proxy import ProxyProtocol
from servekit.testing import EventLog, recv_line, serving
from servekit.tls import TLSInfo, info, tls

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0
#: A PROXY v2 header: TCP over IPv4, from 203.0.113.7:4242 to 10.0.0.1:443.
V2_TCP4 = (
    b"\r\n\r\n\x00\r\nQUIT\n" + b"\x21\x11\x00\x0c" + socket.inet_aton("203.0.113.7") + socket.inet_aton("10.0.0.1")
    + (4242).to_bytes(2, "big") + (443).to_bytes(2, "big")
)  # fmt: skip


@pytest.fixture(scope="module")
def certs(make_certificate: Callable[[str], tuple[Path, Path]]) -> dict[str, tuple[Path, Path]]:
    return {name: make_certificate(name) for name in ("first", "second")}


def _client(cert: Path, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cert))
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


seen: list[TLSInfo | None] = []


def told(conn: StreamConnection[Address]) -> None:
    """Note what the handshake agreed on; echo one line."""
    seen.append(info(conn))
    conn.wfile.write(conn.rfile.readline())


def _ask(address: tuple[str, int], context: ssl.SSLContext, line: bytes = b"hello\n") -> tuple[bytes, ssl.SSLSocket]:
    raw = socket.create_connection(address, timeout=TIMEOUT)
    sock = context.wrap_socket(raw, server_hostname="localhost")
    with sock:
        sock.sendall(line)
        return recv_line(sock), sock


def test_a_handshake_in_the_worker_sni_alpn_and_the_echo(certs: dict[str, tuple[Path, Path]]) -> None:
    cert, key = certs["first"]
    seen.clear()
    transport = tls(tcp("127.0.0.1", 0), cert=cert, key=key, alpn=("echo/1", "h2"))
    with serving(server(transport, told, dispatcher=threaded()).bind()) as bound:
        answer, sock = _ask(bound.address, _client(cert, ("echo/1",)))
        assert answer == b"hello\n"
        assert plain_refused(bound.address)
    [agreed] = seen
    assert agreed is not None and agreed.server_name == "localhost" and agreed.alpn == "echo/1", agreed
    assert agreed.version.startswith("TLSv1.") and agreed.cipher


def plain_refused(address: tuple[str, int]) -> bool:
    """A client that speaks no TLS gets nothing back but the end of the connection."""
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        try:
            data = sock.recv(100)
        except ConnectionResetError:
            return True
        return data == b"" or data[:1] == b"\x15"  # the close, or a TLS alert record: no answer in plain text


def test_100_silent_clients_delay_no_one_and_are_closed_at_the_handshake_deadline(
    certs: dict[str, tuple[Path, Path]],
) -> None:
    cert, key = certs["first"]
    log = EventLog()
    spec = server(tls(tcp("127.0.0.1", 0), cert=cert, key=key, handshake_timeout=2.0), told,
                  dispatcher=threaded(), on_event=log)  # fmt: skip
    with serving(spec.bind()) as bound:
        silent = [socket.create_connection(bound.address, timeout=TIMEOUT) for _ in range(100)]
        try:
            for _ in range(3):
                started = time.monotonic()
                answer, _ = _ask(bound.address, _client(cert))
                took = time.monotonic() - started
                assert answer == b"hello\n" and took < 1.0, took
            failed = log.wait_for(StageFailed, count=100, timeout=TIMEOUT)
        finally:
            for sock in silent:
                sock.close()
        stats = bound.stats()
    assert {event.stage for event in failed} == {"tls"}
    assert all(isinstance(event.exception, TimeoutError) for event in failed)
    assert stats.stage_errors_by_stage == {"tls": 100} and stats.handler_duration_seconds_count == 3, stats


def test_a_failed_handshake_is_counted_and_the_server_goes_on(certs: dict[str, tuple[Path, Path]]) -> None:
    cert, key = certs["first"]
    log = EventLog()
    spec = server(tls(tcp("127.0.0.1", 0), cert=cert, key=key), told, dispatcher=threaded(), on_event=log)
    with serving(spec.bind()) as bound:
        assert plain_refused(bound.address)
        [failed] = log.wait_for(StageFailed, timeout=TIMEOUT)
        assert _ask(bound.address, _client(cert))[0] == b"hello\n"
    assert failed.stage == "tls" and isinstance(failed.exception, ssl.SSLError), failed


def test_reload_reads_the_certificate_files_again(certs: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    first, second = certs["first"], certs["second"]
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(first[0], cert)
    shutil.copy(first[1], key)
    transport = tls(tcp("127.0.0.1", 0), cert=cert, key=key)
    with serving(server(transport, told, dispatcher=threaded()).bind()) as bound:
        assert _ask(bound.address, _client(first[0]))[0] == b"hello\n"
        shutil.copy(second[0], cert)
        shutil.copy(second[1], key)
        transport.reload()
        assert _ask(bound.address, _client(second[0]))[0] == b"hello\n"  # trusts only the second now
        with pytest.raises(ssl.SSLCertVerificationError):
            _ask(bound.address, _client(first[0]))


def test_a_proxy_header_before_the_handshake_gives_the_handler_the_real_client(
    certs: dict[str, tuple[Path, Path]],
) -> None:
    """TLS behind a TCP balancer that sends a PROXY header: the header (cleartext, before the
    ClientHello) is read on the loop, the handshake in the worker; the handler sees the real client."""
    cert, key = certs["first"]
    spec = server(tls(tcp("127.0.0.1", 0), cert=cert, key=key), whoami_line, proxy=ProxyProtocol())
    with serving(spec.bind()) as bound:
        for header, said in (
            (b"PROXY TCP4 198.51.100.2 10.0.0.1 5555 443\r\n", b"198.51.100.2 5555 hello\n"),
            (V2_TCP4, b"203.0.113.7 4242 hello\n"),
        ):
            with socket.create_connection(bound.address, timeout=TIMEOUT) as raw:
                raw.sendall(header)
                with _client(cert).wrap_socket(raw, server_hostname="localhost") as sock:
                    sock.sendall(b"hello\n")
                    assert recv_line(sock) == said
        with socket.create_connection(bound.address, timeout=TIMEOUT) as raw:  # a ClientHello, no header
            with pytest.raises((ssl.SSLError, OSError)):
                _client(cert).wrap_socket(raw, server_hostname="localhost").close()
        assert bound.stats().rejected_by_reason == {"proxy": 1}


def whoami_line(conn: StreamConnection[IPAddress]) -> None:
    """Answer with the client's address and the line it sent."""
    host, port = conn.client_address
    conn.wfile.write(f"{host} {port} {conn.rfile.readline().decode().strip()}\n".encode())


def test_what_does_not_work_over_tls_yet_is_refused(certs: dict[str, tuple[Path, Path]]) -> None:
    cert, key = certs["first"]
    transport = tls(tcp("127.0.0.1", 0), cert=cert, key=key)
    with pytest.raises(TypeError, match="gate= cannot be used with a TLS transport"):
        server(transport, told, gate=first_line())
    with pytest.raises(TypeError, match="TLS on the reactor is not available yet"):
        server(transport, lines(lambda line: line))
    with pytest.raises(TypeError, match="deadlines= with a TLS transport is not available yet"):
        server(transport, told, deadlines=Deadlines(idle=1.0))
    with pytest.raises(TypeError, match="cert= .and key=. or context="):
        tls(tcp("127.0.0.1", 0))
    with pytest.raises(ValueError, match="handshake_timeout must be a number of seconds > 0, got 0"):
        tls(tcp("127.0.0.1", 0), cert=cert, key=key, handshake_timeout=0)


def test_the_command_line_serves_tls_and_reads_its_certificates_again_on_sighup(
    certs: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    first, second = certs["first"], certs["second"]
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    shutil.copy(first[0], cert)
    shutil.copy(first[1], key)
    proc = subprocess.Popen(
        [sys.executable, "-m", "servekit", "examples.whoami:handler", "--bind", "tcp://127.0.0.1:0",
         "--tls-cert", str(cert), "--tls-key", str(key)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "listening on" in line, line
        port = int(line.rsplit(":", 1)[1])
        raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        with _client(first[0]).wrap_socket(raw, server_hostname="localhost") as sock:
            assert recv_line(sock) == b"127.0.0.1 %d\n" % sock.getsockname()[1]
        shutil.copy(second[0], cert)
        shutil.copy(second[1], key)
        proc.send_signal(signal.SIGHUP)
        assert "certificates read again" in proc.stderr.readline()
        raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        with _client(second[0]).wrap_socket(raw, server_hostname="localhost") as sock:
            assert recv_line(sock).startswith(b"127.0.0.1 ")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
