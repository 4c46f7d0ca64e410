"""servekit.proxy with no socket: PROXY protocol headers built by hand from the specification.

The vectors are written out byte by byte from HAProxy's ``doc/proxy-protocol.txt``
(sections 2.1 and 2.2); a few come from independent encoders (an AWS Network
Load Balancer, HAProxy itself and its regression tests), each cited where it
is defined.  Every valid header is also given in every split, as a connection
may receive it, and followed by client bytes that must stay untouched.
"""

from __future__ import annotations

import os
import pickle
from typing import Any, assert_type

import pytest

from servekit import Address
from servekit.proxy import (
    DEFAULT_MAX_LENGTH,
    V1_MAX_LENGTH,
    V2_MAX_LENGTH,
    V2_SIGNATURE,
    ProxyError,
    ProxyHeader,
    ProxyParser,
    SSLInfo,
    Transport,
    Version,
    parse,
)
from servekit.proxy import _crc32c as crc32c

#: The v2 signature as section 2.2 spells it: \x0D \x0A \x0D \x0A \x00 \x0D \x0A \x51 \x55 \x49 \x54 \x0A.
SIG = bytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A])

#: What a client sends after the header: never read by the parser.
CLIENT = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"


def h(text: str) -> bytes:
    """Bytes from hex, with spaces for legibility."""
    return bytes.fromhex(text)


def v2(ver_cmd: int, fam: int, body: bytes) -> bytes:
    """A v2 header: the signature, the version/command and family bytes, the 16-bit length, *body*."""
    return SIG + bytes([ver_cmd, fam]) + len(body).to_bytes(2, "big") + body


def tlv(kind: int, value: bytes) -> bytes:
    """A TLV: one byte of type, two of length (network order), the value."""
    return bytes([kind]) + len(value).to_bytes(2, "big") + value


def with_crc(ver_cmd: int, fam: int, addresses: bytes, *tlvs: bytes) -> bytes:
    """A v2 header whose TLVs end with a CRC32C TLV holding the header's checksum (section 2.2.3)."""
    zeroed = v2(ver_cmd, fam, addresses + b"".join(tlvs) + tlv(0x03, bytes(4)))
    return zeroed[:-4] + crc32c(zeroed).to_bytes(4, "big")


# 192.168.0.1:56324 -> 192.168.0.11:443, the addresses of the specification's v1 example.
TCP4_BLOCK = h("c0 a8 00 01  c0 a8 00 0b  dc 04  01 bb")
TCP4_ADDRESSES = (("192.168.0.1", 56324), ("192.168.0.11", 443))

SSL_VALUE = (
    h("07")  # PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS
    + h("00 00 00 00")  # verify: 0, the certificate was verified
    + tlv(0x21, b"TLSv1.3")
    + tlv(0x22, "Jürgen Müller".encode())
    + tlv(0x23, b"TLS_AES_128_GCM_SHA256")
    + tlv(0x24, b"RSA-SHA256")
    + tlv(0x25, b"RSA2048")
    + tlv(0x26, b"x25519")  # a sub-type this specification does not define: kept, not decoded
)


def _header(
    version: Version,
    transport: Transport,
    source: Address | None,
    destination: Address | None,
    length: int,
    **more: Any,
) -> ProxyHeader:
    """A header of the PROXY command (for the tables of vectors)."""
    return ProxyHeader(version, "PROXY", transport, source, destination, length, **more)


def _local(length: int, **more: Any) -> ProxyHeader:
    """A header of the LOCAL command: no addresses."""
    return ProxyHeader(2, "LOCAL", "unknown", None, None, length, **more)


V1_WORST = (
    b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
)

