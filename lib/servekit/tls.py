"""TLS: a transport wrapper whose handshake runs in the worker, under a deadline, never on the serve loop.

::

    server(tls(tcp("0.0.0.0", 8443), cert="cert.pem", key="key.pem"), handle, dispatcher=pooled())

The raw connection is accepted on the loop (wrapping it costs no I/O); the
handshake is the worker's first step -- a stage named ``"tls"`` -- bounded
by *handshake_timeout* in all, so a client that is silent or trickles its
handshake delays nobody else and is closed at its deadline.  A failed or
late handshake is a :class:`~servekit.events.StageFailed` event and counts
in ``stats().stage_errors_by_stage["tls"]``.  The handler gets the
connection with ``conn.socket`` an :class:`ssl.SSLSocket` and
``rfile``/``wfile`` over it; :func:`info` tells the server name the client
asked for (SNI), the protocol it chose (ALPN), the TLS version and cipher.
:meth:`TLSTransport.reload` reads the certificate files again: connections
accepted from then on use them.

The PROXY protocol works with TLS (its header comes before the handshake
and is read on the loop).  Not yet with TLS: a first-request gate (it would
peek at ciphertext), ``deadlines=`` and the reactor -- each is refused with
a ``TypeError`` when the server is described.  So a silent client holds a
worker until the handshake's deadline: with a pool, size it for that (or
serve TLS with ``threaded()``).
"""

from __future__ import annotations

import os
import select
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Final, Generic, NamedTuple, final

from ._types import _AddrT
from .abc import Acceptor, Listener, Transport
from .connections import StreamConnection, _over

__all__ = ("TLSInfo", "TLSTransport", "info", "tls")

#: The attribute an accepted connection's SSLSocket keeps the client's SNI name in.
_SNI: Final = "_servekit_sni"
#: The handshake's default deadline, in seconds.
HANDSHAKE_TIMEOUT: Final = 10.0


class TLSInfo(NamedTuple):
    """What a TLS connection agreed on (:func:`info`).

    Attributes:
        server_name: the host name the client asked for (SNI), or ``None``.
        alpn: the application protocol chosen (ALPN, such as ``"h2"``), or ``None``.
        version: the TLS version, such as ``"TLSv1.3"``.
        cipher: the cipher suite's name.
    """

    server_name: str | None
    alpn: str | None
    version: str
    cipher: str


def info(conn: StreamConnection[object]) -> TLSInfo | None:
    """What *conn*'s TLS handshake agreed on; ``None`` for a connection without TLS (or before its handshake)."""
    sock = conn.socket
    if not isinstance(sock, ssl.SSLSocket):
        return None
    version = sock.version()
    cipher = sock.cipher()
    if version is None or cipher is None:
        return None
    return TLSInfo(getattr(sock, _SNI, None), sock.selected_alpn_protocol(), version, cipher[0])


@final
class _Acceptor(Generic[_AddrT]):
    """The inner transport's acceptor, with each connection's socket wrapped (no handshake yet)."""

    __slots__ = ("_inner", "_transport")

    def __init__(self, inner: Acceptor[StreamConnection[_AddrT]], transport: TLSTransport[_AddrT]) -> None:
        self._inner = inner
        self._transport = transport

    def accept(self, listener: object, /) -> StreamConnection[_AddrT]:
        conn = self._inner.accept(listener)  # type: ignore[arg-type]  # (the listener's socket)
        raw = conn.socket
        try:
            wrapped = self._transport.context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        except BaseException:
            raw.close()
            raise
        return _over(conn, wrapped)  # (the same connection, over TLS: wrap_socket took the raw socket's fd)

    def release(self, request: StreamConnection[_AddrT], /) -> None:
        self._inner.release(request)

    def discard(self, request: StreamConnection[_AddrT], /) -> None:
        self._inner.discard(request)


