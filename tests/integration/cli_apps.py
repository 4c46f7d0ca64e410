"""Handlers for the command-line runner's tests (``python -m servekit cli_apps:...``, run from this directory)."""

from __future__ import annotations

import os
import signal
import threading

from servekit import Address, StreamConnection
from servekit.framing import lines


def pid(conn: StreamConnection[Address]) -> None:
    """Answer with the worker's process id."""
    conn.wfile.write(b"%d\n" % os.getpid())


def echo(conn: StreamConnection[Address]) -> None:
    """Echo each line, then close once the client does."""
    for line in conn.rfile:
        conn.wfile.write(line)


def echo_or_signal(conn: StreamConnection[Address]) -> None:
    """Echo each line; on ``signal``, first send SIGTERM to this (worker) thread."""
    for line in conn.rfile:
        if line == b"signal\n":
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        conn.wfile.write(line)


def shout(line: bytes) -> bytes:
    return line.upper()


#: A reactor's handler: each line upper-cased.
evented = lines(shout)

#: Not a handler.
number = 42


def signal_from_a_worker(conn: StreamConnection[Address]) -> None:
    """Send SIGTERM to this (worker) thread -- as the kernel may deliver a process's SIGTERM -- then answer."""
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
    conn.wfile.write(b"sent\n")
