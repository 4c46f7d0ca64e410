"""The PROXY protocol, versions 1 and 2: a sans-IO parser of the header a proxy sends first.

A proxy in front of a server (HAProxy, a cloud load balancer, stunnel, ...)
puts a short header before a connection's own bytes that says who the client
really is.  This module reads that header from bytes, and from bytes only: the
caller peeks or reads, hands over what it has so far, and learns one of three
things::

    parser = ProxyParser()              # versions=(1, 2), max_length=4096
    header = parser.parse(data)         # the bytes read so far
    if header is None:
        ...                             # a valid start: wait for more (parser.wanted(data) bytes in all)
    else:
        client = data[header.header_length:]   # the client's own bytes, untouched
        peer = sock.getpeername() if header.source is None else header.source

and anything else raises :class:`ProxyError` (a :class:`ValueError`) whose
message names what is wrong -- the connection is to be closed.

Strictness, as the specification asks (HAProxy's ``doc/proxy-protocol.txt``, revision 2020/03/05,
https://github.com/haproxy/haproxy/blob/master/doc/proxy-protocol.txt):

- Never guess.  A connection whose first bytes are neither ``b"PROXY "`` (v1)
  nor the 12-byte v2 signature is refused at once, as is a version the parser
  was not told to accept (``versions=``); a prefix of either is only "need
  more bytes".  A server that accepts PROXY headers must get them from every
  connection, and only from proxies it trusts (admit by the *connection's*
  address, which this module does not see).
- Decide as early as the bytes allow.  A bad v2 version, command, family,
  length or address length is refused as soon as its byte is there, a bad v1
  protocol name as soon as it cannot become ``TCP4``, ``TCP6`` or
  ``UNKNOWN``, and a lone CR or LF at once.
- Never ask for more than the header: :attr:`ProxyHeader.header_length` is
  exactly the header's size, and :meth:`ProxyParser.wanted` never asks for
  more bytes than the header has (so a loop may use it as a low-water mark).

Sizes: a v1 line is at most :data:`V1_MAX_LENGTH` (107) bytes with its CRLF,
as the specification fixes; a v2 header is at most ``max_length`` bytes, 4096
by default -- the fixed 16 bytes, the addresses (216 bytes at most), and
room for the registered TLVs (a UNIQUE_ID has at most 128 bytes, a TLS
server name at most 255) and a load balancer's own -- and at most
:data:`V2_MAX_LENGTH` (16 + 65535, what its length field can say).

Version 2 details decided here: the family alone says how long the address
block is (0, 12, 36 or 216 bytes) and TLVs follow it, exactly filling the
rest.  A ``LOCAL`` header's family and addresses are ignored (its length
may be shorter than the family's addresses; then it has no TLVs); so are
those of an ``AF_UNSPEC`` family or an ``UNSPEC`` protocol.  A registered TLV
that appears twice is refused, as are a UNIQUE_ID over 128 bytes and text
TLVs that are not of their encoding; unknown and custom types are kept, not
judged.

Version 2's TLVs are all kept in order (:attr:`ProxyHeader.tlvs`), and the
registered ones are decoded too: ALPN, AUTHORITY (the TLS SNI), UNIQUE_ID,
NETNS, the SSL block with its sub-TLVs, and CRC32C, which is *verified*
(CRC-32C, Castagnoli, computed here): a header whose checksum does not match
is refused.  Standard library only.

A server reads the header with :class:`ProxyProtocol` (``server(...,
proxy=ProxyProtocol())``); its handler finds the client's address in
``conn.client_address`` and the whole header -- TLVs and all -- with
:func:`header`.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
import weakref
from collections.abc import Iterable
from typing import Final, Literal, NamedTuple, TypeAlias, final

from ._types import Address
from .connections import StreamConnection, _readdress, _socket_of

__all__ = (
    "DEFAULT_MAX_LENGTH",
    "TLV",
    "V1_MAX_LENGTH",
    "V2_MAX_LENGTH",
    "V2_SIGNATURE",
    "ProxyError",
    "ProxyHeader",
    "ProxyParser",
    "ProxyProtocol",
    "SSLInfo",
    "Transport",
    "Version",
    "header",
    "parse",
)

Version: TypeAlias = Literal[1, 2]
"""A version of the PROXY protocol: ``1`` (a text line) or ``2`` (binary)."""

Transport: TypeAlias = Literal["tcp4", "tcp6", "udp4", "udp6", "unix_stream", "unix_datagram", "unknown"]
"""What the proxied connection was: TCP or UDP over IPv4 or IPv6, a Unix stream or datagram socket.

