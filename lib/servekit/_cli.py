"""``python -m servekit``: serve a handler from the command line, as gunicorn and uvicorn serve an app.

::

    python -m servekit MODULE:HANDLER --bind URL [--bind URL ...] [--workers N] [--metrics URL]

*HANDLER* is a plain function of one stream connection (a blocking handler,
run on a pool of ``--threads`` threads per worker) or what the reactor serves
(``servekit.framing.lines(...)``, ``servekit.protocols.protocol(...)``).
"""

from __future__ import annotations

import argparse
import importlib
import ipaddress
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Final, NoReturn, TypeAlias

import attrs

from . import systemd
from ._types import Address
from .abc import Listener, Transport
from .connections import StreamConnection
from .dispatchers import pooled
from .errors import BindError
from .events import Stats
from .metrics import metrics_server
from .protocols import Evented
from .proxy import ProxyProtocol
from .runner import run
from .servers import Bound, Server, server
from .tls import TLSTransport, tls
from .transports import TCPTransport, adopt, format_address, tcp, unix_stream

__all__ = ("main", "parse_bind")

log: Final = logging.getLogger("servekit.cli")

Conn: TypeAlias = StreamConnection[Address]
StreamTransport: TypeAlias = Transport[Conn, Address]
Handler: TypeAlias = Callable[[Conn], object] | Evented[Conn]

DESCRIPTION: Final = """\
Serve HANDLER, found in MODULE, on every --bind address until SIGTERM or
Ctrl-C, then drain (finish what is in flight, for at most --drain-seconds)
and exit 0.

HANDLER is either a plain function of one connection, which reads and
writes conn.rfile / conn.wfile (run on a pool of --threads threads), or
what servekit's reactor serves (servekit.framing.lines(fn),
servekit.protocols.protocol(cls), ...), which holds thousands of
connections in one thread.
"""

EPILOG: Final = """\
addresses (URL):
  tcp://HOST:PORT     TCP, e.g. tcp://0.0.0.0:8000, tcp://[::1]:8000 (port 0: any free port)
  unix:PATH           a Unix stream socket at PATH (removed again on exit)
  fd://N              a listening socket inherited as file descriptor N
                      (systemd socket activation passes them from fd 3 on)

examples:
  python -m servekit examples.whoami:handler --bind tcp://127.0.0.1:8000
  python -m servekit app:handler --bind tcp://0.0.0.0:8000 --bind unix:/run/app.sock --workers 4
  python -m servekit app:handler --bind tcp://0.0.0.0:8000 --metrics tcp://127.0.0.1:9100
"""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


class URLError(ValueError):
    """A --bind or --metrics URL that does not parse."""


