"""split_target and normalize_path: every trick meant to make policy and upstream disagree."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.proxy.paths import (
    MAX_PATH,
    BadPath,
    BadRequestTarget,
    normalize_path,
    split_target,
    target_authority,
)

NORMALIZED = [
    ("/", "/"),
    ("/admin", "/admin"),
    ("/./admin", "/admin"),
    ("/a/../admin", "/admin"),
    ("/a/b/../../admin", "/admin"),
    ("//admin", "/admin"),
    ("///admin//x///", "/admin/x/"),
    ("/%61dmin", "/admin"),
    ("/%41%42%43", "/ABC"),
    ("/%7euser/%2D%2e%5f", "/~user/-._"),
    ("/%2e%2e/admin", "/admin"),
    ("/%2E%2E/admin", "/admin"),
    ("/public/%2e%2e/admin", "/admin"),
    ("/public/.%2e/admin", "/admin"),
    ("/public/%2e/admin", "/public/admin"),
    ("/ADMIN", "/ADMIN"),  # case-sensitive, as Pomerium: never folded
    ("/admin/", "/admin/"),
    ("/admin/.", "/admin/"),
    ("/admin/x/..", "/admin/"),
    ("/..", "/"),
    ("/../admin", "/admin"),  # clamped at the root (RFC 3986 section 5.2.4)
    ("/../../../../etc/passwd", "/etc/passwd"),
    ("/a//../b", "/b"),  # empty segments merged before dot segments resolve
    ("/a%3fb", "/a%3Fb"),  # reserved characters stay encoded, hex upper-cased
    ("/a%3Bb", "/a%3Bb"),
    ("/caf%c3%a9", "/caf%C3%A9"),  # encoded UTF-8 is fine; only raw bytes are refused
    ("/100%25", "/100%25"),
    ("/%252e%252e/admin", "/%252e%252e/admin"),  # decoded once, never twice
    ("/a;b=c/d", "/a;b=c/d"),
    ("/.well-known/pomerium/jwks.json", "/.well-known/pomerium/jwks.json"),
    ("/a..b/..c/c..", "/a..b/..c/c.."),
    ("/%20x", "/%20x"),
]


@pytest.mark.parametrize(("path", "expected"), NORMALIZED)
def test_normalize(path: str, expected: str) -> None:
    assert normalize_path(path) == expected


REFUSED = [
    ("/admin%2fx", "encoded slash"),
    ("/admin%2Fx", "encoded slash"),
    ("/admin%5cx", "encoded backslash"),
    ("/admin%5Cx", "encoded backslash"),
    ("\\admin", "backslash"),
    ("/\\admin", "backslash"),
    ("/admin\\..\\x", "backslash"),
    ("/a%00", "encoded control character (%00)"),
    ("/a%0d%0aX-Injected:%201", "encoded control character (%0D)"),
    ("/a%1f", "encoded control character (%1F)"),
    ("/a%7F", "encoded control character (%7F)"),
    ("/a\x00b", "control character (0x00)"),
    ("/a\tb", "control character (0x09)"),
    ("/a\x7fb", "control character (0x7F)"),
    ("/a b", "space"),
    ("/caf\u00e9", "non-ASCII"),
    ("/\u2215admin", "non-ASCII"),  # DIVISION SLASH, a look-alike
    ("/\uff0e\uff0e/admin", "non-ASCII"),  # fullwidth dots
    ("/%G1", "malformed percent-encoding %G1"),
    ("/%1", "malformed percent-encoding %1"),
    ("/a%", "malformed percent-encoding %"),
    ("/%%41", "malformed percent-encoding %%4"),
    ("/..;/admin", "dot segment with parameters"),
    ("/public/..;x=1/admin", "dot segment with parameters"),
    ("/%2e%2e;/admin", "dot segment with parameters"),
    ("/.;/admin", "dot segment with parameters"),
    ("/a#frag", "fragment"),
    ("admin", "must start with /"),
    ("", "must start with /"),
    ("*", "must start with /"),
    ("/" + "a" * MAX_PATH, "longer than"),
]


@pytest.mark.parametrize(("path", "reason"), REFUSED)
def test_refused(path: str, reason: str) -> None:
    with pytest.raises(BadPath, match=re.escape(reason)):
        normalize_path(path)


def test_an_already_normal_path_is_returned_itself() -> None:
    path = "".join(["/api/v1/", "users"])  # built at run time: not an interned constant
    assert normalize_path(path) is path


def test_a_long_path_is_linear_and_allowed_up_to_the_limit() -> None:
    climbing = "/.." * (MAX_PATH // 3)
    assert normalize_path(climbing) == "/"
    deep = "/a" * (MAX_PATH // 2)
    assert normalize_path(deep) == deep
    encoded = "/%61" * (MAX_PATH // 4)
    assert normalize_path(encoded) == "/a" * (MAX_PATH // 4)


TARGETS = [
    (b"/", ("/", "")),
    (b"/a/b?x=1", ("/a/b", "x=1")),
    (b"/a/b?", ("/a/b", "")),
    (b"/a?x=1?y=2", ("/a", "x=1?y=2")),
    (b"/a?x=%2F&y=/", ("/a", "x=%2F&y=/")),
    (b"/a/../b?q", ("/a/../b", "q")),  # split only: normalisation is the next step
    (b"http://app.example.com/p?q=1", ("/p", "q=1")),
    (b"HTTPS://app.example.com:8443/p", ("/p", "")),
    (b"http://app.example.com", ("/", "")),
    (b"http://app.example.com?q=1", ("/", "q=1")),
    (b"/caf\xc3\xa9", ("/caf\u00c3\u00a9", "")),  # latin-1: normalize_path refuses it
]


@pytest.mark.parametrize(("target", "expected"), TARGETS)
def test_split_target(target: bytes, expected: tuple[str, str]) -> None:
    assert split_target(target) == expected


def test_split_target_path_round_trips_as_latin1() -> None:
    raw = b"/a%2Fb/\xff?q=\x21"
    path, query = split_target(raw)
    assert path.encode("latin-1") + b"?" + query.encode("latin-1") == raw


def test_asterisk_form_only_for_options() -> None:
    assert split_target(b"*", method=b"OPTIONS") == ("*", "")
    with pytest.raises(BadRequestTarget, match="only allowed with OPTIONS"):
        split_target(b"*", method=b"GET")
    with pytest.raises(BadRequestTarget):
        split_target(b"*")


BAD_TARGETS = [
    (b"", "must be a path"),
    (b"admin", "must be a path"),
    (b"ftp://host/x", "must be a path"),
    (b"app.example.com:443", "must be a path"),  # authority-form: CONNECT is not proxied here
    (b"http:///x", "no host"),
    (b"http://user:pw@app.example.com/", "user:password@"),
    (b"http://app example.com/", "invalid host"),
    (b"/a?b c", "query"),
    (b"/a?b\x00", "query"),
    (b"/a?b#c", "query"),
    (b"/a?caf\xc3\xa9", "query"),
]


@pytest.mark.parametrize(("target", "reason"), BAD_TARGETS)
def test_split_target_refuses(target: bytes, reason: str) -> None:
    with pytest.raises(BadRequestTarget, match=re.escape(reason)):
        split_target(target)


@pytest.mark.parametrize(
    ("target", "authority"),
    [
        (b"/a", None),
        (b"*", None),
        (b"http://app.example.com/a", "app.example.com"),
        (b"https://app.example.com:8443?x", "app.example.com:8443"),
        (b"http://[::1]:8080/", "[::1]:8080"),
    ],
)
def test_target_authority(target: bytes, authority: str | None) -> None:
    assert target_authority(target) == authority


# Paths made of the pieces tricks are built from, so the property below meets them often.
_TRICKY = ["/", "//", ".", "..", ";", "%2e", "%2E", "%61", "%7e", "%3f", "%25", "%c3%a9", "%20"]
_PLAIN = ["a", "B", "~", "-", "_", ":", "@", "x.y", "=", "+", "!", "$", "&", "'", "(", ")", "*"]
_PIECES = st.sampled_from([*_TRICKY, *_PLAIN])
PATHS = st.lists(_PIECES, max_size=30).map(lambda parts: "/" + "".join(parts))

_ENCODED_UNRESERVED = re.compile(r"%(?:[46][1-9A-Fa-f]|[57][0-9Aa]|3[0-9]|2[DEde]|5[Ff]|7[Ee])")


@settings(max_examples=600)
@given(PATHS)
def test_normalize_is_idempotent_and_leaves_nothing_to_resolve(path: str) -> None:
    try:
        once = normalize_path(path)
    except BadPath as exc:
        # Only the `..;`-style segments can be refused among these pieces.
        assert "dot segment with parameters" in str(exc)
        return
    assert normalize_path(once) == once
    assert once.startswith("/")
    assert "/./" not in once and "/../" not in once and "//" not in once
    assert not once.endswith(("/.", "/.."))
    assert _ENCODED_UNRESERVED.search(once) is None
    assert all(code == code.upper() for code in re.findall(r"%(..)", once))


@settings(max_examples=300)
@given(st.text(alphabet=st.characters(codec="latin-1"), max_size=40))
def test_normalize_never_crashes(text: str) -> None:
    try:
        result = normalize_path("/" + text)
    except BadPath:
        return
    assert normalize_path(result) == result
