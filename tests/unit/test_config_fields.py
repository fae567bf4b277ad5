"""Every field parser of shared.config, with good and bad values."""

from __future__ import annotations

import base64
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest

from shared.config.errors import FieldError
from shared.config.fields import (
    decode_base64,
    freeze,
    parse_bool,
    parse_claims_map,
    parse_duration,
    parse_header_map,
    parse_header_names,
    parse_int,
    parse_log_level,
    parse_regex,
    parse_secret,
    parse_services,
    parse_str_list,
    parse_trust_domain,
    parse_url_path,
)
from shared.config.model import ALL_SERVICES, Address, Source, WeightedURL
from shared.config.sources import (
    PemKind,
    check_pem,
    decode_inline_pem,
    parse_cert_or_path,
    resolve_path,
)
from shared.config.urls import (
    parse_address,
    parse_from_url,
    parse_service_url,
    parse_service_urls,
    parse_upstream,
)

CERT_PEM = b"-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"
KEY_PEM = b"-----BEGIN PRIVATE KEY-----\nMIGHfake\n-----END PRIVATE KEY-----\n"
SECRET = bytes(range(32))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


GOOD: list[tuple[Callable[[Any], Any], Any, Any]] = [
    (parse_bool, True, True),
    (parse_bool, False, False),
    (parse_bool, "true", True),
    (parse_bool, "FALSE", False),
    (parse_bool, "1", True),
    (parse_bool, "0", False),
    (parse_bool, "yes", True),
    (parse_bool, "no", False),
    (lambda v: parse_int(v, 1, 10), 5, 5),
    (lambda v: parse_int(v, 1, 10), "7", 7),
    (parse_duration, "30s", 30.0),
    (parse_duration, "1m30s", 90.0),
    (parse_duration, "500ms", 0.5),
    (parse_duration, "1h", 3600.0),
    (parse_duration, "0s", 0.0),
    (parse_duration, "1.5s", 1.5),
    (parse_duration, "2h45m", 9900.0),
    (parse_duration, "250us", 0.00025),
    (parse_duration, 0, 0.0),
    (parse_str_list, ["a", "b"], ("a", "b")),
    (parse_str_list, "a, b,,c", ("a", "b", "c")),
    (parse_str_list, [], ()),
    (parse_header_names, ["X-Forwarded-For", "Cookie"], ("X-Forwarded-For", "Cookie")),
    (parse_header_map, {"X-A": "1", "X-B": ""}, {"X-A": "1", "X-B": ""}),
    (parse_claims_map, {"groups": ["admin", 3]}, {"groups": ("admin", 3)}),
    (parse_regex, r"^/api/v\d+/", r"^/api/v\d+/"),
    (parse_url_path, "/admin", "/admin"),
    (parse_services, "all", ALL_SERVICES),
    (parse_services, "authorize,proxy", frozenset({"authorize", "proxy"})),
    (parse_services, ["proxy"], frozenset({"proxy"})),
    (parse_services, "all,proxy", ALL_SERVICES),
    (parse_log_level, "debug", "debug"),
    (parse_log_level, "warn", "warning"),
    (parse_log_level, "WARNING", "warning"),
    (parse_log_level, "error", "error"),
    (parse_trust_domain, "vallum.internal", "vallum.internal"),
    (parse_trust_domain, "example-1.org", "example-1.org"),
    (parse_secret, b64(SECRET), SECRET),
    (parse_secret, base64.urlsafe_b64encode(b"\xff" * 32).decode().rstrip("="), b"\xff" * 32),
    (parse_secret, base64.b64encode(b"\xfb" * 40).decode(), b"\xfb" * 40),
    (parse_address, ":443", Address("", 443)),
    (parse_address, "0.0.0.0:443", Address("0.0.0.0", 443)),
    (parse_address, "127.0.0.1:8443", Address("127.0.0.1", 8443)),
    (parse_address, "[::1]:443", Address("::1", 443)),
    (parse_address, "localhost:80", Address("localhost", 80)),
    (parse_address, ":0", Address("", 0)),
    (parse_address, "proxy:65535", Address("proxy", 65535)),
    (parse_service_url, "https://auth.example.com", "https://auth.example.com"),
    (parse_service_url, "https://Auth.Example.com/", "https://auth.example.com"),
    (parse_service_url, "http://127.0.0.1:5443", "http://127.0.0.1:5443"),
    (parse_service_url, "https://[::1]:5443", "https://[::1]:5443"),
    (parse_service_urls, "https://a:1,https://b:2", ("https://a:1", "https://b:2")),
    (parse_service_urls, ["https://a"], ("https://a",)),
    (parse_from_url, "https://app.example.com", "https://app.example.com"),
    (parse_from_url, "https://*.example.com:8443/", "https://*.example.com:8443"),
    (parse_from_url, "http://app.example.com", "http://app.example.com"),
    (parse_from_url, "tcp+https://db.example.com:5432", "tcp+https://db.example.com:5432"),
    (parse_upstream, "http://app:8080", WeightedURL("http://app:8080", 1)),
    (parse_upstream, "https://app/base/path", WeightedURL("https://app/base/path", 1)),
    (parse_upstream, "http://app:8080,3", WeightedURL("http://app:8080", 3)),
    (parse_upstream, "tcp://db:5432", WeightedURL("tcp://db:5432", 1)),
]


