"""The reference page's TCP server, composed: answer each client with its data in upper case.

Run:  python examples/tcp_echo_server.py --port 9999
Then: python examples/tcp_echo_client.py --port 9999 hello world
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import _checkout  # noqa: F401  (servekit from this checkout's lib/ when it is not installed)
from servekit import StreamConnection, format_address, server, tcp


def shout(conn: StreamConnection) -> None:
    """Read one chunk (up to 1 KiB) and send it back upper-cased."""
    data = conn.socket.recv(1024).strip()
    print(f"{format_address(conn.client_address)} wrote: {data!r}", flush=True)
    conn.socket.sendall(data.upper())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (the default)")
    parser.add_argument("--max-requests", type=int, default=None, help="stop after this many requests")
    args = parser.parse_args(argv)

    with server(tcp(args.host, args.port), shout).bind() as bound:
        print(f"listening on {format_address(bound.address)}", flush=True)
        try:
            if args.max_requests is None:
                bound.serve_forever()
            else:
                for _ in range(args.max_requests):
                    bound.handle_request()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
