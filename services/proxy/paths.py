"""Request-target parsing and path normalisation: the path policy sees is the path forwarded.

Every request's path goes through `normalize_path` once, and its result is used both to
match routes and policy and as the path sent upstream. No upstream can therefore resolve
a path differently from what policy allowed: the result holds no dot segments, no empty
segments and no percent-encoded unreserved characters, so normalising it again (as an
upstream might) changes nothing.

Decisions a reader of a policy should know:

- Case is preserved: `/ADMIN` and `/admin` are different paths, as in Pomerium and Envoy.
  A policy meant to cover both must say so.
- `..` above the root is clamped (`/../admin` is `/admin`), as RFC 3986 section 5.2.4
  specifies. This cannot open a gap because the clamped path is also what is forwarded;
  browsers never send dot segments, so only hand-made requests ever meet this rule.
- Empty segments are dropped before dot segments are resolved (`/a//../b` is `/b`), the
  way a file system reads it.
- Refused outright (a 400, never forwarded): an encoded `/` or `\\`, any backslash,
  control characters raw or encoded, raw non-ASCII bytes, malformed percent-encoding, a
  `#`, a dot segment carrying `;` parameters (`/..;/`, which Tomcat-style servers read
  as `..`), and paths longer than MAX_PATH characters.
- Decoding happens once: `%252e` stays `%252e`, it is not read as `.`.
"""

from __future__ import annotations

import re

MAX_PATH = 8192


class BadRequestTarget(ValueError):
    """The request-target is not one this proxy forwards; the message says why."""


class BadPath(ValueError):
    """The path is refused; the message says why in words a user can act on."""


# In the query: a query is forwarded byte for byte, so only what cannot be in a
# request-target at all (RFC 9112 section 3.2) is refused.
_BAD_QUERY = re.compile(rb"[^\x21-\x7e]|#")

# RFC 3986 section 2.3.
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")

_HEX = frozenset("0123456789abcdefABCDEF")


def _reason_for_encoded(byte: int) -> str | None:
    if byte == 0x2F:
        return "an encoded slash (%2F) is not allowed in the path"
    if byte == 0x5C:
        return "an encoded backslash (%5C) is not allowed in the path"
    if byte < 0x20 or byte == 0x7F:
        return f"an encoded control character (%{byte:02X}) is not allowed in the path"
    return None


def _build_decode_table() -> dict[str, str]:
    """What each two-hex-digit escape becomes: a character, an upper-case escape, or ''.

    Precomputed for every spelling (`2e`, `2E`, ...) so decoding is one dict lookup.
    The empty string marks an escape that is refused; _reason_for_encoded says why.
    """
    table: dict[str, str] = {}
    for byte in range(256):
        if _reason_for_encoded(byte) is not None:
            decoded = ""
        elif byte in _UNRESERVED:
            decoded = chr(byte)
        else:
            decoded = f"%{byte:02X}"
        digits = f"{byte:02x}"
        high, low = digits[0], digits[1]
        for first in {high, high.upper()}:
            for second in {low, low.upper()}:
                table[first + second] = decoded
    return table


_DECODE = _build_decode_table()

_RAW_REFUSED = re.compile(r"[\\#\x00-\x20\x7f]")


def _check_raw(path: str) -> None:
    if len(path) > MAX_PATH:
        raise BadPath(f"the path is longer than {MAX_PATH} characters")
    if not path.isascii():
        raise BadPath("the path has non-ASCII characters; percent-encode them (UTF-8)")
    found = _RAW_REFUSED.search(path)
    if found is None:
        return
    char = found.group()
    if char == "\\":
        raise BadPath("a backslash is not allowed in the path")
    if char == "#":
        raise BadPath("a fragment (#) is not allowed in the request path")
    if char == " ":
        raise BadPath("a space is not allowed in the path; percent-encode it as %20")
    raise BadPath(f"a control character (0x{ord(char):02X}) is not allowed in the path")


def _decode(path: str) -> str:
    out: list[str] = []
    at = 0
    while (percent := path.find("%", at)) >= 0:
        code = path[percent + 1 : percent + 3]
        if len(code) < 2 or code[0] not in _HEX or code[1] not in _HEX:
            raise BadPath(
                f"malformed percent-encoding {path[percent : percent + 3]} in the path "
                "(% must be followed by two hex digits)"
            )
        decoded = _DECODE[code]
        if not decoded:
            raise BadPath(_reason_for_encoded(int(code, 16)) or "refused percent-encoding")
        out.append(path[at:percent])
        out.append(decoded)
        at = percent + 3
    out.append(path[at:])
    return "".join(out)