#: (name, header, what it says) -- by hand, from the specification.
VALID: list[tuple[str, bytes, ProxyHeader]] = [
    (
        "v1 tcp4, the specification's example",
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
        _header(1, "tcp4", *TCP4_ADDRESSES, 47),
    ),
    (
        "v1 tcp4, longest",
        b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
        _header(1, "tcp4", ("255.255.255.255", 65535), ("255.255.255.255", 65535), 56),
    ),
    (
        "v1 tcp4, zeros",
        b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n",
        _header(1, "tcp4", ("0.0.0.0", 0), ("0.0.0.0", 0), 32),
    ),
    (
        "v1 tcp6, upper case and uncompressed, reported as getpeername would",
        b"PROXY TCP6 2001:DB8:0:0:0:0:0:1 ::ffff:192.0.2.1 65535 0\r\n",
        _header(1, "tcp6", ("2001:db8::1", 65535), ("::ffff:192.0.2.1", 0), 58),
    ),
    ("v1 unknown, short", b"PROXY UNKNOWN\r\n", _header(1, "unknown", None, None, 15)),
    ("v1 unknown, worst case of 107 bytes", V1_WORST, _header(1, "unknown", None, None, 107)),
    (
        "v1 unknown, anything before the CRLF ignored",
        b"PROXY UNKNOWN \xff not even  text\r\n",
        _header(1, "unknown", None, None, 32),
    ),
    ("v2 tcp4", v2(0x21, 0x11, TCP4_BLOCK), _header(2, "tcp4", *TCP4_ADDRESSES, 28)),
    (
        "v2 udp4",
        v2(0x21, 0x12, h("0a 00 00 01  0a 00 00 02  00 35  d4 31")),
        _header(2, "udp4", ("10.0.0.1", 53), ("10.0.0.2", 54321), 28),
    ),
    (
        "v2 tcp6",
        v2(0x21, 0x21, h("20 01 0d b8" + " 00" * 11 + " 01" + " 20 01 0d b8" + " 00" * 11 + " 02" + " c3 50 00 50")),
        _header(2, "tcp6", ("2001:db8::1", 50000), ("2001:db8::2", 80), 52),
    ),
    (
        "v2 udp6, an IPv4-mapped source shown as getpeername shows it",
        v2(0x21, 0x22, h(" 00" * 10 + " ff ff c0 00 02 01" + " 00" * 15 + " 01" + " 00 35 00 35")),
        _header(2, "udp6", ("::ffff:192.0.2.1", 53), ("::1", 53), 52),
    ),
    (
        "v2 unix stream",
        v2(0x21, 0x31, b"/run/client.sock".ljust(108, b"\0") + b"/run/server.sock".ljust(108, b"\0")),
        _header(2, "unix_stream", "/run/client.sock", "/run/server.sock", 232),
    ),
    (
        "v2 unix datagram, an abstract name and an unbound peer",
        v2(0x21, 0x32, b"\0abstract-name".ljust(108, b"\0") + bytes(108)),
        _header(2, "unix_datagram", b"\0abstract-name", "", 232),
    ),
    (
        "v2 unix stream, a path of 108 bytes with no NUL, and one not UTF-8",
        v2(0x21, 0x31, b"/" + b"p" * 107 + b"/tmp/\xff".ljust(108, b"\0")),
        _header(2, "unix_stream", "/" + "p" * 107, os.fsdecode(b"/tmp/\xff"), 232),
    ),
    ("v2 local, unspec (a health check)", v2(0x20, 0x00, b""), _local(16)),
    ("v2 local over inet: the addresses ignored", v2(0x20, 0x11, TCP4_BLOCK), _local(28)),
    ("v2 local over inet6 with no addresses: the family ignored", v2(0x20, 0x21, b""), _local(16)),
    ("v2 local over unix: ignored", v2(0x20, 0x31, bytes(216)), _local(232)),
    (
        "v2 local with a TLV after its addresses",
        v2(0x20, 0x11, TCP4_BLOCK + tlv(0x05, b"id-1")),
        _local(35, tlvs=((0x05, b"id-1"),), unique_id=b"id-1"),
    ),
    ("v2 proxy, unspec family: no addresses", v2(0x21, 0x00, b""), _header(2, "unknown", None, None, 16)),
    (
        "v2 proxy, unspec family with a NOOP TLV",
        v2(0x21, 0x00, tlv(0x04, bytes(4))),
        _header(2, "unknown", None, None, 23, tlvs=((0x04, bytes(4)),)),
    ),
    (
        "v2 proxy, inet with an unspec protocol: the addresses skipped, not used",
        v2(0x21, 0x10, TCP4_BLOCK + tlv(0x02, b"example.com")),
        _header(2, "unknown", None, None, 42, tlvs=((0x02, b"example.com"),), authority="example.com"),
    ),
    (
        "v2 proxy, unspec family with a stream protocol",
        v2(0x21, 0x01, b""),
        _header(2, "unknown", None, None, 16),
    ),
    (
        "v2 tcp4 with the registered TLVs, a custom one and an empty NOOP",
        v2(
            0x21,
            0x11,
            TCP4_BLOCK
            + tlv(0x01, b"h2")
            + tlv(0x02, "bücher.example".encode())
            + tlv(0x04, b"")
            + tlv(0x05, b"\x00\xff" * 64)
            + tlv(0x30, b"blue")
            + tlv(0xE0, b"\x01\x02"),
        ),
        _header(
            2,
            "tcp4",
            *TCP4_ADDRESSES,
            197,
            tlvs=(
                (0x01, b"h2"),
                (0x02, "bücher.example".encode()),
                (0x04, b""),
                (0x05, b"\x00\xff" * 64),
                (0x30, b"blue"),
                (0xE0, b"\x01\x02"),
            ),
            alpn=b"h2",
            authority="bücher.example",
            unique_id=b"\x00\xff" * 64,
            netns="blue",
        ),
    ),
    (
        "v2 tcp4 with an SSL TLV and its sub-TLVs",
        v2(0x21, 0x11, TCP4_BLOCK + tlv(0x20, SSL_VALUE)),
        _header(
            2,
            "tcp4",
            *TCP4_ADDRESSES,
            28 + 3 + len(SSL_VALUE),
            tlvs=((0x20, SSL_VALUE),),
            ssl=SSLInfo(
                client=7,
                verify=0,
                version="TLSv1.3",
                cn="Jürgen Müller",
                cipher="TLS_AES_128_GCM_SHA256",
                sig_alg="RSA-SHA256",
                key_alg="RSA2048",
                tlvs=(
                    (0x21, b"TLSv1.3"),
                    (0x22, "Jürgen Müller".encode()),
                    (0x23, b"TLS_AES_128_GCM_SHA256"),
                    (0x24, b"RSA-SHA256"),
                    (0x25, b"RSA2048"),
                    (0x26, b"x25519"),
                ),
            ),
        ),
    ),
    (
        "v2 tcp4 with an SSL TLV of no sub-TLVs (a plain connection, no certificate)",
        v2(0x21, 0x11, TCP4_BLOCK + tlv(0x20, h("00 00 00 00 01"))),
        _header(2, "tcp4", *TCP4_ADDRESSES, 36, tlvs=((0x20, h("00 00 00 00 01")),), ssl=SSLInfo(0, 1)),
    ),
]

# -- from independent encoders --------------------------------------------------------------

