"""The README's deployment section, run as written: each command, the HAProxy configuration, the systemd units.

Only the ports change (8000, 8080, 8443 and 9100 become free ones), and
``/usr/bin/python3`` becomes this interpreter.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from servekit.testing import recv_line

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0
#: The bound on a runner's exit after SIGTERM: past its drain deadline (10 s), on a loaded machine.
EXIT_TIMEOUT = 30.0


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Deployment\n")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _section(), re.DOTALL)


def _free_ports(count: int) -> list[int]:
    probes = []
    try:
        for _ in range(count):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            probes.append(probe)
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def _ported(text: str, ports: dict[int, int]) -> str:
    return re.sub(r"(?<=:)(8000|8080|8443|9100)\b", lambda match: str(ports[int(match.group(1))]), text)


def _commands() -> list[str]:
    return [line for block in _blocks("sh") for line in block.splitlines() if line.startswith("python -m servekit ")]


@contextmanager
def _running(argv: list[str], cwd: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=EXIT_TIMEOUT)


def _wait_listening(proc: subprocess.Popen[str]) -> None:
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "listening on" in line, line


def test_the_section_has_the_snippets_the_tests_run() -> None:
    commands = _commands()
    assert len(commands) == 3 and any("--workers" in c for c in commands) and any("--tls-cert" in c for c in commands)
    assert len(_blocks("haproxy")) == 1 and len(_blocks("yaml")) == 1 and len(_blocks("ini")) == 2
    assert any("--proxy-protocol v2" in line for block in _blocks("sh") for line in block.splitlines())


def test_the_workers_command_serves_and_its_metrics_are_what_the_scrape_job_targets(tmp_path: Path) -> None:
    [command] = [c for c in _commands() if "--workers" in c]
    main, metrics = _free_ports(2)
    ports = {8000: main, 9100: metrics}
    assert f"127.0.0.1:{metrics}" in _ported(_blocks("yaml")[0], ports)  # the scrape job's target
    with _running(shlex.split(_ported(command, ports).replace("python", sys.executable, 1)), ROOT) as proc:
        _wait_listening(proc)
        with socket.create_connection(("127.0.0.1", main), timeout=TIMEOUT) as sock:
            assert recv_line(sock) == b"127.0.0.1 %d\n" % sock.getsockname()[1]
        with socket.create_connection(("127.0.0.1", metrics), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: prometheus\r\n\r\n")
            assert recv_line(sock).startswith(b"HTTP/1.1 200")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(EXIT_TIMEOUT) == 0


def test_the_tls_command_serves_tls(tmp_path: Path) -> None:
    [command] = [c for c in _commands() if "--tls-cert" in c]
    openssl = shutil.which("openssl")
    assert openssl is not None
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem",
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
        cwd=tmp_path, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    [port] = _free_ports(1)
    with _running(shlex.split(_ported(command, {8443: port}).replace("python", sys.executable, 1)), tmp_path) as proc:
        _wait_listening(proc)
        context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
            assert recv_line(sock).startswith(b"127.0.0.1 ")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(EXIT_TIMEOUT) == 0


@pytest.mark.skipif(shutil.which("haproxy") is None and not os.environ.get("CI"), reason="no haproxy")
def test_the_haproxy_configuration_in_front_of_the_proxy_protocol_command(tmp_path: Path) -> None:
    haproxy = shutil.which("haproxy")
    assert haproxy is not None, "haproxy is missing (.ci/run installs it)"
    backend, frontend = _free_ports(2)
    ports = {8000: backend, 8080: frontend}
    [command] = [line for block in _blocks("sh") for line in block.splitlines() if "--proxy-protocol" in line]
    config = tmp_path / "haproxy.cfg"
    config.write_text(_ported(_blocks("haproxy")[0], ports))
    check = subprocess.run([haproxy, "-c", "-f", str(config)], capture_output=True, text=True, timeout=TIMEOUT)
    assert check.returncode == 0, check.stdout + check.stderr
    with _running(shlex.split(_ported(command, ports).replace("python", sys.executable, 1)), ROOT) as app:
        _wait_listening(app)
        balancer = subprocess.Popen([haproxy, "-f", str(config), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            answer = b""
            pause = threading.Event()
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline:  # a bound: until HAProxy listens and finds the server up
                try:
                    with socket.create_connection(("127.0.0.1", frontend), timeout=TIMEOUT) as sock:
                        answer = recv_line(sock)
                        if answer:
                            assert answer == b"127.0.0.1 %d\n" % sock.getsockname()[1]
                            break
                except ConnectionRefusedError:
                    pass
                pause.wait(0.05)
            assert answer, "HAProxy never forwarded a connection"
        finally:
            balancer.kill()
            balancer.wait(TIMEOUT)
        app.send_signal(signal.SIGTERM)
        assert app.wait(EXIT_TIMEOUT) == 0


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None and not os.environ.get("CI"), reason="no tool")
def test_the_systemd_units_under_socket_activation() -> None:
    activator = shutil.which("systemd-socket-activate")
    assert activator is not None, "systemd-socket-activate is missing (.ci/run installs systemd)"
    socket_unit, service_unit = _blocks("ini")
    [port] = _free_ports(1)
    listen = re.search(r"^ListenStream=(.*)$", _ported(socket_unit, {8000: port}), re.MULTILINE)
    start = re.search(r"^ExecStart=(.*)$", service_unit, re.MULTILINE)
    assert listen is not None and start is not None
    argv = shlex.split(start.group(1).replace("/usr/bin/python3", sys.executable, 1))
    proc = subprocess.Popen(
        [activator, "-l", listen.group(1), "-E", "PYTHONPATH", *argv],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "SYSTEMD_LOG_TARGET": "console"},
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        assert "istening" in proc.stderr.readline()
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            assert recv_line(sock) == b"127.0.0.1 %d\n" % sock.getsockname()[1]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(EXIT_TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=EXIT_TIMEOUT)
