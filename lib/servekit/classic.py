"""A drop-in replacement for the standard library's ``socketserver``.

``import servekit.classic as socketserver``: the same names, hierarchy, hooks,
class attributes and behaviour, served by servekit's one serve loop and its
dispatchers.  The differences are deliberate and few (see the migration
notes): ``shutdown()`` returns at once, ``shutdown()`` before
``serve_forever()`` does not deadlock, ``accept()`` failing with
``EMFILE``-like errors backs off instead of spinning, closing the server stops
a loop running in another thread, bind errors name the address, and a TLS
listener's handshake runs where the request is handled, not on the serve loop.

The typing lives in the ``servekit-stubs`` partial stub package (this
module's bodiless combinations are generated, invisible to a type checker).
"""

import os as _os
import socket as _socket
import sys as _sys
import types as _types

from ._classic import handlers as _handlers
from ._classic import mixins as _mixins
from ._classic import servers as _servers

BaseServer = _servers.BaseServer
TCPServer = _servers.TCPServer
UDPServer = _servers.UDPServer
ThreadingMixIn = _mixins.ThreadingMixIn
BaseRequestHandler = _handlers.BaseRequestHandler
StreamRequestHandler = _handlers.StreamRequestHandler
DatagramRequestHandler = _handlers.DatagramRequestHandler

_HAS_FORK = hasattr(_os, "fork")
_HAS_UNIX = hasattr(_socket, "AF_UNIX")

__all__ = [
    "BaseServer",
    "TCPServer",
    "UDPServer",
    "ThreadingUDPServer",
    "ThreadingTCPServer",
    "BaseRequestHandler",
    "StreamRequestHandler",
    "DatagramRequestHandler",
    "ThreadingMixIn",
]
if _HAS_FORK:
    ForkingMixIn = _mixins.ForkingMixIn
    __all__ += ["ForkingUDPServer", "ForkingTCPServer", "ForkingMixIn"]
if _HAS_UNIX:
    UnixStreamServer = _servers.UnixStreamServer
    UnixDatagramServer = _servers.UnixDatagramServer
    __all__ += ["UnixStreamServer", "UnixDatagramServer", "ThreadingUnixStreamServer", "ThreadingUnixDatagramServer"]
    if _HAS_FORK and _sys.version_info >= (3, 12):
        __all__ += ["ForkingUnixStreamServer", "ForkingUnixDatagramServer"]

# The bodiless combinations: (name, mix-in, server, available).  Their order
# is the standard library's; each exists exactly where it does there.
_COMBINATIONS: tuple[tuple[str, str, str, bool], ...] = (
    ("ForkingUDPServer", "ForkingMixIn", "UDPServer", _HAS_FORK),
    ("ForkingTCPServer", "ForkingMixIn", "TCPServer", _HAS_FORK),
    ("ThreadingUDPServer", "ThreadingMixIn", "UDPServer", True),
    ("ThreadingTCPServer", "ThreadingMixIn", "TCPServer", True),
    ("ThreadingUnixStreamServer", "ThreadingMixIn", "UnixStreamServer", _HAS_UNIX),
    ("ThreadingUnixDatagramServer", "ThreadingMixIn", "UnixDatagramServer", _HAS_UNIX),
    ("ForkingUnixStreamServer", "ForkingMixIn", "UnixStreamServer", _HAS_UNIX and _HAS_FORK and _sys.version_info >= (3, 12)),
    ("ForkingUnixDatagramServer", "ForkingMixIn", "UnixDatagramServer", _HAS_UNIX and _HAS_FORK and _sys.version_info >= (3, 12)),
)


def _publish() -> None:
    namespace = globals()
    # The real classes first, so that reprs, pickles and tracebacks name
    # this module rather than the private one.
    for name in ("BaseServer", "TCPServer", "UDPServer", "UnixStreamServer", "UnixDatagramServer"):
        _place(namespace.get(name), name)
    for name in ("ThreadingMixIn", "ForkingMixIn", "BaseRequestHandler", "StreamRequestHandler"):
        _place(namespace.get(name), name)
    _place(namespace.get("DatagramRequestHandler"), "DatagramRequestHandler")
    for name, mixin, base, available in _COMBINATIONS:
        if available:
            cls = _types.new_class(name, (namespace[mixin], namespace[base]))
            _place(cls, name)
            namespace[name] = cls


def _place(cls: object, name: str) -> None:
    if isinstance(cls, type):
        cls.__module__ = __name__
        cls.__qualname__ = name


_publish()
del _publish, _place
