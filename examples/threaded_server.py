"""The reference page's threaded example, composed: a thread per request, three clients.

The server answers each client with the name of the thread that served it;
the script starts the server, runs three clients, then shuts the server down.
"""

from __future__ import annotations

import argparse
import socket
import threading
from collections.abc import Sequence

import _checkout  # noqa: F401  (servekit from this checkout's lib/ when it is not installed)
from servekit import Address, StreamConnection, format_address, server, tcp, threaded
from servekit.testing import serving


def name_the_thread(conn: StreamConnection) -> None:
    data = str(conn.socket.recv(1024), "ascii")
    conn.socket.sendall(bytes(f"{threading.current_thread().name}: {data}", "ascii"))


def client(address: Address, message: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(address)
        sock.sendall(bytes(message, "ascii"))
        print(f"Received: {str(sock.recv(1024), 'ascii')}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (the default)")
    args = parser.parse_args(argv)

    bound = server(tcp(args.host, args.port), name_the_thread, dispatcher=threaded()).bind()
    print(f"listening on {format_address(bound.address)}", flush=True)
    # serving() runs serve_forever in a thread and shuts down and closes on exit.
    with serving(bound):
        for number in (1, 2, 3):
            client(bound.address, f"Hello World {number}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
