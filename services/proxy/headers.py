"""Which headers go upstream and which come back: pure functions on the per-request path.

Headers are `(name, value)` byte pairs exactly as httptools delivers them; incoming
names keep the case they arrived with, and the names this module adds are lower case.

Rules, and why:

- Hop-by-hop headers (RFC 9110 section 7.6.1) and every name the `Connection` header
  lists are dropped, except `Host` and `Content-Length`, which a client could otherwise
  name to make the upstream see a different host or frame the body differently.
- Every incoming `X-Pomerium-*` header is dropped, whatever its case: nothing from
  outside may look like Vallum speaking. The decision's headers are added afterwards.
- With `xff_num_trusted_hops` 0 nothing in front of Vallum is trusted, so incoming
  `X-Forwarded-*` and `Forwarded` are dropped and `X-Forwarded-For` is just the peer.
  With N > 0 the incoming chain is kept and the peer appended (Envoy's and Pomerium's
  `use_remote_address` behaviour). `skip_xff_append` leaves the chain as it came, so
  with 0 trusted hops it means no X-Forwarded-For at all.
- `X-Forwarded-Proto` and `X-Forwarded-Host` always say what Vallum saw, because that
  scheme and Host are what policy was evaluated against.
- A message with `Transfer-Encoding` loses its `Content-Length` (RFC 9112 section 6.3:
  a proxy must remove it), so the two can never disagree downstream of Vallum.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Sequence
from collections.abc import Set as AbstractSet

from shared.errors.negotiate import wants_html

Headers = list[tuple[bytes, bytes]]

# RFC 9110 section 7.6.1, plus Proxy-Connection (a pre-standard alias still sent).
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

# Names a Connection header may not remove: see the module docstring.
_NOT_NOMINABLE = frozenset({b"host", b"content-length"})

_NOTHING: frozenset[bytes] = frozenset()
_PLAIN_CONNECTION = frozenset(
    {b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade", b"Upgrade"}
)

# Set by Vallum itself: never taken from set_headers, never kept from the client.
_OWN = frozenset({b"host", b"content-length", *HOP_BY_HOP})

_PROTECTED_PREFIX = b"x-pomerium-"
_FORWARDED_PREFIX = b"x-forwarded-"
_XFF = b"x-forwarded-for"
# Rebuilt or restated by Vallum even behind trusted hops (see the module docstring).
_FORWARDED_OWN = frozenset({_XFF, b"x-forwarded-proto", b"x-forwarded-host"})
# Incoming names dropped by prefix: only Vallum speaks as Pomerium, and with no trusted
# hops nobody in front of Vallum may speak about forwarding either.
_TRUSTED_PREFIXES: tuple[bytes, ...] = (_PROTECTED_PREFIX,)
_UNTRUSTED_PREFIXES: tuple[bytes, ...] = (_PROTECTED_PREFIX, _FORWARDED_PREFIX, b"forwarded")


def _encode(pairs: Sequence[tuple[str, str]]) -> tuple[Headers, set[bytes]]:
    """The pairs as lower-case byte names and UTF-8 values, and the set of their names."""
    out: Headers = []
    names: set[bytes] = set()
    for name, value in pairs:
        key = name.lower().encode()
        # Host, framing and hop-by-hop headers are Vallum's to set: a configured or
        # decided header cannot change which host or which body the other side sees.
        if key in _OWN:
            continue
        # CR, LF and NUL would end or corrupt the header line (header injection).
        # Substring tests: a regular expression costs ~6 us on a 1 kB JWT, these ~0.2 us.
        if "\r" in value or "\n" in value or "\x00" in value:
            value = value.replace("\r", " ").replace("\n", " ").replace("\x00", " ")
        out.append((key, value.encode()))
        names.add(key)
    return out, names


@functools.lru_cache(maxsize=1024)
def _encode_fixed(pairs: tuple[tuple[str, str], ...]) -> tuple[Headers, frozenset[bytes]]:
    """_encode of a route's own headers (set_response_headers), once per route."""
    out, names = _encode(pairs)
    return out, frozenset(names)


def header_value(
    headers: Sequence[tuple[bytes, bytes]], name: bytes, keys: list[bytes] | None = None
) -> bytes | None:
    """Every field line named `name` (lower case) joined by `, ` (RFC 9110 section 5.3).

    `keys` are the lower-case names of `headers`, when the caller has them already.
    Not for Set-Cookie, whose lines cannot be combined.
    """
    if keys is None:
        keys = [key.lower() for key, _ in headers]
    if name not in keys:
        return None
    found = [value.strip() for value in _values(keys, headers, name)]
    if not found:
        return None
    return found[0] if len(found) == 1 else b", ".join(found)


def _parse_ip(entry: bytes) -> str | None:
    """An X-Forwarded-For element as a canonical address, or None when malformed."""
    text = entry.decode("latin-1")
    if text.startswith("["):
        # [v6] or [v6]:port
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        # v4:port, as some load balancers write it
        text = text.partition(":")[0]
    # inet_pton rather than ipaddress: the same answer at a twentieth of the cost.
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return socket.inet_ntop(family, socket.inet_pton(family, text))
        except (OSError, ValueError):
            continue
    return None


def client_address(peer_ip: str, xff: bytes | None, trusted_hops: int) -> str:
    """The address policy and logs should treat as the client's.

    Envoy's `xff_num_trusted_hops` with `use_remote_address` (Pomerium's setting): with
    0, the peer; with N > 0, the Nth X-Forwarded-For element from the right, or the peer
    when there are fewer than N. Elements are counted by position, malformed ones too,
    so an element a trusted hop wrote can never be skipped in favour of one the client
    wrote; if the chosen element is malformed the peer is used.
    """
    if trusted_hops <= 0 or not xff:
        return peer_ip
    entries = [item for item in map(bytes.strip, xff.split(b",")) if item]
    if len(entries) < trusted_hops:
        return peer_ip
    return _parse_ip(entries[-trusted_hops]) or peer_ip


