"""servekit: typed, composable socket servers.

A server is composed from a transport (the listening socket), a handler (a
plain function of one request) and a dispatcher (where the handler runs)::

    from servekit import StreamConnection, server, tcp, threaded

    def echo(conn: StreamConnection) -> None:
        for line in conn.rfile:
            conn.wfile.write(line)

    with server(tcp("127.0.0.1", 0), echo, dispatcher=threaded()).bind() as bound:
        print("listening on", bound.address)
        bound.serve_forever()

``servekit.classic`` is a drop-in replacement for the standard library's
``socketserver``, built on the same parts.
"""

from ._lite import TYPE_CHECKING

if TYPE_CHECKING:
    from ._api import *  # noqa: F403 - the names are listed in __all__ below
else:
    def __getattr__(name: str) -> object:
        # The first public name asked for imports them all (attrs, logging,
        # ...); until then ``import servekit.classic`` loads neither.
        if name not in __all__:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from . import _api

        namespace = globals()
        for public in __all__:
            namespace[public] = getattr(_api, public)
        return namespace[name]

    def __dir__() -> list[str]:
        return sorted(set(globals()) | set(__all__))

del TYPE_CHECKING  # (not a name of the package)

__version__ = "0.1.0"

__all__ = (
    "AcceptFailed",
    "Accepted",
    "Acceptor",
    "Address",
    "Admission",
    "AdoptKind",
    "AdoptedTransport",
    "BindError",
    "Bound",
    "BoundServer",
    "ChildFailed",
    "Connection",
    "ConnectionClosed",
    "Datagram",
    "DatagramAcceptor",
    "DeadlineExceeded",
    "Deadlines",
    "Dispatcher",
    "DrainFinished",
    "DrainReport",
    "DrainStarted",
    "ErrorHandler",
    "Event",
    "EventSink",
    "Forked",
    "Gate",
    "Handler",
    "HandlerFinished",
    "HandlerStarted",
    "IPAddress",
    "Inline",
    "Listener",
    "Listeners",
    "Pooled",
    "Predicate",
    "Rejected",
    "Request",
    "RunsIn",
    "Server",
    "ServerClosedError",
    "SocketWriter",
    "StageFailed",
    "Stats",
    "StreamAcceptor",
    "StreamConnection",
    "TCPTransport",
    "Threaded",
    "Transport",
    "UDPTransport",
    "UnixAddress",
    "UnixDatagramTransport",
    "UnixStreamTransport",
    "WorkerHost",
    "WorkerTraits",
    "Workers",
    "adopt",
    "any_byte",
    "at_least",
    "first_line",
    "forked",
    "format_address",
    "inline",
    "pooled",
    "run",
    "server",
    "tcp",
    "threaded",
    "udp",
    "unix_datagram",
    "unix_stream",
)