#: An AWS Network Load Balancer's header for a PrivateLink connection: a CRC32C
#: TLV, AWS's own TLV 0xEA (VPC endpoint id) and a NOOP.  From
#: aws/elastic-load-balancing-tools, proprot/tst/com/amazonaws/proprot/
#: Compatibility_AwsNetworkLoadBalancerTest.java (commit c8eee30a), also in
#: kosmas-valianos/libproxyprotocol tests/test.c.
AWS_NLB = h(
    "0d 0a 0d 0a 00 0d 0a 51 55 49 54 0a  21 11 00 54"
    " ac 1f 07 71  ac 1f 0a 1f  c8 f2 00 50"
    " 03 00 04 e8 d6 89 2d"
    " ea 00 17 01 76 70 63 65 2d 30 38 64 32 62 66 31 35 66 61 63 35 30 30 31 63 39"
    " 04 00 24" + " 00" * 36
)

#: What HAProxy sent with ``send-proxy-v2`` (172.19.0.1:42578 -> 172.19.0.3:80), then
#: the client's request: a hexdump in seriousben/experiment-proxy-protocol, README.md.
HAPROXY_CAPTURE = h(
    "0d 0a 0d 0a 00 0d 0a 51 55 49 54 0a 21 11 00 0c"
    " ac 13 00 01 ac 13 00 03 a6 52 00 50 47 45 54 20"
    " 2f 20 48 54 54 50 2f 31 2e 31 0d 0a 48 6f 73 74"
)

#: HAProxy's regression test reg-tests/connection/proxy_protocol_tlv_validation.vtc
#: (haproxy/haproxy): 127.0.0.1:42 -> 127.0.0.1:1337 with an AUTHORITY TLV of "12345"
#: (client c1); c2 sends another TLV after the header's end, which is the client's.
HAPROXY_VTC_FIXED = h("0d 0a 0d 0a 00 0d 0a 51 55 49 54 0a  21  11  00 14  7F 00 00 01 7F 00 00 01 00 2A 05 39")
HAPROXY_VTC_GOOD = HAPROXY_VTC_FIXED + h("02 00 05 31 32 33 34 35")

PUBLIC: list[tuple[str, bytes, ProxyHeader]] = [
    (
        "AWS NLB, PrivateLink",
        AWS_NLB,
        _header(
            2,
            "tcp4",
            ("172.31.7.113", 0xC8F2),
            ("172.31.10.31", 80),
            100,
            tlvs=((0x03, h("e8 d6 89 2d")), (0xEA, b"\x01vpce-08d2bf15fac5001c9"), (0x04, bytes(36))),
            crc32c=0xE8D6892D,
        ),
    ),
    (
        "HAProxy send-proxy-v2",
        HAPROXY_CAPTURE[:28],
        _header(2, "tcp4", ("172.19.0.1", 42578), ("172.19.0.3", 80), 28),
    ),
    (
        "HAProxy reg-test c1",
        HAPROXY_VTC_GOOD,
        _header(2, "tcp4", ("127.0.0.1", 42), ("127.0.0.1", 1337), 36, tlvs=((0x02, b"12345"),), authority="12345"),
    ),
]

EVERY_VALID = VALID + PUBLIC
IDS = [name for name, _, _ in EVERY_VALID]


