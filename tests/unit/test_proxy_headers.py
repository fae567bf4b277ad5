"""What goes upstream and what comes back: hop-by-hop, spoofing, forwarding, replacement."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from services.proxy.headers import (
    HOP_BY_HOP,
    client_address,
    downstream_response_headers,
    header_value,
    upstream_request_headers,
    wants_html,
)

Pairs = list[tuple[bytes, bytes]]
PEER = "203.0.113.7"


def upstream(incoming: Pairs, **overrides: Any) -> Pairs:
    options: dict[str, Any] = {
        "peer_ip": PEER,
        "scheme": "https",
        "host": b"app.example.com",
        "trusted_hops": 0,
        "set_headers": [],
        "remove": frozenset(),
        "host_header": None,
        "upgrade": None,
        **overrides,
    }
    return upstream_request_headers(incoming, **options)


def values(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for key, value in headers if key.lower() == name]


def names(headers: Sequence[tuple[bytes, bytes]]) -> set[bytes]:
    return {key.lower() for key, _ in headers}


def test_hop_by_hop_is_rfc_9110_plus_proxy_connection() -> None:
    assert {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    } == HOP_BY_HOP


def test_hop_by_hop_headers_are_not_forwarded() -> None:
    incoming = [
        (b"Host", b"app.example.com"),
        (b"Connection", b"keep-alive"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Proxy-Connection", b"keep-alive"),
        (b"Proxy-Authorization", b"Basic eA=="),
        (b"TE", b"trailers"),
        (b"Trailer", b"X-Checksum"),
        (b"Upgrade", b"websocket"),
        (b"Accept", b"*/*"),
    ]
    out = upstream(incoming)
    assert not names(out) & HOP_BY_HOP
    assert (b"Accept", b"*/*") in out


@pytest.mark.parametrize(
    "connection",
    [b"close, X-Secret", b"X-SECRET", b"keep-alive,x-secret , ,", b"Upgrade, X-Secret"],
)
def test_names_listed_in_connection_are_dropped(connection: bytes) -> None:
    out = upstream([(b"Connection", connection), (b"X-Secret", b"s"), (b"X-Other", b"o")])
    assert b"x-secret" not in names(out)
    assert (b"X-Other", b"o") in out


def test_connection_cannot_remove_host_or_content_length() -> None:
    incoming = [
        (b"Host", b"app.example.com"),
        (b"Connection", b"Host, Content-Length"),
        (b"Content-Length", b"5"),
    ]
    out = upstream(incoming)
    assert values(out, b"host") == [b"app.example.com"]
    assert values(out, b"content-length") == [b"5"]


SPOOFED = [
    (b"X-Pomerium-Jwt-Assertion", b"forged"),
    (b"x-pomerium-jwt-assertion", b"forged"),
    (b"x-pomerium-claim-email", b"admin@example.com"),
    (b"X-POMERIUM-CLAIM-GROUPS", b"admins"),
    (b"X-Pomerium-Anything-Else", b"x"),
]


@pytest.mark.parametrize("trusted_hops", [0, 1])
@pytest.mark.parametrize("spoofed", SPOOFED)
def test_incoming_pomerium_headers_never_pass(
    spoofed: tuple[bytes, bytes], trusted_hops: int
) -> None:
    out = upstream([spoofed], trusted_hops=trusted_hops)
    assert not any(key.lower().startswith(b"x-pomerium-") for key, _ in out)


def test_the_decisions_identity_headers_are_the_only_ones() -> None:
    out = upstream(
        SPOOFED,
        set_headers=[
            ("X-Pomerium-Jwt-Assertion", "signed.jwt.value"),
            ("X-Pomerium-Claim-Email", "user@example.com"),
        ],
    )
    assert values(out, b"x-pomerium-jwt-assertion") == [b"signed.jwt.value"]
    assert values(out, b"x-pomerium-claim-email") == [b"user@example.com"]
    assert values(out, b"x-pomerium-claim-groups") == []
    assert values(out, b"x-pomerium-anything-else") == []


def test_set_headers_replace_same_named_incoming_whatever_the_case() -> None:
    out = upstream(
        [(b"authorization", b"Bearer client"), (b"X-Env", b"client")],
        set_headers=[("Authorization", "Basic config"), ("x-env", "prod")],
    )
    assert values(out, b"authorization") == [b"Basic config"]
    assert values(out, b"x-env") == [b"prod"]


def test_set_headers_keep_repeats() -> None:
    out = upstream([], set_headers=[("X-Role", "a"), ("X-Role", "b")])
    assert values(out, b"x-role") == [b"a", b"b"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a\r\nX-Injected: 1", b"a  X-Injected: 1"),
        ("a\nb", b"a b"),
        ("a\x00b", b"a b"),
        ("Jos\u00e9", "Jos\u00e9".encode()),
    ],
)
def test_set_header_values_cannot_inject(value: str, expected: bytes) -> None:
    out = upstream([], set_headers=[("X-Claim", value)])
    assert values(out, b"x-claim") == [expected]
    assert b"x-injected" not in names(out)


def test_set_headers_cannot_touch_host_or_framing() -> None:
    out = upstream(
        [(b"Content-Length", b"3")],
        set_headers=[
            ("Host", "evil.example.com"),
            ("Content-Length", "99"),
            ("Transfer-Encoding", "chunked"),
            ("Connection", "close"),
        ],
    )
    assert values(out, b"host") == [b"app.example.com"]
    assert values(out, b"content-length") == [b"3"]
    assert values(out, b"transfer-encoding") == []
    assert values(out, b"connection") == []


def test_remove_request_headers_is_case_insensitive_on_incoming() -> None:
    out = upstream(
        [(b"X-Email", b"a"), (b"x-username", b"b"), (b"X-Keep", b"c")],
        remove=frozenset({b"x-email", b"x-username"}),
    )
    assert names(out) & {b"x-email", b"x-username"} == set()
    assert (b"X-Keep", b"c") in out


def test_remove_does_not_remove_the_decisions_headers() -> None:
    out = upstream(
        [(b"X-Env", b"client")], remove=frozenset({b"x-env"}), set_headers=[("X-Env", "prod")]
    )
    assert values(out, b"x-env") == [b"prod"]


def test_incoming_names_keep_their_case() -> None:
    out = upstream([(b"X-Request-ID", b"abc"), (b"accept-LANGUAGE", b"en")])
    assert (b"X-Request-ID", b"abc") in out
    assert (b"accept-LANGUAGE", b"en") in out


FORWARDING = [
    (b"X-Forwarded-For", b"6.6.6.6"),
    (b"X-Forwarded-Proto", b"http"),
    (b"X-Forwarded-Host", b"evil.example.com"),
    (b"X-Forwarded-Prefix", b"/evil"),
    (b"Forwarded", b"for=6.6.6.6;proto=http"),
]


def test_zero_trusted_hops_ignores_spoofed_forwarding_headers() -> None:
    out = upstream(FORWARDING, trusted_hops=0)
    assert values(out, b"x-forwarded-for") == [PEER.encode()]
    assert values(out, b"x-forwarded-proto") == [b"https"]
    assert values(out, b"x-forwarded-host") == [b"app.example.com"]
    assert values(out, b"x-forwarded-prefix") == []
    assert values(out, b"forwarded") == []


def test_one_trusted_hop_appends_the_peer_to_the_chain() -> None:
    out = upstream(FORWARDING, trusted_hops=1)
    assert values(out, b"x-forwarded-for") == [b"6.6.6.6, " + PEER.encode()]
    # What Vallum saw is what policy was evaluated against, so it is what it states.
    assert values(out, b"x-forwarded-proto") == [b"https"]
    assert values(out, b"x-forwarded-host") == [b"app.example.com"]
    assert values(out, b"x-forwarded-prefix") == [b"/evil"]
    assert values(out, b"forwarded") == [b"for=6.6.6.6;proto=http"]


def test_several_forwarded_for_lines_are_one_chain() -> None:
    incoming = [(b"X-Forwarded-For", b"1.1.1.1, 2.2.2.2"), (b"x-forwarded-for", b" 3.3.3.3 ")]
    out = upstream(incoming, trusted_hops=2)
    assert values(out, b"x-forwarded-for") == [b"1.1.1.1, 2.2.2.2, 3.3.3.3, " + PEER.encode()]


@pytest.mark.parametrize(
    ("trusted_hops", "incoming", "expected"),
    [
        (0, [(b"X-Forwarded-For", b"6.6.6.6")], []),
        (1, [(b"X-Forwarded-For", b"1.1.1.1")], [b"1.1.1.1"]),
        (1, [], []),
    ],
)
def test_skip_xff_append(trusted_hops: int, incoming: Pairs, expected: list[bytes]) -> None:
    out = upstream(incoming, trusted_hops=trusted_hops, skip_xff_append=True)
    assert values(out, b"x-forwarded-for") == expected


def test_host_is_the_original_unless_rewritten() -> None:
    incoming = [(b"Host", b"app.example.com"), (b"Accept", b"*/*")]
    assert values(upstream(incoming), b"host") == [b"app.example.com"]
    rewritten = upstream(incoming, host_header=b"internal:8080")
    assert values(rewritten, b"host") == [b"internal:8080"]
    assert values(rewritten, b"x-forwarded-host") == [b"app.example.com"]


def test_websocket_upgrade_is_readded() -> None:
    incoming = [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")]
    out = upstream(incoming, upgrade=b"websocket")
    assert values(out, b"connection") == [b"upgrade"]
    assert values(out, b"upgrade") == [b"websocket"]
    assert values(upstream(incoming), b"upgrade") == []


def test_transfer_encoding_wins_over_content_length() -> None:
    incoming = [(b"Content-Length", b"10"), (b"Transfer-Encoding", b"chunked")]
    out = upstream(incoming)
    assert values(out, b"content-length") == []
    assert values(out, b"transfer-encoding") == []


def downstream(headers: Pairs, *, upgrade: bool = False, **extra: Any) -> Pairs:
    return downstream_response_headers(
        headers, set_headers=extra.get("set_headers", []), upgrade=upgrade
    )


def test_every_set_cookie_is_kept_in_order() -> None:
    headers = [
        (b"Set-Cookie", b"a=1; Path=/"),
        (b"Content-Type", b"text/html"),
        (b"set-cookie", b"b=2; Expires=Wed, 21 Oct 2026 07:28:00 GMT"),
        (b"Set-Cookie", b"c=3"),
    ]
    out = downstream(headers, set_headers=[("X-Frame-Options", "DENY")])
    assert values(out, b"set-cookie") == [
        b"a=1; Path=/",
        b"b=2; Expires=Wed, 21 Oct 2026 07:28:00 GMT",
        b"c=3",
    ]


def test_response_hop_by_hop_and_nominated_are_dropped() -> None:
    headers = [
        (b"Connection", b"keep-alive, X-Internal"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Length", b"10"),
        (b"X-Internal", b"secret"),
        (b"Content-Type", b"text/plain"),
    ]
    out = downstream(headers)
    assert out == [(b"Content-Type", b"text/plain")]


def test_set_response_headers_replace_same_named() -> None:
    headers = [(b"X-Frame-Options", b"ALLOW"), (b"Server", b"upstream")]
    out = downstream(headers, set_headers=[("x-frame-options", "DENY"), ("X-Test", "1")])
    assert values(out, b"x-frame-options") == [b"DENY"]
    assert values(out, b"x-test") == [b"1"]
    assert (b"Server", b"upstream") in out


def test_a_101_keeps_what_the_upgrade_needs() -> None:
    headers = [
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
    ]
    out = downstream(headers, upgrade=True)
    assert values(out, b"upgrade") == [b"websocket"]
    assert values(out, b"connection") == [b"upgrade"]
    assert values(out, b"sec-websocket-accept") == [b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="]
    assert values(downstream(headers), b"upgrade") == []


@pytest.mark.parametrize(
    ("xff", "hops", "expected"),
    [
        (None, 0, PEER),
        (b"1.2.3.4", 0, PEER),
        (None, 1, PEER),
        (b"", 1, PEER),
        (b"1.2.3.4", 1, "1.2.3.4"),
        (b"6.6.6.6, 1.2.3.4", 1, "1.2.3.4"),  # the client's own entry is left of the LB's
        (b"6.6.6.6, 1.2.3.4", 2, "6.6.6.6"),
        (b"1.2.3.4", 2, PEER),  # fewer than N: the peer
        (b" 1.2.3.4 ,, ", 1, "1.2.3.4"),  # empty list elements do not count
        (b"1.2.3.4:5555", 1, "1.2.3.4"),
        (b"[2001:db8::1]:443", 1, "2001:db8::1"),
        (b"2001:DB8:0:0::1", 1, "2001:db8::1"),
        (b"unknown", 1, PEER),
        (b"1.2.3.4, garbage", 1, PEER),  # the chosen entry is malformed: never skipped over
        (b"garbage, 1.2.3.4", 1, "1.2.3.4"),
        (b"999.1.1.1", 1, PEER),
        (b"1.2.3.4\x00", 1, PEER),
    ],
)
def test_client_address(xff: bytes | None, hops: int, expected: str) -> None:
    assert client_address(PEER, xff, hops) == expected


CHROME = b"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (CHROME, True),
        (b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),  # Firefox
        (b"text/html", True),
        (b"TEXT/HTML", True),
        (b"application/xhtml+xml", True),
        (b"application/json;q=0.9, text/html", True),
        (b"text/html;level=1;q=0.8, application/json;q=0.5", True),
        (b" , text/html", True),
        (None, False),
        (b"", False),
        (b"*/*", False),  # curl: an API client (Pomerium would redirect it)
        (b"text/*", False),
        (b"image/png", False),
        (b"garbage", False),
        (b"text/html;q=x", False),
        (b"application/json", False),
        (b"application/json, text/plain, */*", False),  # axios
        (b"text/plain", False),
        (b"application/grpc-web-text", False),
        (b"text/html;q=0.5, application/json", False),
        (b"text/html;q=0, */*", False),
        (b"text/html;q=0", False),
        (b"*/*;q=0.1, text/*;q=0.1, application/json;q=0.1", False),  # specificity breaks ties
        (b"image/avif, text/html;q=0.9", True),  # ranges matching no answer type are skipped
    ],
)
def test_wants_html(accept: bytes | None, expected: bool) -> None:
    assert wants_html(accept) is expected


def test_header_value_joins_lines() -> None:
    headers = [
        (b"X-Forwarded-For", b"1.1.1.1"),
        (b"Accept", b"*/*"),
        (b"x-forwarded-for", b"2.2.2.2"),
    ]
    assert header_value(headers, b"x-forwarded-for") == b"1.1.1.1, 2.2.2.2"
    assert header_value(headers, b"accept") == b"*/*"
    assert header_value(headers, b"cookie") is None
