"""The server name (SNI) of a TLS ClientHello, read before any TLS library sees it.

The proxy picks which TLS stack answers a connection by its server name: hosts whose
routes ask for client certificates need a verify callback that the stdlib `ssl`
module does not offer. So the listener peeks at the first bytes of each connection
and reads the name here. Pure: bytes in, a verdict out.

RFC 8446 section 4.1.2 (ClientHello), section 5.1 (records; a handshake message may
span several records), RFC 6066 section 3 (server_name extension).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

RECORD_HEADER: Final = 5
HANDSHAKE: Final = 0x16
CLIENT_HELLO: Final = 0x01
SERVER_NAME: Final = 0x0000
ALPN: Final = 0x0010  # RFC 7301 section 3.1
HOST_NAME: Final = 0x00
# A ClientHello with post-quantum key shares is a few KiB; one past this is refused
# rather than buffered for ever.
MAX_HELLO: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class Hello:
    """A complete ClientHello: `server_name` is None when the client sent none; `alpn`
    the protocols it offers (an ACME server validating TLS-ALPN-01 offers only
    `acme-tls/1`, RFC 8737 section 3)."""

    server_name: str | None
    alpn: tuple[bytes, ...] = ()


class NeedMore:
    """Not enough bytes yet to read the whole ClientHello."""


class NotTLS(Exception):
    """The bytes are not the start of a TLS ClientHello; the message says why."""


NEED_MORE: Final = NeedMore()


def read_hello(data: bytes) -> Hello | NeedMore:
    """The ClientHello at the start of `data`, NEED_MORE, or raise NotTLS."""
    message = _handshake_message(data)
    if isinstance(message, NeedMore):
        return message
    return _hello(message)


def _handshake_message(data: bytes) -> bytes | NeedMore:
    """The first handshake message, reassembled from as many records as it spans."""
    body = bytearray()
    offset = 0
    needed: int | None = None
    while needed is None or len(body) < needed:
        if len(data) < offset + RECORD_HEADER:
            return NEED_MORE
        if data[offset] != HANDSHAKE:
            raise NotTLS("the first record is not a TLS handshake record")
        if data[offset + 1] != 0x03:
            raise NotTLS("the record does not carry a TLS version")
        length = int.from_bytes(data[offset + 3 : offset + 5], "big")
        if length == 0:
            raise NotTLS("an empty handshake record")
        end = offset + RECORD_HEADER + length
        if len(data) < end:
            return NEED_MORE
        body += data[offset + RECORD_HEADER : end]
        offset = end
        if needed is None and len(body) >= 4:
            if body[0] != CLIENT_HELLO:
                raise NotTLS("the first handshake message is not a ClientHello")
            needed = 4 + int.from_bytes(body[1:4], "big")
            if needed > MAX_HELLO:
                raise NotTLS(f"a ClientHello of {needed} bytes is too large")
    return bytes(body[4:needed])


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise NotTLS("the ClientHello is truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def number(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def vector(self, length_bytes: int) -> bytes:
        return self.take(self.number(length_bytes))

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)


def _hello(hello: bytes) -> Hello:
    r = _Reader(hello)
    r.take(2 + 32)  # legacy_version, random
    r.vector(1)  # legacy_session_id
    r.vector(2)  # cipher_suites
    r.vector(1)  # legacy_compression_methods
    if r.done:
        return Hello(None)  # no extensions at all (an old client)
    name: str | None = None
    alpn: tuple[bytes, ...] = ()
    extensions = _Reader(r.vector(2))
    while not extensions.done:
        kind = extensions.number(2)
        data = extensions.vector(2)
        if kind == SERVER_NAME:
            name = _host_name(data)
        elif kind == ALPN:
            alpn = _protocols(data)
    return Hello(name, alpn)


def _protocols(extension: bytes) -> tuple[bytes, ...]:
    names = _Reader(_Reader(extension).vector(2))
    found = []
    while not names.done:
        found.append(names.vector(1))
    return tuple(found)


def _host_name(extension: bytes) -> str | None:
    names = _Reader(_Reader(extension).vector(2))
    while not names.done:
        kind = names.number(1)
        name = names.vector(2)
        if kind == HOST_NAME:
            try:
                text = name.decode("ascii")
            except UnicodeDecodeError:
                raise NotTLS("the server name is not ASCII") from None
            # RFC 6066: no trailing dot; a name is compared case-insensitively.
            return text.lower() or None
    return None
