"""Shared fixtures: bounded waits and the leak checks every test runs under."""

from __future__ import annotations

import gc
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

#: The bound on every wait in the tests, in seconds.  Never a sleep: only a limit.
TIMEOUT = 10.0


@pytest.fixture(scope="session")
def make_certificate(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, Path]]:
    """Make a self-signed certificate with ``openssl`` for localhost and 127.0.0.1, by common name: its (cert, key) files."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl is missing"
    directory = tmp_path_factory.mktemp("certificates")

    def make(name: str) -> tuple[Path, Path]:
        cert, key = directory / f"{name}.pem", directory / f"{name}.key"
        if not cert.exists():
            subprocess.run(
                [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                 "-days", "1", "-subj", f"/CN={name}", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
        return cert, key

    return make


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``ipv6`` need an IPv6 loopback: on a machine without one they are skipped, saying so."""
    if any(item.get_closest_marker("ipv6") for item in items) and not _has_ipv6_loopback():
        skip = pytest.mark.skip(reason="no IPv6 loopback (::1) on this machine")
        for item in items:
            if item.get_closest_marker("ipv6"):
                item.add_marker(skip)


def _open_fds() -> set[str]:
    try:
        return set(os.listdir("/proc/self/fd"))
    except FileNotFoundError:  # not Linux: skip the fd check
        return set()


def _fd_target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


@pytest.fixture(autouse=True, scope="session")
def ctrl_c_as_on_a_terminal() -> None:
    """Give the example servers the tests start a Ctrl-C that works, as on a terminal.

    A shell starts background jobs with SIGINT ignored, and an ignored signal
    stays ignored across exec: the tests that interrupt an example server
    would then wait for nothing.  With Python's own handler here, children
    start with SIGINT at its default, as a terminal user's programs do.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a thread, a child process or an fd behind."""
    threads = set(threading.enumerate())
    fds = _open_fds()
    yield
    deadline = time.monotonic() + TIMEOUT
    for thread in threading.enumerate():
        if thread not in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
    leaked_threads = [t.name for t in threading.enumerate() if t not in threads and t.is_alive()]
    assert not leaked_threads, f"threads outlived the test: {leaked_threads}"
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        pass
    else:
        raise AssertionError(f"a child process outlived the test (pid {pid or 'still running'})")
    gc.collect()
    new_fds = _open_fds() - fds
    # os.listdir's own fd for /proc/self/fd shows up and is gone at once.
    leaked_fds = {fd: _fd_target(fd) for fd in new_fds if _fd_target(fd) != "?"}
    assert not leaked_fds, f"fds outlived the test: {leaked_fds}"


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short temporary directory: Unix socket paths must fit in ~100 bytes."""
    path = Path(tempfile.mkdtemp(prefix="sk-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