@pytest.mark.parametrize(("parse", "value", "expected"), GOOD)
def test_good_values(parse: Callable[[Any], Any], value: Any, expected: Any) -> None:
    assert parse(value) == expected


BAD: list[tuple[Callable[[Any], Any], Any, str]] = [
    (parse_bool, "maybe", "expected a boolean (true or false), got string 'maybe'"),
    (parse_bool, 1, "expected a boolean (true or false), got integer 1"),
    (parse_bool, None, "got null"),
    (lambda v: parse_int(v, 1, 10), 11, "must be between 1 and 10, got 11"),
    (lambda v: parse_int(v, 1, 10), True, "expected an integer, got boolean"),
    (lambda v: parse_int(v, 1, 10), "x", "expected an integer, got string 'x'"),
    (parse_duration, 30, "use a unit, e.g. 30s"),
    (parse_duration, "30", "use a unit, e.g. 30s"),
    (parse_duration, 1.5, "use a unit, e.g. 30s"),
    (parse_duration, "-5s", "must not be negative"),
    (parse_duration, "5 s", "expected a duration such as 30s"),
    (parse_duration, "5d", "expected a duration such as 30s"),
    (parse_duration, "s", "expected a duration such as 30s"),
    (parse_duration, "1m30", "expected a duration such as 30s"),
    (parse_duration, True, "expected a duration such as 30s, got boolean"),
    (parse_duration, ["1s"], "got list"),
    (parse_str_list, {"a": 1}, "expected a list of strings, got mapping"),
    (parse_str_list, ["a", 2], "item 1 is integer 2"),
    (parse_header_names, ["Bad Header"], "is not a valid HTTP header name"),
    (parse_header_map, ["X-A"], "expected a mapping of header name to value, got list"),
    (parse_header_map, {"X-A": True}, "value of X-A must be a string, got boolean (quote it)"),
    (parse_header_map, {"X-A": "a\r\nEvil: 1"}, "must not contain a line break"),
    (parse_header_map, {"X A": "1"}, "not a valid HTTP header name"),
    (parse_claims_map, {"groups": "admin"}, "values of claim groups must be a list"),
    (parse_claims_map, "groups", "expected a mapping of claim name"),
    (parse_regex, "a(b", "invalid regular expression (Python re syntax)"),
    (parse_regex, 5, "expected a string, got integer 5"),
    (parse_url_path, "admin", "must start with /, got 'admin'"),
    (parse_services, "authenticate,frontend", "unknown service 'frontend'"),
    (parse_services, "", "must name at least one service"),
    (parse_log_level, "verbose", "must be one of debug, info, warn, warning, error"),
    (parse_trust_domain, "Vallum.Internal", "must be a DNS-like name"),
    (parse_trust_domain, "spiffe://x", "must be a DNS-like name"),
    (parse_trust_domain, "a..b", "must be a DNS-like name"),
    (parse_trust_domain, "-a.b", "must be a DNS-like name"),
    (parse_secret, b64(b"short"), "must decode to at least 32 bytes, got 5"),
    (parse_secret, "not base64!", "not valid base64"),
    (parse_secret, "+/" * 22 + "-_", "mixes the standard and URL-safe"),
    (parse_secret, 12345, "expected a base64 string, got integer"),
    (parse_address, "443", "expected host:port such as :443"),
    (parse_address, 443, "expected host:port, got integer 443 (did you mean ':443'?)"),
    (parse_address, ":65536", "port must be a number from 0 to 65535, got '65536'"),
    (parse_address, ":https", "port must be a number from 0 to 65535"),
    (parse_address, "::1:443", "IPv6 addresses need brackets"),
    (parse_address, "[::1]", "expected [ipv6]:port"),
    (parse_address, "[nothost]:443", "is not an IPv6 address"),
    (parse_address, "bad host:80", "is not a valid host name or IP address"),
    (parse_service_url, "auth.example.com", "must be an absolute http or https URL"),
    (parse_service_url, "ftp://auth.example.com", "must be an absolute http or https URL"),
    (parse_service_url, "https://auth.example.com/path", "must not have a path, query or fragment"),
    (parse_service_url, "https://auth.example.com?x=1", "must not have a path, query or fragment"),
    (parse_service_url, "https://u:p@auth.example.com", "must not contain credentials"),
    (parse_service_url, "https://auth.example.com:99999", "has an invalid port"),
    (parse_service_url, "https://*.example.com", "must name a valid host"),
    (parse_service_urls, "https://a,ftp://b", "'ftp://b'"),
    (parse_service_urls, [], "must name at least one URL"),
    (parse_from_url, "ftp://app.example.com", "must be an http, https or tcp+https URL"),
    (parse_from_url, "app.example.com", "must be an http, https or tcp+https URL"),
    (parse_from_url, "https://app.example.com/admin", "must not have a path"),
    (parse_from_url, "https://app.example.com?a=b", "must not have a query or fragment"),
    (parse_from_url, "https://app.example.com#top", "must not have a query or fragment"),
    (parse_from_url, "https://a.*.example.com", "must name a valid host"),
    (parse_from_url, "tcp+https://db.example.com", "needs a port"),
    (parse_from_url, "https://app.example.com:0x10", "has an invalid port"),
    (parse_upstream, "ftp://x", "must be an http or https URL, got 'ftp://x'"),
    (parse_upstream, "http://app,0", "weight must be an integer of at least 1, got '0'"),
    (parse_upstream, "http://app,heavy", "weight must be an integer of at least 1"),
    (parse_upstream, "tcp://db", "a tcp upstream needs a port"),
    (parse_upstream, "http://app#frag", "must not have a fragment"),
    (parse_upstream, 8080, "expected a URL string, got integer 8080"),
]


