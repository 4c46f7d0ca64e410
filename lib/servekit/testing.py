"""A small kit for testing servers built with servekit."""

from __future__ import annotations

import errno
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

from ._types import Address
from .abc import BoundServer

__all__ = ("datagram_exchange", "recv_line", "serving", "stream_exchange")

_BoundT = TypeVar("_BoundT", bound=BoundServer[object])


@contextmanager
def serving(bound: _BoundT, *, poll_interval: float = 0.5, timeout: float = 10.0) -> Iterator[_BoundT]:
    """Run ``bound.serve_forever`` in a thread for the duration of a ``with`` block.

    On leaving the block the server is shut down, the thread joined (at most
    *timeout* seconds) and the server closed.  The address is known before the
    block starts (``bound.address``), so clients need no retry loop.

    Raises:
        RuntimeError: the serving thread did not stop within *timeout*.
    """
    thread = threading.Thread(
        target=bound.serve_forever,
        kwargs={"poll_interval": poll_interval},
        name=f"servekit serving {bound.address!r}",
    )
    thread.start()
    try:
        yield bound
    finally:
        bound.shutdown()
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"serve_forever of {bound!r} did not stop within {timeout} s")
        bound.close()


def _family(address: Address) -> socket.AddressFamily:
    if isinstance(address, (str, bytes)):
        return socket.AF_UNIX
    return socket.AF_INET6 if ":" in address[0] else socket.AF_INET


def stream_exchange(address: Address, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Connect to *address*, send *data*, half-close, and return all bytes until EOF.

    A connection the server resets (it closed without reading everything)
    ends the answer like an EOF does.
    """
    chunks = []
    with socket.socket(_family(address), socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, BrokenPipeError):
            pass
        except OSError as exc:
            if exc.errno != errno.ENOTCONN:
                raise
    return b"".join(chunks)


def datagram_exchange(
    address: Address, data: bytes, *, timeout: float = 10.0, reply_path: str | None = None
) -> bytes:
    """Send one datagram to *address* and return the first datagram that comes back.

    A Unix datagram client needs an address of its own to get a reply: pass
    *reply_path* (it is removed afterwards).

    Raises:
        TimeoutError: no reply within *timeout*.
    """
    with socket.socket(_family(address), socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        if reply_path is not None:
            sock.bind(reply_path)
        try:
            sock.sendto(data, address)
            return sock.recv(65536)
        finally:
            if reply_path is not None:
                os.unlink(reply_path)


def recv_line(sock: socket.socket) -> bytes:
    """Read from *sock* up to and including a newline; less if the peer closes first.

    Bytes after the newline in the same segment are returned too (a
    line-at-a-time client does not send them).  The socket's own timeout
    bounds each wait.
    """
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data