@final
class TLSTransport(Generic[_AddrT]):
    """A stream transport with TLS on top: made by :func:`tls` (see the module's docstring).

    Attributes:
        inner: the transport that listens (``tcp(...)``, ``unix_stream(...)``, ...).
        handshake_timeout: seconds a client has for its whole handshake.
    """

    __slots__ = ("_files", "context", "handshake_timeout", "inner")

    def __init__(
        self,
        inner: Transport[StreamConnection[_AddrT], _AddrT],
        context: ssl.SSLContext,
        *,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        files: Callable[[], ssl.SSLContext] | None = None,
    ) -> None:
        if not isinstance(context, ssl.SSLContext):
            raise TypeError(f"context must be an ssl.SSLContext, got {type(context).__name__} {context!r}")
        given: object = handshake_timeout
        if isinstance(given, bool) or not isinstance(given, (int, float)) or not 0 < handshake_timeout < float("inf"):
            raise ValueError(f"handshake_timeout must be a number of seconds > 0, got {given!r}")
        self.inner = inner
        self.handshake_timeout = float(handshake_timeout)
        self._files = files
        self.context = _with_sni(context)

    def listen(self) -> Listener[_AddrT]:
        return self.inner.listen()

    def acceptor(self) -> Acceptor[StreamConnection[_AddrT]]:
        return _Acceptor(self.inner.acceptor(), self)

    def reload(self) -> None:
        """Read the certificate and key files again; connections accepted from now on use them.

        Raises:
            RuntimeError: the transport was made from a context, not from files.
            OSError, ssl.SSLError: the files could not be read or do not fit
                (the certificates in use stay).
        """
        if self._files is None:
            raise RuntimeError("this TLS transport was given a context: reload it yourself, or make it with tls(cert=, key=)")
        self.context = _with_sni(self._files())  # (one attribute swap: an acceptor sees the old or the new)

    def __repr__(self) -> str:
        return f"tls({self.inner!r}, handshake_timeout={self.handshake_timeout!r})"


def _with_sni(context: ssl.SSLContext) -> ssl.SSLContext:
    """*context*, noting each connection's SNI name on its socket (after a callback it had already)."""
    previous = context.sni_callback

    def note(sock: ssl.SSLSocket | ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> int | None:
        setattr(sock, _SNI, name)
        return None if previous is None else previous(sock, name, ctx)  # type: ignore[arg-type]  # (as typeshed narrows them)

    context.sni_callback = note
    return context


def tls(
    inner: Transport[StreamConnection[_AddrT], _AddrT],
    *,
    cert: str | os.PathLike[str] | None = None,
    key: str | os.PathLike[str] | None = None,
    context: ssl.SSLContext | None = None,
    alpn: Sequence[str] = (),
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
) -> TLSTransport[_AddrT]:
    """TLS over the stream transport *inner*: with a certificate chain and key from files, or a *context* of yours.

    Args:
        inner: the transport that listens.
        cert, key: PEM files (the certificate chain, and its key; *key* may be
            left out when *cert* holds both).  :meth:`TLSTransport.reload`
            reads them again.
        context: a server-side :class:`ssl.SSLContext` of your own, instead of files.
        alpn: the application protocols offered, in order of preference.
        handshake_timeout: seconds a client has for its whole handshake.

    Raises:
        TypeError, ValueError: neither or both of *cert* and *context*, or a bad value.
        OSError, ssl.SSLError: the files could not be read or do not fit.
    """
    if (cert is None) == (context is None):
        raise TypeError("tls() takes cert= (and key=) or context=, one of the two")
    if isinstance(alpn, str):
        raise TypeError(f"alpn must be a sequence of protocol names, not one string: {alpn!r}")
    protocols = list(alpn)
    files: Callable[[], ssl.SSLContext] | None = None
    if cert is not None:
        chain, secret = cert, key

        def files() -> ssl.SSLContext:
            made = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            made.load_cert_chain(chain, secret)
            if protocols:
                made.set_alpn_protocols(protocols)
            return made

        context = files()
    elif protocols:
        assert context is not None
        context.set_alpn_protocols(protocols)
    assert context is not None
    return TLSTransport(inner, context, handshake_timeout=handshake_timeout, files=files)


def handshake_stage(timeout: float) -> Callable[[StreamConnection[_AddrT]], StreamConnection[_AddrT]]:
    """The worker's ``"tls"`` stage: finish the handshake of a connection that has TLS, within *timeout* in all.

    A connection without TLS (another listener of the server) passes as it is.

    Raises:
        TimeoutError: the handshake was not done within *timeout* seconds.
        ssl.SSLError, OSError: it failed.
    """

    def handshake(conn: StreamConnection[_AddrT]) -> StreamConnection[_AddrT]:
        sock = conn.socket
        if not isinstance(sock, ssl.SSLSocket):
            return conn
        deadline = time.monotonic() + timeout
        sock.settimeout(0.0)
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        while True:
            try:
                sock.do_handshake()
                break
            except ssl.SSLWantReadError:
                poller.modify(sock, select.POLLIN)
            except ssl.SSLWantWriteError:
                poller.modify(sock, select.POLLOUT)
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                raise TimeoutError(f"the TLS handshake was not done within {timeout} s")
        sock.settimeout(None)
        return conn

    return handshake