@pytest.mark.parametrize(("parse", "value", "message"), BAD)
def test_bad_values(parse: Callable[[Any], Any], value: Any, message: str) -> None:
    with pytest.raises(FieldError) as caught:
        parse(value)
    assert message in str(caught.value)


def test_secret_messages_never_contain_the_secret() -> None:
    almost = b64(b"\x01" * 31)
    with pytest.raises(FieldError) as caught:
        parse_secret(almost)
    assert almost not in str(caught.value)
    assert almost[:8] not in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        b64(SECRET),
        b64(SECRET).rstrip("="),
        base64.urlsafe_b64encode(SECRET).decode(),
        "\n".join([b64(SECRET)[:20], b64(SECRET)[20:]]),
    ],
)
def test_decode_base64_accepts_standard_url_safe_unpadded_and_wrapped(text: str) -> None:
    assert decode_base64(text) == SECRET


def test_freeze_makes_nested_yaml_read_only() -> None:
    frozen = freeze({"allow": {"or": [{"email": {"is": "a@example.com"}}]}})
    assert isinstance(frozen, MappingProxyType)
    assert isinstance(frozen["allow"]["or"], tuple)
    with pytest.raises(TypeError):
        frozen["allow"] = 1  # type: ignore[index]
    assert frozen == {"allow": {"or": ({"email": {"is": "a@example.com"}},)}}