def parse_bind(url: str, *, reuse_port: bool = False) -> StreamTransport:
    """The transport of a ``--bind`` URL: ``tcp://HOST:PORT``, ``unix:PATH`` or ``fd://N`` (TCP with ``SO_REUSEPORT`` if *reuse_port*).

    Raises:
        URLError: *url* is none of these, naming what is wrong with it.
    """
    if url.startswith("tcp://"):
        host, port = _host_port(url, url[len("tcp://") :])
        return tcp(host, port, reuse_port=reuse_port)
    if url.startswith("unix:"):
        path = url[len("unix:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise URLError(f"{url!r}: a Unix socket needs a path, as in unix:/run/app.sock")
        return unix_stream(path)
    if url.startswith("fd://"):
        number = url[len("fd://") :]
        if not number.isdigit():
            raise URLError(f"{url!r}: fd:// takes a file descriptor number, as in fd://3")
        return adopt(int(number), "stream")
    raise URLError(f"{url!r}: expected tcp://HOST:PORT, unix:PATH or fd://N")


def _host_port(url: str, rest: str) -> tuple[str, int]:
    if rest.startswith("["):
        host, bracket, port_text = rest[1:].partition("]:")
        if not bracket:
            raise URLError(f"{url!r}: an IPv6 address is written tcp://[ADDRESS]:PORT")
        try:
            ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            raise URLError(f"{url!r}: {host!r} is not an IPv6 address") from None
    else:
        host, colon, port_text = rest.rpartition(":")
        if not colon or not host:
            raise URLError(f"{url!r}: expected tcp://HOST:PORT")
        if ":" in host:
            raise URLError(f"{url!r}: write an IPv6 address in brackets, as in tcp://[::1]:8000")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise URLError(f"{url!r}: the port must be a number from 0 to 65535, got {port_text!r}")
    return host, int(port_text)


def _load(target: str) -> Handler:
    """The object *target* (``MODULE:NAME``) names, if it is a handler."""
    module_name, colon, name = target.partition(":")
    if not colon or not module_name or not name:
        raise ValueError(f"{target!r}: expected MODULE:HANDLER, as in examples.whoami:handler")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(f"{target!r}: no module {exc.name!r} (run from the directory it is in?)") from None
    found: object = module
    for part in name.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ValueError(f"{target!r}: module {module_name!r} has no {name!r}") from None
    if isinstance(found, Evented):
        if found.kind != "stream":
            raise ValueError(f"{target!r} serves datagrams; the --bind addresses are stream sockets")
        return found
    if not callable(found):
        raise ValueError(f"{target!r} is a {type(found).__name__}, not a handler (a function of one connection)")
    return found


def _tls(transport: StreamTransport, args: argparse.Namespace) -> StreamTransport:
    return tls(transport, cert=args.tls_cert, key=args.tls_key)


def _describe(
    handler: Handler,
    transports: tuple[StreamTransport, ...],
    args: argparse.Namespace,
    service_actions: Callable[[], object] | None = None,
) -> Server[Conn, Address]:
    proxy = None
    if args.proxy_protocol is not None:
        proxy = ProxyProtocol(versions=(1,) if args.proxy_protocol == "v1" else (2,))
    if isinstance(handler, Evented):
        return server(transports, handler, service_actions=service_actions, proxy=proxy)
    return server(
        transports,
        handler,
        dispatcher=pooled(workers=args.threads, block_on_close=False),
        service_actions=service_actions,
        proxy=proxy,
    )


def _leaving(limit: int) -> tuple[Callable[[], object], Callable[[Bound[Conn, Address]], None]]:
    """A service action that has this worker drain and exit (SIGTERM to itself) after *limit*
    connections, and how to give it the worker's server once it is bound."""
    served: list[Bound[Conn, Address]] = []

    def check() -> None:
        if served and served[0].stats().connections_closed_total >= limit:
            served.clear()  # (once)
            os.kill(os.getpid(), signal.SIGTERM)

    return check, served.append


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(
        prog="python -m servekit",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("target", metavar="MODULE:HANDLER", help="the handler to serve, as in examples.whoami:handler")
    parser.add_argument("--bind", metavar="URL", action="append", default=[], help="an address to listen on (repeatable)")
    parser.add_argument("--workers", metavar="N", type=_positive, default=1, help="worker processes (default 1: serve in this one)")
    parser.add_argument("--threads", metavar="N", type=_positive, default=32, help="threads per worker for a blocking handler (default 32)")
    parser.add_argument("--metrics", metavar="URL", help="serve GET /metrics (Prometheus' text format) on this address")
    parser.add_argument("--drain-seconds", metavar="S", type=_seconds, default=10.0, help="drain deadline on SIGTERM (default 10)")
    parser.add_argument(
        "--reuse-port", action="store_true",
        help="with --workers: each worker its own SO_REUSEPORT socket on each tcp:// address, the kernel "
        "spreading connections evenly by address (default: one socket shared, taken by whichever worker is free)",
    )  # fmt: skip
    parser.add_argument("--max-requests", metavar="N", type=_positive, help="with --workers: replace a worker after N connections")
    parser.add_argument("--max-requests-jitter", metavar="N", type=_non_negative, default=0, help="... plus a random 0..N")
    parser.add_argument(
        "--proxy-protocol", choices=("v1", "v2"),
        help="every connection starts with a PROXY protocol header (HAProxy's send-proxy / send-proxy-v2): "
        "the handler sees the real client's address; a connection without one is refused",
    )  # fmt: skip
    parser.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate chain (PEM); SIGHUP reads it again")
    parser.add_argument("--tls-key", metavar="FILE", help="... and this key (PEM; default: in the --tls-cert file)")
    args = parser.parse_args(argv)
    if args.tls_key and not args.tls_cert:
        parser.error("--tls-key needs --tls-cert")
    if not args.bind:
        parser.error("at least one --bind URL is needed, as in --bind tcp://127.0.0.1:8000")
    if args.max_requests is not None and args.workers == 1:
        parser.error("--max-requests needs --workers 2 or more (a worker is replaced by the supervisor)")
    if args.max_requests_jitter and args.max_requests is None:
        parser.error("--max-requests-jitter needs --max-requests (the jitter is added to it)")
    try:
        transports = tuple(parse_bind(url, reuse_port=args.reuse_port) for url in args.bind)
        metrics = None if args.metrics is None else parse_bind(args.metrics)
        handler = _load(args.target)
        if args.tls_cert:
            transports = tuple(_tls(transport, args) for transport in transports)
    except (ValueError, OSError) as exc:  # (OSError, ssl.SSLError: certificate files)
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.workers == 1:
            return _serve_here(handler, transports, metrics, args)
        return _serve_workers(handler, args.target, transports, metrics, args)
    except BindError as exc:  # (servekit's: an address in use, a path not writable, ...)
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 1


def _serve_here(
    handler: Handler,
    transports: tuple[StreamTransport, ...],
    metrics: StreamTransport | None,
    args: argparse.Namespace,
) -> int:
    bound = _describe(handler, transports, args, _watchdog()).bind()
    scraped = None if metrics is None else metrics_server(metrics, bound.stats).bind()

    def ready(served: Bound[Conn, Address]) -> None:
        for address in served.addresses:
            log.info("listening on %s", format_address(address))
        if scraped is not None:
            _serve_in_thread(scraped)
        _tell("READY=1", f"STATUS=serving on {', '.join(format_address(a) for a in served.addresses)}")

    reloading = [transport for transport in transports if isinstance(transport, TLSTransport)]
    if reloading:

        def reload(signum: int, frame: object) -> None:
            for transport in reloading:
                try:
                    transport.reload()
                except (OSError, ValueError) as exc:  # (ssl.SSLError is an OSError)
                    log.error("SIGHUP: the certificates of %r could not be read again: %s", transport, exc)
                    return
            log.info("SIGHUP: certificates read again")

        signal.signal(signal.SIGHUP, reload)
    try:
        run(bound, drain_seconds=args.drain_seconds, ready=ready, stopping=lambda _: _tell("STOPPING=1"))
    finally:
        if scraped is not None:
            scraped.close()
    return 0


def _serve_workers(
    handler: Handler,
    target: str,
    transports: tuple[StreamTransport, ...],
    metrics: StreamTransport | None,
    args: argparse.Namespace,
) -> int:
    from ._supervisor import Supervisor  # noqa: PLC0415 - only pre-fork needs it

    slots = _slots(transports, args.workers if args.reuse_port else 1)
    loaded = [handler]

    def reload() -> None:  # (a worker after SIGHUP: the handler's module as it is now)
        module = sys.modules.get(target.partition(":")[0])
        if module is not None:
            importlib.reload(module)
        loaded[0] = _load(target)

    def make(fds: Sequence[int]) -> Bound[Conn, Address]:
        transports: tuple[StreamTransport, ...] = tuple(adopt(fd, "stream") for fd in fds)
        if args.tls_cert:  # (read in each worker: one started after SIGHUP reads the files as they are now)
            transports = tuple(_tls(transport, args) for transport in transports)
        if args.max_requests is None:
            return _describe(loaded[0], transports, args).bind()
        check, give = _leaving(args.max_requests + random.randint(0, args.max_requests_jitter))
        bound = _describe(loaded[0], transports, args, check).bind()
        give(bound)
        return bound

    supervisor = Supervisor(slots, make, args.workers, args.drain_seconds, reload=reload)
    scraped = None if metrics is None else metrics_server(metrics, supervisor.stats).bind()

    def ready() -> None:
        for listener in slots[0]:
            log.info("listening on %s (%d workers)", format_address(listener.address), args.workers)
        _tell("READY=1", f"STATUS={args.workers} workers serving")

    try:
        if scraped is not None:
            _serve_in_thread(scraped)
        return supervisor.run(ready, stopping=lambda: _tell("STOPPING=1"), tick=_watchdog())
    finally:
        if scraped is not None:
            scraped.close()


def _slots(transports: tuple[StreamTransport, ...], count: int) -> list[list[Listener[Address]]]:
    """*count* slots of listeners for the supervisor, one listener per transport in each.

    With one slot every worker shares the sockets.  With more, each slot gets
    a socket of its own on each TCP address (the transports set
    ``SO_REUSEPORT``; a port 0 is the port the first one got); a Unix socket
    or an inherited fd is one socket, in every slot.
    """
    slots: list[list[Listener[Address]]] = [[] for _ in range(count)]
    made: list[Listener[Address]] = []
    try:
        for transport in transports:
            raw = transport.inner if isinstance(transport, TLSTransport) else transport
            first = raw.listen()
            made.append(first)
            slots[0].append(first)
            port = first.address[1] if isinstance(first.address, tuple) else None
            for slot in slots[1:]:
                if isinstance(raw, TCPTransport) and isinstance(port, int):
                    other = attrs.evolve(raw, port=port).listen()
                    made.append(other)
                    slot.append(other)
                else:
                    slot.append(first)
    except BaseException:
        for listener in made:
            listener.close()
        raise
    return slots


def _tell(*assignments: str) -> None:
    """Tell the service manager (systemd's ``NOTIFY_SOCKET``, when set); a failure is logged, not raised."""
    try:
        systemd.notify(*assignments)
    except (OSError, ValueError) as exc:
        log.warning("could not notify the service manager (%s): %s", " ".join(assignments), exc)


def _watchdog() -> Callable[[], object] | None:
    """A service action that pings systemd's watchdog at half its interval, or ``None`` when none is asked for."""
    try:
        interval = systemd.watchdog_interval()
    except ValueError as exc:
        log.warning("WATCHDOG_USEC ignored: %s", exc)
        return None
    if interval is None:
        return None
    due = [0.0]

    def ping() -> None:
        now = time.monotonic()
        if now >= due[0]:
            due[0] = now + interval / 2
            _tell("WATCHDOG=1")

    return ping


def _serve_in_thread(bound: Bound[Conn, Address]) -> None:
    import threading  # noqa: PLC0415

    threading.Thread(target=bound.serve_forever, name="servekit metrics", daemon=True).start()


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _non_negative(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds (a number >= 0), got {text!r}")
    return value


if __name__ == "__main__":
    raise SystemExit(main())
