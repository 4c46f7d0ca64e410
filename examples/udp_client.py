"""The reference page's UDP client: send the words in one datagram, print the reply."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("words", nargs="*", default=["hello", "world"])
    args = parser.parse_args(argv)
    data = " ".join(args.words)

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        sock.sendto(bytes(data + "\n", "utf-8"), (args.host, args.port))
        received = str(sock.recv(1024), "utf-8")
    print(f"Sent:     {data}")
    print(f"Received: {received}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