class TestValidHeaders:
    @pytest.mark.parametrize(("name", "header", "expected"), EVERY_VALID, ids=IDS)
    def test_parses_to_what_it_says(self, name: str, header: bytes, expected: ProxyHeader) -> None:
        """A whole header, and nothing after it, is read as the specification says."""
        assert parse(header) == expected
        assert expected.header_length == len(header)

    @pytest.mark.parametrize(("name", "header", "expected"), EVERY_VALID, ids=IDS)
    def test_client_bytes_after_it_are_left_alone(self, name: str, header: bytes, expected: ProxyHeader) -> None:
        """Bytes after the header (even ones like a header) are not looked at; header_length says where they start."""
        for client in (CLIENT, b"\r\n", b"PROXY TCP4 oops\r\n", SIG, b"\xff" * 200):
            data = header + client
            assert parse(data) == expected
            assert data[expected.header_length :] == client
            assert ProxyParser().wanted(data) == 0

    @pytest.mark.parametrize(("name", "header", "expected"), EVERY_VALID, ids=IDS)
    def test_every_split_point_needs_more_then_gives_the_same(
        self, name: str, header: bytes, expected: ProxyHeader
    ) -> None:
        """Each proper prefix is "need more" (never an error) and asks for no byte past the header's end."""
        parser = ProxyParser()
        for end in range(len(header)):
            part = header[:end]
            assert parser.parse(part) is None, end
            wanted = parser.wanted(part)
            assert end < wanted <= len(header), (end, wanted)
        assert parser.parse(header) == expected
        assert parser.wanted(header) == 0

    @pytest.mark.parametrize(("name", "header", "expected"), EVERY_VALID, ids=IDS)
    def test_byte_by_byte_as_a_connection_reads(self, name: str, header: bytes, expected: ProxyHeader) -> None:
        """Fed one byte per read with the client's bytes behind, the header completes at its last byte."""
        stream = header + CLIENT
        parser = ProxyParser()
        received = b""
        found = None
        while found is None:
            received += stream[len(received) : len(received) + 1]
            found = parser.parse(received)
        assert found == expected
        assert len(received) == len(header)

    @pytest.mark.parametrize(("name", "header", "expected"), EVERY_VALID, ids=IDS)
    def test_only_its_own_version_needed(self, name: str, header: bytes, expected: ProxyHeader) -> None:
        """A parser of the header's version alone reads it the same."""
        assert parse(header, versions=(expected.version,)) == expected

    def test_the_haproxy_capture_leaves_the_request(self) -> None:
        """HAProxy's header is followed by the client's request in the same read: it starts at header_length."""
        found = parse(HAPROXY_CAPTURE)
        assert found is not None
        assert HAPROXY_CAPTURE[found.header_length :] == b"GET / HTTP/1.1\r\nHost"

    def test_a_tlv_after_the_header_is_the_clients(self) -> None:
        """HAProxy reg-test c2: a TLV past the header's length is not part of it."""
        data = HAPROXY_VTC_GOOD + h("02 00 05 35 34 33 32 31")
        found = parse(data)
        assert found is not None
        assert (found.authority, found.header_length) == ("12345", 36)

    def test_the_signature_constant(self) -> None:
        assert V2_SIGNATURE == SIG == b"\r\n\r\n\x00\r\nQUIT\n"

    def test_the_result_is_frozen_and_typed(self) -> None:
        found = parse(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n")
        assert found is not None
        assert_type(found, ProxyHeader)
        assert_type(found.version, Version)
        with pytest.raises(AttributeError):
            found.source = None  # type: ignore[misc]
        assert pickle.loads(pickle.dumps(found)) == found

    def test_ssl_flags(self) -> None:
        """SSLInfo's properties read the client bit field and the verify result."""
        assert SSLInfo(7, 0)[:2] == (7, 0)
        both = SSLInfo(client=0x07, verify=0)
        assert (both.ssl, both.cert_in_connection, both.cert_in_session, both.verified) == (True, True, True, True)
        plain = SSLInfo(client=0x01, verify=1)
        assert (plain.ssl, plain.cert_in_connection, plain.cert_in_session, plain.verified) == (
            True,
            False,
            False,
            False,
        )
        session = SSLInfo(client=0x04, verify=0x10)
        assert (session.ssl, session.cert_in_connection, session.cert_in_session) == (False, False, True)


class TestCRC32C:
    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            (b"123456789", 0xE3069283),  # the check value of CRC-32C (Castagnoli)
            # RFC 3720 (iSCSI), appendix B.4: the four 32-byte examples.
            (bytes(32), 0x8A9136AA),
            (b"\xff" * 32, 0x62A8AB43),
            (bytes(range(32)), 0x46DD794E),
            (bytes(range(31, -1, -1)), 0x113FDB5C),
            (b"", 0),
        ],
    )
    def test_known_values(self, data: bytes, expected: int) -> None:
        assert crc32c(data) == expected

    def test_the_aws_header_verifies(self) -> None:
        """An independent encoder's checksum: big-endian, over the header with the field zeroed."""
        found = parse(AWS_NLB)
        assert found is not None and found.crc32c == 0xE8D6892D

    @pytest.mark.parametrize("at", ["first", "last"])
    def test_a_right_checksum_passes_wherever_it_is(self, at: str) -> None:
        alpn = tlv(0x01, b"http/1.1")
        if at == "last":
            header = with_crc(0x21, 0x11, TCP4_BLOCK, alpn)
            crc_value = header[-4:]
        else:
            zeroed = v2(0x21, 0x11, TCP4_BLOCK + tlv(0x03, bytes(4)) + alpn)
            crc_value = crc32c(zeroed).to_bytes(4, "big")
            header = zeroed[:31] + crc_value + zeroed[35:]
        found = parse(header)
        assert found is not None
        assert found.crc32c == int.from_bytes(crc_value, "big")
        assert found.alpn == b"http/1.1"

    def test_a_local_header_is_checked_too(self) -> None:
        header = with_crc(0x20, 0x00, b"")
        assert parse(header) == _local(23, tlvs=((0x03, header[-4:]),), crc32c=int.from_bytes(header[-4:], "big"))
        with pytest.raises(ProxyError, match="CRC32C"):
            parse(header[:-1] + bytes([header[-1] ^ 1]))

    def test_any_changed_byte_is_caught(self) -> None:
        """The checksum covers the whole header: the signature, the addresses, the other TLVs."""
        header = with_crc(0x21, 0x11, TCP4_BLOCK, tlv(0xE1, b"payload"))
        for at in (12, 13, 16, 20, 27, 28, 31, 37):
            changed = bytearray(header)
            changed[at] ^= 0x01
            with pytest.raises(ProxyError, match="the CRC32C TLV says"):
                parse(bytes(changed))

    def test_the_wrong_checksum_message(self) -> None:
        header = with_crc(0x21, 0x11, TCP4_BLOCK)
        right = int.from_bytes(header[-4:], "big")
        with pytest.raises(ProxyError) as info:
            parse(header[:-4] + (right ^ 0xFFFFFFFF).to_bytes(4, "big"))
        assert str(info.value) == (
            f"PROXY protocol v2: the CRC32C TLV says 0x{right ^ 0xFFFFFFFF:08x},"
            f" but the header's checksum is 0x{right:08x}"
        )


V1_TCP4 = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
NOT_V1_OR_V2 = "not a PROXY protocol v1 or v2 header: the connection starts with "
V1 = "PROXY protocol v1: "
V2 = "PROXY protocol v2: "
SSL = "PROXY protocol v2 SSL TLV: "
UNKNOWN_PROTOCOL = "; TCP4, TCP6 and UNKNOWN are defined"
SIX_FIELDS = " line has 6 fields (PROXY, the protocol, the source and destination addresses and ports), got "
NOT_A_PORT = " is not a decimal number from 0 to 65535 without leading zeros"
ONE_SPACE = "fields must be separated by exactly one space"
TOO_LONG = f"no CRLF in the first {V1_MAX_LENGTH} bytes (the longest line)"
FAMILIES = "; 0x0 AF_UNSPEC, 0x1 AF_INET, 0x2 AF_INET6 and 0x3 AF_UNIX are defined"
PROTOCOLS = "; 0x0 UNSPEC, 0x1 STREAM and 0x2 DGRAM are defined"
COMMANDS = "; 0x0 LOCAL and 0x1 PROXY are defined"

