"""A socket-activated program for tests/integration/test_systemd.py: what servekit.systemd sees, as JSON.

Started by ``systemd-socket-activate`` (or directly, for the cases it cannot
make), as one of::

    python systemd_child.py inspect [--listen-pid-self] [--adopt WHICH KIND]...
    python systemd_child.py serve WHICH

``inspect`` prints one JSON line (see :func:`inspect`): the sockets
:func:`servekit.systemd.listeners` found (or its error, and that a second
call gives the same), the activation variables left in the environment,
whether the fds are inheritable, and for each ``--adopt`` the address a
server bound on ``systemd.socket(WHICH, KIND)`` reports, or the error.
``--listen-pid-self`` first sets ``LISTEN_PID`` to this process's id, as a
manager that ``exec``\\ s the program would.  WHICH is an index when it is
all digits, else a name.

``serve`` prints the same JSON line (without adopting), then serves a line
echo on ``systemd.socket(WHICH, "tcp")`` with :func:`servekit.run`: it
sends ``STATUS=...`` and ``READY=1`` once it listens, and ``STOPPING=1``
when ``run`` returns (after SIGTERM and the drain), then exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from servekit import AdoptKind, format_address, run, server, systemd
from servekit.framing import lines

VARIABLES = ("LISTEN_PID", "LISTEN_PIDFDID", "LISTEN_FDS", "LISTEN_FDNAMES")

KINDS: dict[str, AdoptKind] = {
    "tcp": "tcp",
    "unix_stream": "unix_stream",
    "stream": "stream",
    "udp": "udp",
    "unix_datagram": "unix_datagram",
    "datagram": "datagram",
}


def _which(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _error(exc: BaseException) -> dict[str, object]:
    return {"type": type(exc).__name__, "message": str(exc), "notes": list(getattr(exc, "__notes__", []))}


def _ignore(request: object) -> None:
    pass


def _adopt(which: int | str, kind: str) -> dict[str, object]:
    """The address a server on ``systemd.socket(which, kind)`` reports, or the error."""
    try:
        transport = systemd.socket(which, KINDS[kind])
        with server(transport, _ignore).bind() as bound:
            return {"address": format_address(bound.address), "fd": transport.fd, "kind": transport.kind}
    except (LookupError, ValueError, OSError) as exc:
        return {"error": _error(exc)}


def inspect(adopt: Sequence[tuple[str, str]] = ()) -> dict[str, object]:
    """What servekit.systemd sees in this process, and what adopting each of *adopt* gives."""
    report: dict[str, object] = {"pid": os.getpid()}
    try:
        found = systemd.listeners()
    except (ValueError, OSError) as exc:
        report["error"] = _error(exc)
        try:
            systemd.listeners()
        except (ValueError, OSError) as again:
            report["again"] = _error(again)
    else:
        report["listeners"] = [[listen_fd.fd, listen_fd.name] for listen_fd in found]
        report["same"] = systemd.listeners() is found
        report["inheritable"] = [os.get_inheritable(listen_fd.fd) for listen_fd in found]
    report["left"] = {name: os.environ.get(name) for name in VARIABLES}
    report["adopted"] = [_adopt(_which(which), kind) for which, kind in adopt]
    return report


def serve(which: int | str) -> int:
    transport = systemd.socket(which, "tcp")

    def announce(bound: object) -> None:
        systemd.status(f"echoing on fd {transport.fd}")
        systemd.ready()

    run(server(transport, lines(lambda line: line)), ready=announce, drain_seconds=5.0, poll_interval=0.05)
    # (run() has no hook at the first signal yet: STOPPING=1 goes once the drain is over.)
    systemd.stopping()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    modes = parser.add_subparsers(dest="mode", required=True)
    inspecting = modes.add_parser("inspect")
    inspecting.add_argument("--listen-pid-self", action="store_true")
    inspecting.add_argument("--adopt", nargs=2, action="append", default=[], metavar=("WHICH", "KIND"))
    serving = modes.add_parser("serve")
    serving.add_argument("which")
    args = parser.parse_args(argv)
    if args.mode == "inspect":
        if args.listen_pid_self:
            os.environ["LISTEN_PID"] = str(os.getpid())
        print(json.dumps(inspect([(which, kind) for which, kind in args.adopt])), flush=True)
        return 0
    print(json.dumps(inspect()), flush=True)
    return serve(_which(args.which))


if __name__ == "__main__":
    sys.exit(main())
