"""The public names of :mod:`servekit`, imported for real.

``servekit/__init__.py`` re-exports these lazily, on first use, so that
``import servekit.classic`` loads only what the classic adapter needs.
"""

from ._types import Address as Address
from ._types import IPAddress as IPAddress
from ._types import Predicate as Predicate
from ._types import UnixAddress as UnixAddress
from .abc import Acceptor as Acceptor
from .abc import BoundServer as BoundServer
from .abc import Dispatcher as Dispatcher
from .abc import Gate as Gate
from .abc import Handler as Handler
from .abc import Listener as Listener
from .abc import Request as Request
from .abc import Transport as Transport
from .abc import WorkerHost as WorkerHost
from .abc import Workers as Workers
from .acceptors import DatagramAcceptor as DatagramAcceptor
from .acceptors import StreamAcceptor as StreamAcceptor
from .connections import Datagram as Datagram
from .connections import DeadlineExceeded as DeadlineExceeded
from .connections import SocketWriter as SocketWriter
from .connections import StreamConnection as StreamConnection
from .deadlines import Deadlines as Deadlines
from .dispatchers import Forked as Forked
from .dispatchers import Inline as Inline
from .dispatchers import Pooled as Pooled
from .dispatchers import Threaded as Threaded
from .dispatchers import forked as forked
from .dispatchers import inline as inline
from .dispatchers import pooled as pooled
from .dispatchers import threaded as threaded
from .errors import BindError as BindError
from .errors import ServerClosedError as ServerClosedError
from .servers import Bound as Bound
from .servers import ErrorHandler as ErrorHandler
from .servers import Server as Server
from .servers import run as run
from .servers import server as server
from .events import Connection as Connection
from .events import DrainReport as DrainReport
from .gates import any_byte as any_byte
from .gates import at_least as at_least
from .gates import first_line as first_line
from .transports import TCPTransport as TCPTransport
from .transports import format_address as format_address
from .transports import UDPTransport as UDPTransport
from .transports import UnixDatagramTransport as UnixDatagramTransport
from .transports import UnixStreamTransport as UnixStreamTransport
from .transports import tcp as tcp
from .transports import udp as udp
from .transports import unix_datagram as unix_datagram
from .transports import unix_stream as unix_stream