def _resolve(path: str) -> str:
    """RFC 3986 section 5.2.4 on a path whose empty segments are merged away."""
    segments = path.split("/")
    kept: list[str] = []
    for segment in segments:
        if segment in ("", "."):
            continue
        if segment == "..":
            if kept:
                kept.pop()
            continue
        if segment.startswith((".;", "..;")):
            raise BadPath(f"a dot segment with parameters ({segment!r}) is not allowed")
        kept.append(segment)
    # A path that ended in `/`, `/.` or `/..` names a directory: keep its trailing slash.
    trailing = segments[-1] in ("", ".", "..") and bool(kept)
    return "/" + "/".join(kept) + ("/" if trailing else "")


def _already_normal(path: str) -> bool:
    # Plain substring tests: measured several times faster than one regular expression
    # here. `/.` also catches `/.well-known`, which the slow path returns unchanged.
    return (
        path.startswith("/")
        and "%" not in path
        and "/." not in path
        and "//" not in path
        and "\\" not in path
        and "#" not in path
        and " " not in path
        and path.isascii()
        # For ASCII text, printable means no control characters.
        and path.isprintable()
        and len(path) <= MAX_PATH
    )


def normalize_path(path: str) -> str:
    """The one path used for routing, policy and forwarding; raises BadPath.

    A path that is already normal is returned as the same object.
    """
    if _already_normal(path):
        return path
    _check_raw(path)
    if not path.startswith("/"):
        raise BadPath("the path must start with /")
    decoded = _decode(path) if "%" in path else path
    return _resolve(decoded)


def split_target(target: bytes, *, method: bytes | None = None) -> tuple[str, str]:
    """(path, query) of a request-target (RFC 9112 section 3.2); the query has no `?`.

    The path still needs normalize_path. Both are decoded as latin-1, so encoding them
    back with latin-1 gives the exact bytes received. `*` (asterisk-form) is returned as
    the path `*` only when `method` is OPTIONS: it names the server, not a resource, and
    must be answered rather than routed. Raises BadRequestTarget.
    """
    if target.startswith(b"/"):
        rest = target
    elif target == b"*":
        if method != b"OPTIONS":
            raise BadRequestTarget("the request-target * is only allowed with OPTIONS")
        return "*", ""
    else:
        rest = _split_absolute(target)[1]
    path, sep, query = rest.partition(b"?")
    if sep and _BAD_QUERY.search(query) is not None:
        raise BadRequestTarget(
            "the query has a control character, space, non-ASCII byte or #; percent-encode it"
        )
    return path.decode("latin-1"), query.decode("latin-1")


def target_authority(target: bytes) -> str | None:
    """The host[:port] of an absolute-form target, else None; raises BadRequestTarget.

    RFC 9112 section 3.2.2 makes this authority, not the Host header, name the target;
    the caller must make both agree (or refuse) so that policy sees the host forwarded.
    """
    if target.startswith(b"/") or target == b"*":
        return None
    return _split_absolute(target)[0].decode("latin-1")


def _split_absolute(target: bytes) -> tuple[bytes, bytes]:
    """(authority, path-and-query) of `http(s)://authority[/path][?query]`."""
    scheme, sep, after = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        raise BadRequestTarget(
            "the request-target must be a path starting with / (or an http(s):// URL)"
        )
    slash, query = after.find(b"/"), after.find(b"?")
    cut = min((i for i in (slash, query) if i >= 0), default=len(after))
    authority = after[:cut]
    if not authority:
        raise BadRequestTarget("the request-target URL has no host")
    if b"@" in authority:
        raise BadRequestTarget("the request-target URL must not carry user:password@")
    if _BAD_QUERY.search(authority) is not None:
        raise BadRequestTarget("the request-target URL has an invalid host")
    rest = after[cut:]
    # An absolute URL with an empty path means the root (RFC 9112 section 3.2.1).
    return authority, rest if rest.startswith(b"/") else b"/" + rest
