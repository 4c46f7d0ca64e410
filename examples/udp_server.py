"""The reference page's UDP server, composed: reply to each datagram in upper case.

Run:  python examples/udp_server.py --port 9999
Then: python examples/udp_client.py --port 9999 hello world
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import _checkout  # noqa: F401  (servekit from this checkout's lib/ when it is not installed)
from servekit import Datagram, format_address, server, udp


def shout(dg: Datagram) -> None:
    data = dg.data.strip()
    print(f"{format_address(dg.client_address)} wrote: {data!r}", flush=True)
    dg.reply(data.upper())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (the default)")
    parser.add_argument("--max-requests", type=int, default=None, help="stop after this many datagrams")
    args = parser.parse_args(argv)

    with server(udp(args.host, args.port), shout).bind() as bound:
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
