"""Who am I, as the server sees me: a one-line answer per connection, for ``python -m servekit``.

``handler`` answers each stream connection with one line -- ``"<host>
<port>\\n"`` of the client for an IP client (the real client's, behind a
load balancer speaking the PROXY protocol), ``"unix\\n"`` for a Unix-socket
client -- and closes it.

Run, from the repository root:

    python -m servekit examples.whoami:handler --bind tcp://127.0.0.1:8000
"""

from __future__ import annotations

from servekit import Address, StreamConnection


def handler(conn: StreamConnection[Address]) -> None:
    peer = conn.client_address
    if isinstance(peer, tuple):
        conn.wfile.write(f"{peer[0]} {peer[1]}\n".encode())
    else:
        conn.wfile.write(b"unix\n")