# --- PEM sources and paths -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        (b64(CERT_PEM), PemKind.CERT, CERT_PEM),
        (base64.urlsafe_b64encode(CERT_PEM).decode().rstrip("="), PemKind.CERT, CERT_PEM),
        (b64(KEY_PEM), PemKind.KEY, KEY_PEM),
        (CERT_PEM.decode(), PemKind.CERT, CERT_PEM),
        (b64(CERT_PEM + KEY_PEM), PemKind.KEY, CERT_PEM + KEY_PEM),
    ],
)
def test_inline_pem_decodes(value: str, kind: PemKind, expected: bytes) -> None:
    assert decode_inline_pem(value, kind, "certificate_file") == expected


@pytest.mark.parametrize(
    ("value", "kind", "message"),
    [
        (
            "/etc/ssl/cert.pem",
            PemKind.CERT,
            "not base64-encoded PEM (use certificate_file for a path)",
        ),
        (b64(b"hello world"), PemKind.CERT, "not base64-encoded PEM"),
        (42, PemKind.CERT, "expected base64-encoded PEM, got integer"),
        (b64(KEY_PEM), PemKind.CERT, "holds no PEM certificate (found PRIVATE KEY)"),
        (b64(CERT_PEM), PemKind.KEY, "holds no PEM private key (found CERTIFICATE)"),
    ],
)
def test_inline_pem_rejects(value: Any, kind: PemKind, message: str) -> None:
    with pytest.raises(FieldError) as caught:
        decode_inline_pem(value, kind, "certificate_file")
    assert message in str(caught.value)


def test_inline_key_errors_do_not_echo_the_value() -> None:
    value = b64(b"-----NOT PEM----- secret material")
    with pytest.raises(FieldError) as caught:
        decode_inline_pem(value, PemKind.KEY, "certificate_key_file")
    assert value not in str(caught.value)


def test_check_pem_requires_pem_markers() -> None:
    with pytest.raises(FieldError, match="holds no PEM data"):
        check_pem(b"\x30\x82\x01\x0a", PemKind.CERT)
    assert check_pem(b"-----BEGIN EC PRIVATE KEY-----\n", PemKind.KEY)


@pytest.mark.parametrize(
    ("value", "home", "expected"),
    [
        ("certs/a.pem", None, "/etc/vallum/certs/a.pem"),
        ("../a.pem", None, "/etc/a.pem"),
        ("/abs/a.pem", None, "/abs/a.pem"),
        ("~/a.pem", "/home/me", "/home/me/a.pem"),
        ("~", "/home/me", "/home/me"),
    ],
)
def test_resolve_path(value: str, home: str | None, expected: str) -> None:
    assert resolve_path(value, "/etc/vallum", home) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [("", "must not be empty"), ("~/a.pem", "HOME is not set"), (3, "expected a string")],
)
def test_resolve_path_rejects(value: Any, message: str) -> None:
    with pytest.raises(FieldError, match=message):
        resolve_path(value, "/etc/vallum", None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b64(CERT_PEM), Source(None, CERT_PEM)),
        ("cert.pem", Source("/etc/vallum/cert.pem", None)),
        ("/etc/ssl/cert.pem", Source("/etc/ssl/cert.pem", None)),
        # Decodes as base64 but not to PEM, so it is a file name.
        ("abcd", Source("/etc/vallum/abcd", None)),
    ],
)
def test_certificates_entry_is_inline_pem_or_path(value: str, expected: Source) -> None:
    assert parse_cert_or_path(value, PemKind.CERT, "/etc/vallum", None) == expected


def test_certificates_entry_with_the_wrong_pem_is_not_mistaken_for_a_path() -> None:
    with pytest.raises(FieldError, match="holds no PEM private key"):
        parse_cert_or_path(b64(CERT_PEM), PemKind.KEY, "/etc/vallum", None)


def test_address_str_round_trips() -> None:
    for text in (":443", "0.0.0.0:443", "[::1]:8443", "localhost:80"):
        assert str(parse_address(text)) == text
