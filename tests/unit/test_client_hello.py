"""Reading the server name from real ClientHellos (made in memory by the ssl module)."""

from __future__ import annotations

import ssl

import pytest

from services.proxy.client_hello import NEED_MORE, Hello, NotTLS, read_hello


def client_hello(server_name: str | None, *, tls13_only: bool = False) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if tls13_only:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def split_into_records(hello: bytes, first: int) -> bytes:
    """The same handshake message carried by two records (RFC 8446 section 5.1)."""
    body = hello[5:]
    head = hello[:3]
    one, two = body[:first], body[first:]
    return head + len(one).to_bytes(2, "big") + one + head + len(two).to_bytes(2, "big") + two


@pytest.mark.parametrize("name", ["a.localhost", "App.Example.COM", "x" * 60 + ".test"])
def test_the_server_name_is_read(name: str) -> None:
    hello = read_hello(client_hello(name))
    assert isinstance(hello, Hello) and hello.server_name == name.lower()


def test_tls13_only_hello() -> None:
    hello = read_hello(client_hello("b.localhost", tls13_only=True))
    assert isinstance(hello, Hello) and hello.server_name == "b.localhost"


def test_the_offered_protocols_are_read() -> None:
    hello = read_hello(client_hello("a.localhost"))
    assert isinstance(hello, Hello) and hello.alpn == (b"h2", b"http/1.1")


def test_no_server_name() -> None:
    # An IP address is never sent as SNI (RFC 6066 section 3).
    for name in ("127.0.0.1", None):
        hello = read_hello(client_hello(name))
        assert isinstance(hello, Hello) and hello.server_name is None


def test_every_prefix_needs_more() -> None:
    hello = client_hello("a.localhost")
    for cut in range(len(hello)):
        assert read_hello(hello[:cut]) is NEED_MORE, cut


def test_a_hello_across_two_records() -> None:
    hello = client_hello("split.localhost")
    for first in (1, 3, 4, 40, len(hello) - 6):
        split = read_hello(split_into_records(hello, first))
        assert isinstance(split, Hello) and split.server_name == "split.localhost"


def test_bytes_after_the_hello_are_ignored() -> None:
    hello = read_hello(client_hello("a.localhost") + b"\x17\x03\x03junk")
    assert isinstance(hello, Hello) and hello.server_name == "a.localhost"


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n",
        b"\x15\x03\x03\x00\x02\x02\x28",  # an alert record
        b"\x16\x03\x03\x00\x00",  # an empty handshake record
        b"\x16\x03\x03\x00\x04\x02\x00\x00\x00",  # a ServerHello
        b"\x16\x01\x00\x00\x04\x01\x00\x00\x00",  # no TLS version
    ],
)
def test_not_tls(data: bytes) -> None:
    with pytest.raises(NotTLS):
        read_hello(data)


def test_a_truncated_hello_body_is_refused() -> None:
    # A ClientHello whose declared length ends inside its fixed fields.
    message = b"\x01\x00\x00\x05" + b"\x03\x03abc"
    record = b"\x16\x03\x01" + len(message).to_bytes(2, "big") + message
    with pytest.raises(NotTLS, match="truncated"):
        read_hello(record)


def test_an_oversized_hello_is_refused() -> None:
    record = b"\x16\x03\x01\x00\x04\x01\x10\x00\x00"  # declares 1 MiB
    with pytest.raises(NotTLS, match="too large"):
        read_hello(record)