#: (data, the error's message): each is refused, with the fewest bytes that show it where that matters.
ERRORS: list[tuple[bytes, str]] = [
    # -- neither signature: refused at the first byte that rules both out
    (b"G", NOT_V1_OR_V2 + "b'G'"),
    (b"GET / HTTP/1.1\r\n\r\n", NOT_V1_OR_V2 + "b'GET / HTTP/1.1\\r\\n'"),
    (b"\x16\x03\x01\x02\x00", NOT_V1_OR_V2 + "b'\\x16\\x03\\x01\\x02\\x00'"),
    (b"proxy ", NOT_V1_OR_V2 + "b'proxy '"),
    (b"PROXY\r\n", NOT_V1_OR_V2 + "b'PROXY\\r\\n'"),
    (b"PROXYTCP4", NOT_V1_OR_V2 + "b'PROXYTCP4'"),
    (b"\r\n\r\n\x00\r\nQUIT\r", NOT_V1_OR_V2 + "b'\\r\\n\\r\\n\\x00\\r\\nQUIT\\r'"),
    (b"\r\nX", NOT_V1_OR_V2 + "b'\\r\\nX'"),
    # -- version 1
    (b"PROXY TCP5", V1 + "unknown protocol b'TCP5'" + UNKNOWN_PROTOCOL),
    (b"PROXY X", V1 + "unknown protocol b'X'" + UNKNOWN_PROTOCOL),
    (b"PROXY TCP ", V1 + "unknown protocol b'TCP'" + UNKNOWN_PROTOCOL),
    (b"PROXY tcp4 ", V1 + "unknown protocol b'tcp4'" + UNKNOWN_PROTOCOL),
    (b"PROXY TCP5 1.2.3.4\r", V1 + "unknown protocol b'TCP5'" + UNKNOWN_PROTOCOL),
    (b"PROXY UNKNOWNX\r\n", V1 + "unknown protocol b'UNKNOWNX'" + UNKNOWN_PROTOCOL),
    (b"PROXY UNKNOWN\t\r\n", V1 + "unknown protocol b'UNKNOWN\\t'" + UNKNOWN_PROTOCOL),
    (b"PROXY \r\n", V1 + ONE_SPACE),
    (b"PROXY  TCP4", V1 + ONE_SPACE),
    (b"PROXY TCP4\r\n", V1 + "a TCP4" + SIX_FIELDS + "2: 'PROXY TCP4'"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", V1 + "a TCP4" + SIX_FIELDS + "5: 'PROXY TCP4 1.2.3.4 5.6.7.8 1'"),
    (b"PROXY TCP6 ::1 ::1 1 2 3\r\n", V1 + "a TCP6" + SIX_FIELDS + "7: 'PROXY TCP6 ::1 ::1 1 2 3'"),
    (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", V1 + ONE_SPACE + ", got 'PROXY TCP4 1.2.3.4  5.6.7.8 1 2'"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", V1 + ONE_SPACE + ", got 'PROXY TCP4 1.2.3.4 5.6.7.8 1 2 '"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", V1 + "a line feed without a carriage return before it at byte 31"),
    (b"PROXY TCP4 1.2.3\n", V1 + "a line feed without a carriage return before it at byte 17"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", V1 + "a carriage return not followed by a line feed at byte 31"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", V1 + "a carriage return not followed by a line feed at byte 31"),
    (b"PROXY UNKNOWN " + b"x" * 92, V1 + TOO_LONG),
    (b"PROXY UNKNOWN " + b"x" * 92 + b"\r\n", V1 + TOO_LONG),
    (b"PROXY TCP4 1.2.3.4 5.6.7.\xc3\xa9 1 2\r\n", V1 + "a byte that is not US-ASCII at byte 26"),
    (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", V1 + "the source address '::1' is an IPv6 address in a TCP4 line"),
    (b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n", V1 + "the destination address '5.6.7.8' is an IPv4 address in a TCP6 line"),
    (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", V1 + "the source address '1.2.3.256' is not an IPv4 address"),
    (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", V1 + "the source address '01.2.3.4' is not an IPv4 address"),
    (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", V1 + "the source address '1.2.3' is not an IPv4 address"),
    (b"PROXY TCP4 localhost 5.6.7.8 1 2\r\n", V1 + "the source address 'localhost' is not an IPv4 address"),
    (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", V1 + "the source address 'fe80::1%eth0' is not an IPv6 address"),
    (b"PROXY TCP6 ::1 2001:db8::g 1 2\r\n", V1 + "the destination address '2001:db8::g' is not an IPv6 address"),
    (
        b"PROXY TCP6 ::1 1:2:3:4:5:6:7:8:9 1 2\r\n",
        V1 + "the destination address '1:2:3:4:5:6:7:8:9' is not an IPv6 address",
    ),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", V1 + "the source port '65536'" + NOT_A_PORT),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", V1 + "the source port '080'" + NOT_A_PORT),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n", V1 + "the source port '00'" + NOT_A_PORT),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n", V1 + "the source port '+80'" + NOT_A_PORT),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 -1\r\n", V1 + "the destination port '-1'" + NOT_A_PORT),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 0x50\r\n", V1 + "the destination port '0x50'" + NOT_A_PORT),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 1_000\r\n", V1 + "the destination port '1_000'" + NOT_A_PORT),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 0000080\r\n", V1 + "the destination port '0000080'" + NOT_A_PORT),
    # -- version 2: the fixed part, refused at its byte
    (SIG + b"\x11", V2 + "version 1 in byte 13 (0x11); only version 2 is defined"),
    (SIG + b"\x31", V2 + "version 3 in byte 13 (0x31); only version 2 is defined"),
    (SIG + b"\x01", V2 + "version 0 in byte 13 (0x01); only version 2 is defined"),
    (SIG + b"\x22", V2 + "unknown command 0x2 in byte 13 (0x22)" + COMMANDS),
    (SIG + b"\x2f", V2 + "unknown command 0xf in byte 13 (0x2f)" + COMMANDS),
    (SIG + b"\x21\x41", V2 + "unknown address family 0x4 in byte 14 (0x41)" + FAMILIES),
    (SIG + b"\x20\xf0", V2 + "unknown address family 0xf in byte 14 (0xf0)" + FAMILIES),
    (SIG + b"\x21\x13", V2 + "unknown transport protocol 0x3 in byte 14 (0x13)" + PROTOCOLS),
    (SIG + b"\x20\x03", V2 + "unknown transport protocol 0x3 in byte 14 (0x03)" + PROTOCOLS),
    (
        SIG + h("21 11 ff ff"),
        V2
        + f"a header of {V2_MAX_LENGTH} bytes (16 + a length of 65535) is longer than max_length={DEFAULT_MAX_LENGTH}",
    ),
    (
        SIG + h("21 11 0f f1"),
        V2 + f"a header of 4097 bytes (16 + a length of 4081) is longer than max_length={DEFAULT_MAX_LENGTH}",
    ),
    (SIG + h("21 11 00 0b"), V2 + "a length of 11 is too short for AF_INET addresses (12 bytes)"),
    (SIG + h("21 12 00 00"), V2 + "a length of 0 is too short for AF_INET addresses (12 bytes)"),
    (SIG + h("21 21 00 23"), V2 + "a length of 35 is too short for AF_INET6 addresses (36 bytes)"),
    (SIG + h("21 32 00 d7"), V2 + "a length of 215 is too short for AF_UNIX addresses (216 bytes)"),
    (SIG + h("21 10 00 04"), V2 + "a length of 4 is too short for AF_INET addresses (12 bytes)"),
    # -- version 2: TLVs
    (
        v2(0x21, 0x11, TCP4_BLOCK + b"\x04"),
        V2 + "1 byte(s) after the last TLV at offset 28, too few for a TLV (3 at least)",
    ),
    (
        v2(0x21, 0x11, TCP4_BLOCK + tlv(0x04, b"") + b"\x04\x00"),
        V2 + "2 byte(s) after the last TLV at offset 31, too few for a TLV (3 at least)",
    ),
    (
        v2(0x21, 0x11, TCP4_BLOCK + h("01 00 03 68 32")),
        V2 + "the TLV of type 0x01 at offset 28 has a length of 3, but only 2 byte(s) are left",
    ),
    (
        v2(0x20, 0x00, h("e0 ff ff")),
        V2 + "the TLV of type 0xe0 at offset 16 has a length of 65535, but only 0 byte(s) are left",
    ),
    # HAProxy reg-test c3 (a TLV longer than the header) and c4 (TLVs that do not end with it).
    (
        HAPROXY_VTC_FIXED + h("02 00 0A 31 32 33 34 35 31 32 33 34 35"),
        V2 + "the TLV of type 0x02 at offset 28 has a length of 10, but only 5 byte(s) are left",
    ),
    (
        HAPROXY_VTC_FIXED + h("02 00 04 31 32 33 34") + b"G",
        V2 + "1 byte(s) after the last TLV at offset 35, too few for a TLV (3 at least)",
    ),
    (v2(0x21, 0x11, TCP4_BLOCK + tlv(0x01, b"h2") + tlv(0x01, b"h2")), V2 + "more than one ALPN TLV"),
    (
        v2(0x21, 0x11, TCP4_BLOCK + tlv(0x02, b"a") + tlv(0x04, b"") + tlv(0x02, b"b")),
        V2 + "more than one AUTHORITY TLV",
    ),
    (v2(0x21, 0x11, TCP4_BLOCK + tlv(0x20, bytes(5)) + tlv(0x20, bytes(5))), V2 + "more than one SSL TLV"),
    (v2(0x21, 0x11, TCP4_BLOCK + tlv(0x02, b"caf\xe9")), V2 + "the AUTHORITY TLV is not UTF-8 text: b'caf\\xe9'"),
    (
        v2(0x21, 0x11, TCP4_BLOCK + tlv(0x30, "grün".encode())),
        V2 + "the NETNS TLV is not US-ASCII text: b'gr\\xc3\\xbcn'",
    ),
    (v2(0x21, 0x11, TCP4_BLOCK + tlv(0x05, bytes(129))), V2 + "a UNIQUE_ID TLV of 129 bytes; it has at most 128"),
    (v2(0x21, 0x11, TCP4_BLOCK + tlv(0x03, bytes(3))), V2 + "a CRC32C TLV of 3 bytes; it has 4"),
    (v2(0x21, 0x11, TCP4_BLOCK + tlv(0x03, bytes(5))), V2 + "a CRC32C TLV of 5 bytes; it has 4"),
    (v2(0x21, 0x11, TCP4_BLOCK + tlv(0x03, bytes(4)) + tlv(0x03, bytes(4))), V2 + "more than one CRC32C TLV"),
    (v2(0x21, 0x11, TCP4_BLOCK + tlv(0x20, bytes(4))), SSL + "4 byte(s); it has at least 5 (client and verify)"),
    (
        v2(0x21, 0x11, TCP4_BLOCK + tlv(0x20, bytes(5) + h("21 00 09") + b"TLSv1.3")),
        SSL + "the TLV of type 0x21 at offset 5 has a length of 9, but only 7 byte(s) are left",
    ),
    (
        v2(0x21, 0x11, TCP4_BLOCK + tlv(0x20, bytes(5) + b"\x21\x00")),
        SSL + "2 byte(s) after the last TLV at offset 5, too few for a TLV (3 at least)",
    ),
    (
        v2(0x21, 0x11, TCP4_BLOCK + tlv(0x20, bytes(5) + tlv(0x21, b"TLSv1.2") + tlv(0x21, b"TLSv1.3"))),
        SSL + "more than one SSL_VERSION sub-TLV",
    ),
    (
        v2(0x21, 0x11, TCP4_BLOCK + tlv(0x20, bytes(5) + tlv(0x23, "AES–GCM".encode()))),
        SSL + "the SSL_CIPHER sub-TLV is not US-ASCII text: b'AES\\xe2\\x80\\x93GCM'",
    ),
    (
        v2(0x21, 0x11, TCP4_BLOCK + tlv(0x20, bytes(5) + tlv(0x22, b"\xff"))),
        SSL + "the SSL_CN sub-TLV is not UTF-8 text: b'\\xff'",
    ),
]


def _error_id(case: tuple[bytes, str]) -> str:
    return case[1][:70]


class TestErrors:
    @pytest.mark.parametrize(("data", "message"), ERRORS, ids=[_error_id(case) for case in ERRORS])
    def test_refused_with_its_message(self, data: bytes, message: str) -> None:
        with pytest.raises(ProxyError) as info:
            parse(data)
        assert str(info.value) == message
        assert isinstance(info.value, ValueError)
        with pytest.raises(ProxyError) as again:
            ProxyParser().wanted(data)
        assert str(again.value) == message

    @pytest.mark.parametrize(("data", "message"), ERRORS, ids=[_error_id(case) for case in ERRORS])
    def test_more_bytes_do_not_change_the_verdict(self, data: bytes, message: str) -> None:
        """Once refused, always refused: what follows cannot repair it."""
        with pytest.raises(ProxyError):
            parse(data + CLIENT)

    def test_a_v1_line_is_refused_once_its_crlf_cannot_end_within_107_bytes(self) -> None:
        line = b"PROXY UNKNOWN " + b"x" * 91
        assert len(line) == V1_MAX_LENGTH - 2
        parser = ProxyParser()
        assert parser.parse(line) is None
        assert parser.wanted(line) == V1_MAX_LENGTH - 1
        assert parser.parse(line + b"\r") is None
        assert parser.wanted(line + b"\r") == V1_MAX_LENGTH
        assert parser.parse(line + b"\r\n") == _header(1, "unknown", None, None, V1_MAX_LENGTH)
        for longer in (line + b"x", line + b"x\r", line + b"x\r\n", line + b"xx"):
            # 106 bytes and no CR yet: a CRLF can no longer end the line within 107.
            with pytest.raises(ProxyError, match="no CRLF in the first 107 bytes"):
                parser.parse(longer)

    def test_a_v2_header_is_refused_as_soon_as_its_length_is_there(self) -> None:
        """Not after waiting for 65,551 bytes that a trusted proxy would never send."""
        with pytest.raises(ProxyError, match="is longer than max_length=4096"):
            parse(SIG + h("21 11 ff ff"))
        assert parse(SIG + h("21 11 ff")) is None

    def test_an_error_is_a_value_error_and_pickles(self) -> None:
        error = ProxyError("PROXY protocol v2: more than one ALPN TLV")
        assert isinstance(error, ValueError)
        assert str(pickle.loads(pickle.dumps(error))) == str(error)


class TestVersions:
    def test_v2_refused_when_only_v1_is_accepted(self) -> None:
        header = v2(0x21, 0x11, TCP4_BLOCK)
        with pytest.raises(ProxyError) as info:
            parse(header, versions=(1,))
        assert str(info.value) == (
            "not a PROXY protocol v1 header (a v2 header, and only v1 is accepted):"
            " the connection starts with b'\\r\\n\\r\\n\\x00\\r\\nQUIT\\n!\\x11\\x00\\x0c'"
        )

    def test_v1_refused_when_only_v2_is_accepted(self) -> None:
        with pytest.raises(ProxyError) as info:
            parse(V1_TCP4, versions=(2,))
        assert str(info.value) == (
            "not a PROXY protocol v2 header (a v1 header, and only v2 is accepted):"
            " the connection starts with b'PROXY TCP4 192.1'"
        )

    @pytest.mark.parametrize(
        ("data", "versions", "message"),
        [
            (b"P", (2,), "not a PROXY protocol v2 header: the connection starts with b'P'"),
            (b"PROXY", (2,), "not a PROXY protocol v2 header: the connection starts with b'PROXY'"),
            (b"\r", (1,), "not a PROXY protocol v1 header: the connection starts with b'\\r'"),
            (
                SIG[:11],
                (1,),
                "not a PROXY protocol v1 header: the connection starts with b'\\r\\n\\r\\n\\x00\\r\\nQUIT'",
            ),
        ],
    )
    def test_a_prefix_of_the_other_version_is_refused_at_once(
        self, data: bytes, versions: tuple[Version, ...], message: str
    ) -> None:
        with pytest.raises(ProxyError) as info:
            parse(data, versions=versions)
        assert str(info.value) == message

    @pytest.mark.parametrize(
        "data", [b"", b"P", b"PROXY", b"PROXY ", b"PROXY T", b"PROXY UNKNOWN", b"\r", SIG, SIG + b"\x21\x11\x00"]
    )
    def test_a_prefix_of_either_is_need_more(self, data: bytes) -> None:
        assert parse(data) is None

    def test_what_an_empty_start_waits_for(self) -> None:
        """The shortest header of an accepted version: 15 bytes (``PROXY UNKNOWN\\r\\n``) or 16 (v2's fixed part)."""
        assert ProxyParser().wanted(b"") == 15
        assert ProxyParser(versions=(1,)).wanted(b"") == 15
        assert ProxyParser(versions=(2,)).wanted(b"") == 16

    def test_what_a_partial_header_waits_for(self) -> None:
        parser = ProxyParser()
        assert parser.wanted(b"PROXY") == 15
        assert parser.wanted(b"PROXY TCP4 192.168.0.1") == 23  # one more: only the CRLF ends a line
        assert parser.wanted(V1_TCP4[:-1]) == len(V1_TCP4)  # the CR is there: the LF ends it
        assert parser.wanted(SIG) == 16
        assert parser.wanted(SIG + h("21 11 00 0c")) == 28
        assert parser.wanted(SIG + h("21 11 00 0c") + TCP4_BLOCK[:5]) == 28


class TestParser:
    def test_defaults(self) -> None:
        parser = ProxyParser()
        assert parser.versions == (1, 2)
        assert parser.max_length == DEFAULT_MAX_LENGTH == 4096
        assert repr(parser) == "ProxyParser(versions=(1, 2), max_length=4096)"

    def test_versions_are_normalised(self) -> None:
        parser = ProxyParser(versions=[2, 1, 2], max_length=100)
        assert parser.versions == (1, 2)
        assert parser == ProxyParser(versions={1, 2}, max_length=100)
        assert hash(parser) == hash(ProxyParser(max_length=100))
        assert parser != ProxyParser(versions=(2,), max_length=100)
        assert parser != ProxyParser()
        assert parser != "ProxyParser"
        assert repr(ProxyParser(versions=(2,))) == "ProxyParser(versions=(2,), max_length=4096)"
        only_two: list[Version] = [2]
        assert ProxyParser(versions=iter(only_two)).versions == (2,)  # any iterable, read once

    def test_it_keeps_no_state(self) -> None:
        """One parser serves many connections: a partial header on one does not affect the next."""
        parser = ProxyParser()
        assert parser.parse(V1_TCP4[:10]) is None
        assert parser.parse(b"PROXY UNKNOWN\r\n") == _header(1, "unknown", None, None, 15)
        with pytest.raises(AttributeError):
            parser.max_length = 1  # type: ignore[misc]

    def test_max_length_bounds_the_header(self) -> None:
        header = v2(0x21, 0x11, TCP4_BLOCK + tlv(0xE0, bytes(100)))  # 131 bytes
        assert parse(header, max_length=131) is not None
        with pytest.raises(ProxyError) as info:
            parse(header, max_length=130)
        assert (
            str(info.value)
            == "PROXY protocol v2: a header of 131 bytes (16 + a length of 115) is longer than max_length=130"
        )
        assert parse(v2(0x20, 0x00, b""), max_length=16) == _local(16)

    def test_the_longest_header_the_length_field_allows(self) -> None:
        header = v2(0x21, 0x00, tlv(0x04, bytes(0xFFFF - 3)))
        assert len(header) == V2_MAX_LENGTH == 65551
        found = parse(header + CLIENT, max_length=V2_MAX_LENGTH)
        assert found is not None and found.header_length == V2_MAX_LENGTH

    def test_v1_lines_are_bounded_whatever_max_length_says(self) -> None:
        assert parse(V1_WORST, max_length=16) == _header(1, "unknown", None, None, 107)

    @pytest.mark.parametrize(
        ("kwargs", "error", "message"),
        [
            ({"versions": ()}, ValueError, "versions must hold 1, 2 or both, got ()"),
            ({"versions": (3,)}, ValueError, "versions must hold only 1 and 2, got (3,)"),
            ({"versions": (1, 0)}, ValueError, "versions must hold only 1 and 2, got (1, 0)"),
            ({"versions": (True,)}, ValueError, "versions must hold only 1 and 2, got (True,)"),
            ({"versions": (1.0,)}, ValueError, "versions must hold only 1 and 2, got (1.0,)"),
            ({"versions": ("1",)}, ValueError, "versions must hold only 1 and 2, got ('1',)"),
            ({"versions": "12"}, TypeError, "versions must be an iterable of 1 and 2, got str '12'"),
            ({"versions": 2}, TypeError, "versions must be an iterable of 1 and 2, got int 2"),
            ({"max_length": 15}, ValueError, "max_length must be between 16 and 65551, got 15"),
            ({"max_length": 65552}, ValueError, "max_length must be between 16 and 65551, got 65552"),
            ({"max_length": True}, TypeError, "max_length must be an int, got bool True"),
            ({"max_length": 4096.0}, TypeError, "max_length must be an int, got float 4096.0"),
        ],
    )
    def test_bad_options(self, kwargs: dict[str, object], error: type[Exception], message: str) -> None:
        with pytest.raises(error) as info:
            ProxyParser(**kwargs)  # type: ignore[arg-type]
        assert str(info.value) == message
        with pytest.raises(error):
            parse(b"", **kwargs)  # type: ignore[arg-type]