def _values(keys: list[bytes], headers: Sequence[tuple[bytes, bytes]], key: bytes) -> list[bytes]:
    """The values of every line named `key`; list.count/index scan in C, not per header."""
    found: list[bytes] = []
    at = -1
    for _ in range(keys.count(key)):
        at = keys.index(key, at + 1)
        found.append(headers[at][1])
    return found


def _nominated(keys: list[bytes], headers: Sequence[tuple[bytes, bytes]]) -> AbstractSet[bytes]:
    """The names the Connection header lists, which are hop-by-hop for this message."""
    nominated: set[bytes] = set()
    for value in _values(keys, headers, b"connection"):
        # Nearly every Connection header says only this, and it names nothing that is
        # not already dropped as hop-by-hop.
        if value not in _PLAIN_CONNECTION:
            # RFC 9110 section 5.6.1: a list; empty elements are allowed and ignored.
            nominated.update(item.strip().lower() for item in value.split(b","))
    return nominated - _NOT_NOMINABLE if nominated else _NOTHING


def upstream_request_headers(
    incoming: Sequence[tuple[bytes, bytes]],
    *,
    peer_ip: str,
    scheme: str,
    host: bytes,
    trusted_hops: int,
    set_headers: Sequence[tuple[str, str]],
    remove: frozenset[bytes],
    host_header: bytes | None,
    upgrade: bytes | None,
    skip_xff_append: bool = False,
    keys: list[bytes] | None = None,
) -> Headers:
    """The headers to send upstream.

    `host` is the Host the request arrived with (the one policy matched); `host_header`
    replaces it upstream when the route rewrites it. `set_headers` are the decision's
    headers (identity assertion, claim headers, the route's expanded set_request_headers)
    and replace same-named incoming ones; `remove` (lower case) is the route's
    remove_request_headers. `upgrade` is the Upgrade value of an allowed websocket.
    Several X-Forwarded-For lines are combined in order; give client_address the same
    combination (header_value) so the address policy sees matches the chain forwarded.
    `keys` are the lower-case names of `incoming`, when the caller has them already.
    """
    if keys is None:
        keys = [name.lower() for name, _ in incoming]
    added, replaced = _encode(set_headers)
    # One set lookup and one prefix test per header: this runs for every request, and
    # every further test per header adds about a microsecond to a typical request.
    drop = _OWN | replaced | _nominated(keys, incoming)
    if remove:
        drop |= remove
    if trusted_hops == 0:
        prefixes = _UNTRUSTED_PREFIXES
        chain: list[bytes] = []
    else:
        prefixes = _TRUSTED_PREFIXES
        drop |= _FORWARDED_OWN
        chain = _values(keys, incoming, _XFF)

    out: Headers = [(b"host", host_header if host_header is not None else host)]
    out += [
        pair
        for key, pair in zip(keys, incoming, strict=False)
        if key not in drop and not key.startswith(prefixes)
    ]
    if b"transfer-encoding" not in keys:
        out += [(b"content-length", value) for value in _values(keys, incoming, b"content-length")]
    out += added
    xff = _forwarded_for(chain, peer_ip, trusted_hops, skip_xff_append)
    if xff is not None and _XFF not in replaced:
        out.append((_XFF, xff))
    if b"x-forwarded-proto" not in replaced:
        out.append((b"x-forwarded-proto", scheme.encode()))
    if b"x-forwarded-host" not in replaced:
        out.append((b"x-forwarded-host", host))
    if upgrade is not None:
        out.append((b"connection", b"upgrade"))
        out.append((b"upgrade", upgrade))
    return out


def _forwarded_for(
    chain: list[bytes], peer_ip: str, trusted_hops: int, skip_append: bool
) -> bytes | None:
    parts = [item.strip() for item in chain] if trusted_hops else []
    incoming = b", ".join(part for part in parts if part)
    if skip_append:
        return incoming or None
    peer = peer_ip.encode()
    return incoming + b", " + peer if incoming else peer


def downstream_response_headers(
    upstream_headers: Sequence[tuple[bytes, bytes]],
    *,
    set_headers: Sequence[tuple[str, str]],
    upgrade: bool = False,
    keys: list[bytes] | None = None,
) -> Headers:
    """The headers to send back to the client.

    `set_headers` (the route's set_response_headers) replace same-named upstream
    headers. Repeated headers such as Set-Cookie pass through line by line, never
    merged. With `upgrade` (the upstream answered 101 to an allowed upgrade) the
    upstream's Upgrade header is kept and `Connection: upgrade` sent with it.
    `keys` are the lower-case names of `upstream_headers`, when the caller has them.
    """
    if keys is None:
        keys = [name.lower() for name, _ in upstream_headers]
    added, replaced = (
        _encode_fixed(set_headers) if isinstance(set_headers, tuple) else _encode(set_headers)
    )
    drop = HOP_BY_HOP | replaced | _nominated(keys, upstream_headers)
    if b"transfer-encoding" in keys:
        drop |= {b"content-length"}
    if upgrade:
        drop -= {b"upgrade"}
    out = [pair for key, pair in zip(keys, upstream_headers, strict=False) if key not in drop]
    out += added
    if upgrade:
        out.append((b"connection", b"upgrade"))
    return out


__all__ = [
    "HOP_BY_HOP",
    "client_address",
    "downstream_response_headers",
    "header_value",
    "upstream_request_headers",
    "wants_html",
]