``"unknown"``: the header gives no addresses to use (v1 ``UNKNOWN``, a v2
``LOCAL`` command, or a v2 ``AF_UNSPEC`` family or ``UNSPEC`` protocol); the
connection's own addresses apply.  Version 1 knows only ``tcp4``, ``tcp6`` and
``unknown``.
"""

TLV: TypeAlias = tuple[int, bytes]
"""A v2 type-length-value field as ``(type, value)``: the type is 0 to 255."""

V1_MAX_LENGTH: Final = 107
"""The longest v1 line, its CRLF included (``PROXY UNKNOWN`` with two full IPv6 addresses and ports)."""

V2_MAX_LENGTH: Final = 16 + 0xFFFF
"""The longest v2 header its 16-bit length field can describe."""

DEFAULT_MAX_LENGTH: Final = 4096
"""The longest v2 header :class:`ProxyParser` accepts unless told otherwise."""

V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
"""The 12 bytes every v2 header starts with."""

_V1_START: Final = b"PROXY "
_V1_SHORTEST: Final = len(b"PROXY UNKNOWN\r\n")
_V2_FIXED: Final = 16
_V1_PROTOCOLS: Final = (b"TCP4", b"TCP6", b"UNKNOWN")

# v2's 14th byte: the address family (high nibble) and the socket type (low nibble).
_AF_UNSPEC: Final = 0x0
_AF_INET: Final = 0x1
_AF_INET6: Final = 0x2
_AF_UNIX: Final = 0x3
_FAMILY_NAMES: Final = ("AF_UNSPEC", "AF_INET", "AF_INET6", "AF_UNIX")
#: How many bytes each family's addresses take: two addresses, then two ports for IP.
_ADDRESS_BLOCK: Final = (0, 4 + 4 + 2 + 2, 16 + 16 + 2 + 2, 108 + 108)
_PROTO_UNSPEC: Final = 0x0
_PROTO_NAMES: Final = ("UNSPEC", "STREAM", "DGRAM")
_TRANSPORTS: Final[dict[tuple[int, int], Transport]] = {
    (_AF_INET, 1): "tcp4",
    (_AF_INET, 2): "udp4",
    (_AF_INET6, 1): "tcp6",
    (_AF_INET6, 2): "udp6",
    (_AF_UNIX, 1): "unix_stream",
    (_AF_UNIX, 2): "unix_datagram",
}

# Registered TLV types (section 2.2 of the specification).
_PP2_TYPE_ALPN: Final = 0x01
_PP2_TYPE_AUTHORITY: Final = 0x02
_PP2_TYPE_CRC32C: Final = 0x03
_PP2_TYPE_NOOP: Final = 0x04
_PP2_TYPE_UNIQUE_ID: Final = 0x05
_PP2_TYPE_SSL: Final = 0x20
_PP2_SUBTYPE_SSL_VERSION: Final = 0x21
_PP2_SUBTYPE_SSL_CN: Final = 0x22
_PP2_SUBTYPE_SSL_CIPHER: Final = 0x23
_PP2_SUBTYPE_SSL_SIG_ALG: Final = 0x24
_PP2_SUBTYPE_SSL_KEY_ALG: Final = 0x25
_PP2_TYPE_NETNS: Final = 0x30
_TLV_NAMES: Final = {
    _PP2_TYPE_ALPN: "ALPN",
    _PP2_TYPE_AUTHORITY: "AUTHORITY",
    _PP2_TYPE_CRC32C: "CRC32C",
    _PP2_TYPE_UNIQUE_ID: "UNIQUE_ID",
    _PP2_TYPE_SSL: "SSL",
    _PP2_TYPE_NETNS: "NETNS",
}
_SSL_NAMES: Final = {
    _PP2_SUBTYPE_SSL_VERSION: "SSL_VERSION",
    _PP2_SUBTYPE_SSL_CN: "SSL_CN",
    _PP2_SUBTYPE_SSL_CIPHER: "SSL_CIPHER",
    _PP2_SUBTYPE_SSL_SIG_ALG: "SSL_SIG_ALG",
    _PP2_SUBTYPE_SSL_KEY_ALG: "SSL_KEY_ALG",
}
_UNIQUE_ID_MAX: Final = 128
#: The SSL TLV's fixed part: a byte of client flags and a 32-bit verify result.
_SSL_FIXED: Final = 5


class ProxyError(ValueError):
    """A connection's first bytes are not a valid PROXY protocol header (of an accepted version).

    The message says what is wrong, and where; the connection is to be
    closed.  Raised as soon as the bytes seen so far cannot start a valid
    header, which may be before the header is complete.
    """


class SSLInfo(NamedTuple):
    """The v2 ``PP2_TYPE_SSL`` TLV: how the client reached the proxy over TLS.

    Attributes:
        client: the ``PP2_CLIENT_*`` bit field (see :attr:`ssl`,
            :attr:`cert_in_connection`, :attr:`cert_in_session`).
        verify: ``0`` if the client presented a certificate and it was
            verified, non-zero otherwise.
        version: the TLS version (``"TLSv1.3"``), from ``PP2_SUBTYPE_SSL_VERSION``.
        cn: the Common Name of the client certificate's subject, from ``PP2_SUBTYPE_SSL_CN``.
        cipher: the cipher's name (``"ECDHE-RSA-AES128-GCM-SHA256"``), from ``PP2_SUBTYPE_SSL_CIPHER``.
        sig_alg: the algorithm that signed the proxy's certificate (``"RSA-SHA256"``).
        key_alg: the algorithm of the proxy certificate's key (``"RSA2048"``).
        tlvs: every sub-TLV, in order, the decoded ones included.
    """

    client: int
    verify: int
    version: str | None = None
    cn: str | None = None
    cipher: str | None = None
    sig_alg: str | None = None
    key_alg: str | None = None
    tlvs: tuple[TLV, ...] = ()

    @property
    def ssl(self) -> bool:
        """``PP2_CLIENT_SSL``: the client connected over SSL/TLS."""
        return bool(self.client & 0x01)

    @property
    def cert_in_connection(self) -> bool:
        """``PP2_CLIENT_CERT_CONN``: the client presented a certificate on this connection."""
        return bool(self.client & 0x02)

    @property
    def cert_in_session(self) -> bool:
        """``PP2_CLIENT_CERT_SESS``: the client presented a certificate at least once in this TLS session."""
        return bool(self.client & 0x04)

    @property
    def verified(self) -> bool:
        """The client presented a certificate and it was verified (``verify == 0``)."""
        return self.verify == 0


class ProxyHeader(NamedTuple):
    """A valid PROXY protocol header, as :meth:`ProxyParser.parse` found it.

    Attributes:
        version: ``1`` or ``2``.
        command: ``"PROXY"`` (relayed for a client: use the addresses below)
            or ``"LOCAL"`` (v2 only: the proxy's own connection, a health
            check; use the connection's own addresses).  Every v1 header is
            ``"PROXY"``.
        transport: what the proxied connection was; ``"unknown"`` exactly
            when :attr:`source` and :attr:`destination` are ``None``.
        source: the client's address -- ``(host, port)`` with the host as
            text, as :meth:`socket.socket.getpeername` gives it, or a Unix
            socket's address (a ``str`` path, ``bytes`` for a Linux abstract
            name, ``""`` for an unbound one) -- or ``None``: use the
            connection's own peer address.
        destination: the address the client connected to (the proxy's), in
            the same shape, or ``None``.
        header_length: how many bytes the header took; the client's own
            bytes start there.
        tlvs: v2's TLVs, every one in order (NOOP and CRC32C included);
            ``()`` for v1.
        alpn: the ``PP2_TYPE_ALPN`` value (the protocol, ``b"h2"``), or ``None``.
        authority: the ``PP2_TYPE_AUTHORITY`` value (the host name the client
            asked for, the TLS SNI), or ``None``.
        unique_id: the ``PP2_TYPE_UNIQUE_ID`` value (at most 128 bytes), or ``None``.
        netns: the ``PP2_TYPE_NETNS`` value (a network namespace's name), or ``None``.
        ssl: the ``PP2_TYPE_SSL`` block, or ``None``.
        crc32c: the header's checksum, from ``PP2_TYPE_CRC32C``, already
            verified (a wrong one raises); ``None`` if the header has none.
    """

    version: Version
    command: Literal["PROXY", "LOCAL"]
    transport: Transport
    source: Address | None
    destination: Address | None
    header_length: int
    tlvs: tuple[TLV, ...] = ()
    alpn: bytes | None = None
    authority: str | None = None
    unique_id: bytes | None = None
    netns: str | None = None
    ssl: SSLInfo | None = None
    crc32c: int | None = None


@final
class ProxyParser:
    """Reads a PROXY protocol header from the first bytes of a connection (sans-IO, stateless).

    Args:
        versions: the versions accepted; a header of another one is refused
            at its first distinguishing byte.
        max_length: the longest v2 header accepted, its 16 fixed bytes
            included, from 16 to :data:`V2_MAX_LENGTH`; a longer one is
            refused as soon as its length field is there.  (A v1 line is at
            most 107 bytes whatever this says.)

    Raises:
        TypeError, ValueError: *versions* or *max_length* is not as above.

    Threading: a parser holds no state between calls; one may serve any
    number of connections from any thread.
    """

    __slots__ = ("_max_length", "_v1", "_v2", "_versions")

    def __init__(self, *, versions: Iterable[Version] = (1, 2), max_length: int = DEFAULT_MAX_LENGTH) -> None:
        given: object = versions
        if isinstance(given, (str, bytes)) or not isinstance(given, Iterable):
            raise TypeError(f"versions must be an iterable of 1 and 2, got {type(given).__name__} {given!r}")
        chosen: set[Version] = set()
        for version in versions:
            value: object = version
            if isinstance(value, bool) or not isinstance(value, int) or value not in (1, 2):
                raise ValueError(f"versions must hold only 1 and 2, got {given!r}")
            chosen.add(version)
        if not chosen:
            raise ValueError(f"versions must hold 1, 2 or both, got {given!r}")
        limit: object = max_length
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise TypeError(f"max_length must be an int, got {type(limit).__name__} {limit!r}")
        if not _V2_FIXED <= limit <= V2_MAX_LENGTH:
            raise ValueError(f"max_length must be between {_V2_FIXED} and {V2_MAX_LENGTH}, got {limit!r}")
        self._versions: tuple[Version, ...] = tuple(sorted(chosen))
        self._v1 = 1 in chosen
        self._v2 = 2 in chosen
        self._max_length = limit

    @property
    def versions(self) -> tuple[Version, ...]:
        """The versions accepted, in ascending order."""
        return self._versions

    @property
    def max_length(self) -> int:
        """The longest v2 header accepted, in bytes."""
        return self._max_length

    def __repr__(self) -> str:
        return f"ProxyParser(versions={self._versions!r}, max_length={self._max_length!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProxyParser):
            return NotImplemented
        return (self._versions, self._max_length) == (other._versions, other._max_length)

    def __hash__(self) -> int:
        return hash((ProxyParser, self._versions, self._max_length))

    def parse(self, data: bytes, /) -> ProxyHeader | None:
        """The header at the start of *data*, the bytes a connection has received so far.

        Returns:
            The header, once *data* holds all of it (bytes after it are the
            client's and are not looked at), or ``None`` when *data* is a
            valid start of a header that is not complete yet.

        Raises:
            ProxyError: *data* cannot start a valid header of an accepted version.
        """
        found = self._scan(data)
        return None if isinstance(found, int) else found

    def wanted(self, data: bytes, /) -> int:
        """``0`` when *data* holds a whole header; else how many bytes (in all) to wait for.

        The count is a lower bound that never passes the header's end: for
        v2, the 16 fixed bytes, then the whole header; for v1, one byte more
        than *data* (at least 15, the shortest line), since only the CRLF
        says where a line ends.  The header itself comes from :meth:`parse`.

        Raises:
            ProxyError: as :meth:`parse`.
        """
        found = self._scan(data)
        return found if isinstance(found, int) else 0

    # -- detection ----------------------------------------------------------------------

    def _scan(self, data: bytes) -> ProxyHeader | int:
        """The header, or how many bytes to wait for; raises :class:`ProxyError`."""
        if not data:
            return _V1_SHORTEST if self._v1 else _V2_FIXED
        if V2_SIGNATURE.startswith(data[:12]):
            if not self._v2:
                raise _refused(data, self._versions, complete=len(data) >= 12)
            return self._scan_v2(data)
        if _V1_START.startswith(data[:6]):
            if not self._v1:
                raise _refused(data, self._versions, complete=len(data) >= 6)
            return _scan_v1(data)
        raise _refused(data, self._versions, complete=False)

    # -- version 2 ------------------------------------------------------------------------

    def _scan_v2(self, data: bytes) -> ProxyHeader | int:
        size = len(data)
        if size < 12:
            return _V2_FIXED
        if size > 12:
            version, command = data[12] >> 4, data[12] & 0x0F
            if version != 2:
                raise ProxyError(
                    f"PROXY protocol v2: version {version} in byte 13 (0x{data[12]:02x}); only version 2 is defined"
                )
            if command > 1:
                raise ProxyError(
                    f"PROXY protocol v2: unknown command 0x{command:x} in byte 13 (0x{data[12]:02x});"
                    " 0x0 LOCAL and 0x1 PROXY are defined"
                )
        if size > 13:
            family, proto = data[13] >> 4, data[13] & 0x0F
            if family >= len(_FAMILY_NAMES):
                raise ProxyError(
                    f"PROXY protocol v2: unknown address family 0x{family:x} in byte 14 (0x{data[13]:02x});"
                    " 0x0 AF_UNSPEC, 0x1 AF_INET, 0x2 AF_INET6 and 0x3 AF_UNIX are defined"
                )
            if proto >= len(_PROTO_NAMES):
                raise ProxyError(
                    f"PROXY protocol v2: unknown transport protocol 0x{proto:x} in byte 14 (0x{data[13]:02x});"
                    " 0x0 UNSPEC, 0x1 STREAM and 0x2 DGRAM are defined"
                )
        if size < _V2_FIXED:
            return _V2_FIXED
        length = data[14] << 8 | data[15]
        total = _V2_FIXED + length
        if total > self._max_length:
            raise ProxyError(
                f"PROXY protocol v2: a header of {total} bytes (16 + a length of {length})"
                f" is longer than max_length={self._max_length}"
            )
        block = _ADDRESS_BLOCK[data[13] >> 4]
        local = data[12] & 0x0F == 0
        if length < block and not local:
            raise ProxyError(
                f"PROXY protocol v2: a length of {length} is too short for {_FAMILY_NAMES[data[13] >> 4]}"
                f" addresses ({block} bytes)"
            )
        if size < total:
            return total
        return _decode_v2(data[:total])


def parse(
    data: bytes, /, *, versions: Iterable[Version] = (1, 2), max_length: int = DEFAULT_MAX_LENGTH
) -> ProxyHeader | None:
    """``ProxyParser(versions=versions, max_length=max_length).parse(data)``: see :meth:`ProxyParser.parse`."""
    return ProxyParser(versions=versions, max_length=max_length).parse(data)


def _refused(data: bytes, versions: tuple[Version, ...], *, complete: bool) -> ProxyError:
    """The error for bytes that start no header of an accepted version."""
    wanted = " or ".join(f"v{version}" for version in versions)
    what = f"not a PROXY protocol {wanted} header"
    if complete:  # a whole signature of the version not accepted
        other = 2 if V2_SIGNATURE.startswith(data[:12]) else 1
        what += f" (a v{other} header, and only {wanted} is accepted)"
    return ProxyError(f"{what}: the connection starts with {data[:16]!r}")


# -- version 1 ------------------------------------------------------------------------------


def _scan_v1(data: bytes) -> ProxyHeader | int:
    """A v1 line at the start of *data* (which starts with a prefix of ``b"PROXY "``), or the bytes to wait for."""
    size = len(data)
    window = data[:V1_MAX_LENGTH]
    cr, lf = window.find(b"\r"), window.find(b"\n")
    if lf >= 0 and (cr < 0 or lf < cr):
        raise ProxyError(f"PROXY protocol v1: a line feed without a carriage return before it at byte {lf + 1}")
    if cr >= 0:
        if cr + 2 > V1_MAX_LENGTH:
            raise _too_long()
        if cr + 1 < size:
            if data[cr + 1] != 0x0A:
                raise ProxyError(
                    f"PROXY protocol v1: a carriage return not followed by a line feed at byte {cr + 1}"
                )
            return _decode_v1(data[:cr], cr + 2)
        _check_protocol(data[:cr], complete=True)
        return cr + 2
    if size > V1_MAX_LENGTH - 2:  # the CRLF can no longer end the line within its 107 bytes
        raise _too_long()
    _check_protocol(data, complete=False)
    return max(_V1_SHORTEST, size + 1)


def _too_long() -> ProxyError:
    return ProxyError(f"PROXY protocol v1: no CRLF in the first {V1_MAX_LENGTH} bytes (the longest line)")


def _check_protocol(line: bytes, *, complete: bool) -> None:
    """Refuse a line whose protocol name (so far) cannot be TCP4, TCP6 or UNKNOWN.

    *complete*: the line's end is known (its CR is there).
    """
    if len(line) < len(_V1_START) or (len(line) == len(_V1_START) and not complete):
        return
    name, space, _ = line[len(_V1_START) :].partition(b" ")
    if space or complete:
        if name not in _V1_PROTOCOLS:
            raise _unknown_protocol(name)
    elif not any(protocol.startswith(name) for protocol in _V1_PROTOCOLS):
        raise _unknown_protocol(name)


def _unknown_protocol(name: bytes) -> ProxyError:
    if not name:
        return ProxyError("PROXY protocol v1: fields must be separated by exactly one space")
    return ProxyError(f"PROXY protocol v1: unknown protocol {name!r}; TCP4, TCP6 and UNKNOWN are defined")


def _decode_v1(line: bytes, length: int) -> ProxyHeader:
    """The v1 header of *line* (without its CRLF), which took *length* bytes."""
    _check_protocol(line, complete=True)
    name = line[len(_V1_START) :].partition(b" ")[0]
    if name == b"UNKNOWN":
        # The specification: the receiver must ignore anything before the CRLF.
        return ProxyHeader(1, "PROXY", "unknown", None, None, length)
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError as e:
        raise ProxyError(f"PROXY protocol v1: a byte that is not US-ASCII at byte {e.start + 1}") from None
    fields = text.split(" ")
    if "" in fields:
        raise ProxyError(f"PROXY protocol v1: fields must be separated by exactly one space, got {text!r}")
    if len(fields) != 6:
        raise ProxyError(
            f"PROXY protocol v1: a {fields[1]} line has 6 fields (PROXY, the protocol, the source and"
            f" destination addresses and ports), got {len(fields)}: {text!r}"
        )
    six = fields[1] == "TCP6"
    source = (_v1_host(fields[2], six, "source"), _v1_port(fields[4], "source"))
    destination = (_v1_host(fields[3], six, "destination"), _v1_port(fields[5], "destination"))
    return ProxyHeader(1, "PROXY", "tcp6" if six else "tcp4", source, destination, length)


def _v1_host(text: str, six: bool, which: str) -> str:
    """The host of a v1 address, as ``getpeername`` shows it; refuses the other family's."""
    try:
        # (ipaddress accepts an IPv6 scope, "fe80::1%eth0"; the protocol has none.)
        address = ipaddress.ip_address(text) if "%" not in text else None
    except ValueError:
        address = None
    if address is None:
        raise ProxyError(f"PROXY protocol v1: the {which} address {text!r} is not an IPv{6 if six else 4} address")
    if address.version == (6 if six else 4):
        # IPv4Address refuses leading zeros, as the specification does (no octal
        # confusion); an IPv6 host is shown as getpeername shows it (inet_ntop).
        return socket.inet_ntop(socket.AF_INET6, address.packed) if six else str(address)
    raise ProxyError(
        f"PROXY protocol v1: the {which} address {text!r} is an IPv{address.version} address"
        f" in a TCP{6 if six else 4} line"
    )


def _v1_port(text: str, which: str) -> int:
    """A v1 port: decimal digits only, 0 to 65535, no leading zero."""
    digits = text.isascii() and text.isdigit()
    if not digits or len(text) > 5 or (text[0] == "0" and text != "0") or int(text) > 0xFFFF:
        raise ProxyError(
            f"PROXY protocol v1: the {which} port {text!r} is not a decimal number from 0 to 65535"
            " without leading zeros"
        )
    return int(text)


# -- version 2: addresses and TLVs ------------------------------------------------------


def _decode_v2(header: bytes) -> ProxyHeader:
    """The v2 header that is all of *header* (its fixed part already checked)."""
    total = len(header)
    local = header[12] & 0x0F == 0
    family, proto = header[13] >> 4, header[13] & 0x0F
    block = _ADDRESS_BLOCK[family]
    source: Address | None = None
    destination: Address | None = None
    transport: Transport = "unknown"
    if local:
        # LOCAL: the family is to be ignored with the addresses.  TLVs can
        # only be found after the family's addresses: a LOCAL header too
        # short for them has none.
        start = min(_V2_FIXED + block, total)
    else:
        start = _V2_FIXED + block
        if family != _AF_UNSPEC and proto != _PROTO_UNSPEC:
            transport = _TRANSPORTS[family, proto]
            source, destination = _v2_addresses(family, header[_V2_FIXED:start])
    command: Literal["PROXY", "LOCAL"] = "LOCAL" if local else "PROXY"
    return _decode_tlvs(header, start, ProxyHeader(2, command, transport, source, destination, total))


def _v2_addresses(family: int, block: bytes) -> tuple[Address, Address]:
    """The source and destination in a v2 address block of *family* (AF_INET, AF_INET6 or AF_UNIX)."""
    if family == _AF_UNIX:
        return _unix_address(block[:108]), _unix_address(block[108:])
    width = 4 if family == _AF_INET else 16
    kind = socket.AF_INET if family == _AF_INET else socket.AF_INET6
    ports = 2 * width
    return (
        (socket.inet_ntop(kind, block[:width]), block[ports] << 8 | block[ports + 1]),
        (socket.inet_ntop(kind, block[width:ports]), block[ports + 2] << 8 | block[ports + 3]),
    )


def _unix_address(raw: bytes) -> str | bytes:
    """A 108-byte ``sun_path``: a path (``str``), an abstract name (``bytes``, from its NUL), or ``""``."""
    if raw[:1] == b"\0":
        # Linux's abstract names start with a NUL and are not NUL-terminated;
        # the field's padding cannot be told from the name's own NULs.
        name = raw.rstrip(b"\0")
        return name if name else ""
    # As the socket module decodes a path (surrogateescape for undecodable bytes).
    return os.fsdecode(raw.partition(b"\0")[0])


def _split_tlvs(data: bytes, start: int, end: int, where: str) -> list[tuple[int, int, int]]:
    """The TLVs that exactly fill ``data[start:end]``, as ``(type, value start, value end)``."""
    found = []
    at = start
    while at < end:
        if end - at < 3:
            raise ProxyError(
                f"{where}: {end - at} byte(s) after the last TLV at offset {at}, too few for a TLV (3 at least)"
            )
        kind, length = data[at], data[at + 1] << 8 | data[at + 2]
        value = at + 3
        if value + length > end:
            raise ProxyError(
                f"{where}: the TLV of type 0x{kind:02x} at offset {at} has a length of {length}, but only"
                f" {end - value} byte(s) are left"
            )
        found.append((kind, value, value + length))
        at = value + length
    return found


def _decode_tlvs(header: bytes, start: int, found: ProxyHeader) -> ProxyHeader:
    """*found* with the TLVs in ``header[start:]`` decoded, and its checksum verified."""
    if start == len(header):
        return found
    where = "PROXY protocol v2"
    tlvs: list[TLV] = []
    values: dict[int, bytes] = {}
    crc_at = -1
    for kind, value_start, value_end in _split_tlvs(header, start, len(header), where):
        value = header[value_start:value_end]
        tlvs.append((kind, value))
        if kind not in _TLV_NAMES:
            continue  # NOOP, reserved and custom types: kept in tlvs only
        if kind in values:
            raise ProxyError(f"{where}: more than one {_TLV_NAMES[kind]} TLV")
        values[kind] = value
        if kind == _PP2_TYPE_CRC32C:
            crc_at = value_start
    authority = values.get(_PP2_TYPE_AUTHORITY)
    unique_id = values.get(_PP2_TYPE_UNIQUE_ID)
    netns = values.get(_PP2_TYPE_NETNS)
    ssl = values.get(_PP2_TYPE_SSL)
    if unique_id is not None and len(unique_id) > _UNIQUE_ID_MAX:
        raise ProxyError(f"{where}: a UNIQUE_ID TLV of {len(unique_id)} bytes; it has at most {_UNIQUE_ID_MAX}")
    crc: int | None = None
    if crc_at >= 0:
        crc = _check_crc(header, crc_at, where)
    return found._replace(
        tlvs=tuple(tlvs),
        alpn=values.get(_PP2_TYPE_ALPN),
        authority=None if authority is None else _text(authority, "utf-8", f"{where}: the AUTHORITY TLV"),
        unique_id=unique_id,
        netns=None if netns is None else _text(netns, "ascii", f"{where}: the NETNS TLV"),
        ssl=None if ssl is None else _decode_ssl(ssl),
        crc32c=crc,
    )


def _check_crc(header: bytes, at: int, where: str) -> int:
    """The CRC32C TLV's value at *at*, once it is the checksum of *header* with it zeroed."""
    if header[at - 2 : at] != b"\x00\x04":
        length = header[at - 2] << 8 | header[at - 1]
        raise ProxyError(f"{where}: a CRC32C TLV of {length} bytes; it has 4")
    sent = int.from_bytes(header[at : at + 4], "big")
    computed = _crc32c(header[:at] + b"\0\0\0\0" + header[at + 4 :])
    if sent != computed:
        raise ProxyError(f"{where}: the CRC32C TLV says 0x{sent:08x}, but the header's checksum is 0x{computed:08x}")
    return sent


def _decode_ssl(value: bytes) -> SSLInfo:
    """The ``PP2_TYPE_SSL`` TLV's *value*: client flags, verify result, sub-TLVs."""
    where = "PROXY protocol v2 SSL TLV"
    if len(value) < _SSL_FIXED:
        raise ProxyError(f"{where}: {len(value)} byte(s); it has at least {_SSL_FIXED} (client and verify)")
    tlvs: list[TLV] = []
    texts: dict[int, str] = {}
    for kind, value_start, value_end in _split_tlvs(value, _SSL_FIXED, len(value), where):
        sub = value[value_start:value_end]
        tlvs.append((kind, sub))
        name = _SSL_NAMES.get(kind)
        if name is None:
            continue
        if kind in texts:
            raise ProxyError(f"{where}: more than one {name} sub-TLV")
        # The Common Name is UTF-8; the version and algorithm names US-ASCII.
        texts[kind] = _text(sub, "utf-8" if kind == _PP2_SUBTYPE_SSL_CN else "ascii", f"{where}: the {name} sub-TLV")
    return SSLInfo(
        client=value[0],
        verify=int.from_bytes(value[1:_SSL_FIXED], "big"),
        version=texts.get(_PP2_SUBTYPE_SSL_VERSION),
        cn=texts.get(_PP2_SUBTYPE_SSL_CN),
        cipher=texts.get(_PP2_SUBTYPE_SSL_CIPHER),
        sig_alg=texts.get(_PP2_SUBTYPE_SSL_SIG_ALG),
        key_alg=texts.get(_PP2_SUBTYPE_SSL_KEY_ALG),
        tlvs=tuple(tlvs),
    )


def _text(value: bytes, encoding: Literal["utf-8", "ascii"], what: str) -> str:
    try:
        return value.decode(encoding)
    except UnicodeDecodeError:
        kind = "UTF-8" if encoding == "utf-8" else "US-ASCII"
        raise ProxyError(f"{what} is not {kind} text: {value!r}") from None


# -- CRC-32C (Castagnoli), as RFC 4960 appendix B (SCTP) and RFC 3720 (iSCSI) define it --
#
# zlib.crc32 is the other CRC-32 (polynomial 0x04C11DB7), so this one is
# computed here: reflected, polynomial 0x1EDC6F41 (0x82F63B78 reversed),
# initial value and final XOR 0xFFFFFFFF, a byte at a time through a table
# of 256 entries.  About 1 ms for 4 KiB; a header with a CRC32C TLV is
# checksummed once.

@functools.cache
def _crc32c_table() -> tuple[int, ...]:
    """The 256 entries, built on the first checksum (building them takes about 1 ms)."""
    entries = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        entries.append(crc)
    return tuple(entries)


def _crc32c(data: bytes) -> int:
    """The CRC-32C of *data* (``_crc32c(b"123456789") == 0xE3069283``)."""
    table = _crc32c_table()
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


@final
class ProxyProtocol:
    """A server's PROXY protocol: every stream connection must start with a valid header, read on the loop.

    ``server(tcp(host, port), handler, proxy=ProxyProtocol(versions=(2,), trusted=("10.0.0.0/8",)))``.
    Behind a load balancer that speaks it (HAProxy's ``send-proxy`` /
    ``send-proxy-v2``, a cloud balancer), each connection's header is read
    before admission -- so ``verify``, the admission limits, the events and
    the handler all see the real client: ``client_address`` is the header's
    source address.  A ``LOCAL`` or ``UNKNOWN`` header (a health check)
    keeps the connection's own address.  Strict: the header is never
    guessed; a connection without a valid one -- or from a peer outside
    *trusted*, or whose header is not complete within *timeout* -- is
    closed and counted as refused with the reason ``"proxy"``
    (``stats().rejected_by_reason``).  The client's own bytes after the
    header stay in the socket for the handler.

    Args:
        versions: the versions accepted (1, 2 or both).
        trusted: the networks (``"127.0.0.1/32"``, ``"10.0.0.0/8"``, ``"::1"``)
            whose peers may send a header; ``None``: any peer (when only the
            balancer can reach the server).  Unix-socket peers are local and
            always trusted.
        timeout: seconds from the connection's arrival to a whole header.
        max_length: the longest v2 header accepted (see :class:`ProxyParser`).

    Raises:
        TypeError, ValueError: an argument of the wrong type or value.
    """

    __slots__ = ("parser", "timeout", "trusted")

    def __init__(
        self,
        *,
        versions: Iterable[Version] = (1, 2),
        trusted: Iterable[str] | None = None,
        timeout: float = 3.0,
        max_length: int = DEFAULT_MAX_LENGTH,
    ) -> None:
        self.parser = ProxyParser(versions=versions, max_length=max_length)
        given: object = timeout
        if isinstance(given, bool) or not isinstance(given, (int, float)) or not 0 < timeout < float("inf"):
            raise ValueError(f"timeout must be a number of seconds > 0, got {given!r}")
        self.timeout = float(timeout)
        self.trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None = None
        if trusted is not None:
            if isinstance(trusted, (str, bytes)):
                raise TypeError(f"trusted must be an iterable of networks, not one string: {trusted!r}")
            networks = []
            for network in trusted:
                try:
                    networks.append(ipaddress.ip_network(network, strict=False))
                except (TypeError, ValueError):
                    raise ValueError(f"trusted: {network!r} is not a network such as '10.0.0.0/8'") from None
            self.trusted = tuple(networks)

    def take(self, data: bytes, request: object, /) -> int | None:
        """The route's take-stage: the header's length once *data* holds it all (and *request* readdressed).

        Raises:
            ProxyError: the peer is not trusted, or the header is not valid.
        """
        trusted = self.trusted
        peer = getattr(request, "client_address", None)
        if trusted is not None and isinstance(peer, tuple):
            host = ipaddress.ip_address(str(peer[0]).split("%")[0])
            if not any(host in network for network in trusted):
                raise ProxyError(f"{peer[0]} may not send a PROXY header (not in trusted)")
        header = self.parser.parse(data)
        if header is None:
            return None
        if header.source is not None:
            _readdress(request, header.source)
        sock = _socket_of(request)
        if sock is not None:
            _headers[sock] = header
        return header.header_length

    def __repr__(self) -> str:
        trusted = None if self.trusted is None else tuple(str(network) for network in self.trusted)
        return f"ProxyProtocol(versions={self.parser.versions!r}, trusted={trusted!r}, timeout={self.timeout!r})"


#: The header each connection came with, by its socket (an entry goes with its socket).
_headers: Final[weakref.WeakKeyDictionary[socket.socket, ProxyHeader]] = weakref.WeakKeyDictionary()


def header(conn: StreamConnection[object]) -> ProxyHeader | None:
    """The PROXY header *conn* came with: its version, command, addresses and v2 TLVs (ALPN, authority, SSL, ...).

    ``None`` for a connection of a server without :class:`ProxyProtocol`.  A
    ``LOCAL`` header (a health check) is told too, though the connection keeps
    its own address.
    """
    sock = _socket_of(conn)
    return None if sock is None else _headers.get(sock)
