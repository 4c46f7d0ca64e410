"""Real file-descriptor exhaustion: the server survives it, reports it once, and serves again.

Each case runs fd_exhaustion_server.py in a subprocess, which lowers
``RLIMIT_NOFILE``, fills every free fd while a client waits in the backlog,
holds the condition a while, then releases the fds (see its docstring).  The
subprocess isolates the lowered limit, the program's choice to import
:mod:`logging` or not, and the forking servers.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="counts on Linux's fd and rlimit semantics"
)

HELPER = Path(__file__).with_name("fd_exhaustion_server.py")

KINDS = [
    "classic-TCPServer",
    "classic-ThreadingTCPServer",
    "classic-ForkingTCPServer",
    "composed-inline",
    "composed-threaded",
    "composed-forked",
]

#: The helper holds the condition this long (its HOLD), in seconds.
HOLD = 0.3
#: The retry interval the loop uses (servekit._runtime.loop.ACCEPT_BACKOFF).
BACKOFF = 0.1
#: Wake-ups of the serve loop per second of a held episode: one per retry plus
#: one per wait is 2 / BACKOFF = 20; a spinning loop makes thousands, the old
#: loop (which polled every 10 ms during its back-off) about 110.
MAX_WAKEUPS_PER_SECOND = 60
#: How long the client may wait for its answer once the fds are back.  The
#: loop retries every BACKOFF seconds: generous, for slow machines.
MAX_LATENCY = 1.0


def _run(kind: str, mode: str, when: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(HELPER), kind, mode, when],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def _check(result: dict[str, Any]) -> None:
    context = json.dumps(result, indent=1)
    assert result["filled"] > 0, context
    # It served on: serve_forever neither raised nor returned, and the client
    # that waited through the exhaustion got its answer once fds were back.
    assert result["serve_forever_raised"] is None, context
    assert result["alive_after_hold"] and result["alive_at_end"] and result["stopped"], context
    assert result["reply"] == "PING\n", context
    assert result["latency"] < MAX_LATENCY, context
    # Once per episode: one line when it starts, one when it ends -- not one
    # per attempt.  With logging configured they go through it.
    episode: list[str] = result["episode"]
    assert len(episode) == 2, context
    start, end = episode
    assert os.strerror(errno.EMFILE) in start, context
    assert "succeeded again" in end, context
    if result["logging"] == "logging":
        assert all(line.startswith("LOG WARNING servekit.") for line in episode), context
    # No spin: few wake-ups, and next to no CPU, while the condition held.
    assert result["held_wakeups"] <= MAX_WAKEUPS_PER_SECOND * result["held_wall"], context
    assert result["held_cpu"] < 0.5 * result["held_wall"], context


@pytest.mark.parametrize("mode", ["logging", "no-logging"])
@pytest.mark.parametrize("kind", KINDS)
def test_exhaustion_while_serving(kind: str, mode: str) -> None:
    result = _run(kind, mode, "while-serving")
    _check(result)
    assert result["warm_up"] == "WARM\n"
    assert result["settled"], result
    if kind.startswith("classic") and mode == "no-logging":
        # Reporting did not load logging either (an import needs fds).
        assert not result["logging_loaded"], result


@pytest.mark.parametrize("kind", ["classic-TCPServer", "composed-inline"])
def test_exhaustion_before_serve_forever_starts(kind: str) -> None:
    """No fd is free for the loop's wake-up socketpair: it serves without one until it can."""
    _check(_run(kind, "no-logging", "before-serving"))


_FAILING_HANDLER = r"""
import os, resource, socket, sys, threading
import servekit.classic as socketserver

filler = []

class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        line = self.rfile.readline()
        if line == b"exhaust\n":
            # The handler runs out of fds and fails with EMFILE.
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
            while True:
                filler.append(os.open(os.devnull, os.O_RDONLY))
        self.wfile.write(line.upper())

class Server(socketserver.TCPServer):
    def handle_error(self, request, client_address):
        try:
            super().handle_error(request, client_address)  # with no fd free
        finally:
            while filler:
                os.close(filler.pop())

with Server(("127.0.0.1", 0), Handler) as srv:
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        for line in (b"exhaust\n", b"again\n"):
            with socket.create_connection(srv.server_address, timeout=5) as client:
                client.sendall(line)
                print(repr(client.makefile("rb").readline()), flush=True)
        print("alive" if thread.is_alive() else "dead", flush=True)
    finally:
        srv.shutdown()
        thread.join(5)
"""


def test_handle_error_reports_with_no_fd_free() -> None:
    """classic handle_error prints the traceback with no fd free (a lazy import needs one) and serving goes on."""
    done = subprocess.run(
        [sys.executable, "-c", _FAILING_HANDLER], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["b''", "b'AGAIN\\n'", "alive"], done.stdout + done.stderr
    assert "Exception occurred during processing of request from" in done.stderr
    assert f"OSError: [Errno {errno.EMFILE}]" in done.stderr, done.stderr
