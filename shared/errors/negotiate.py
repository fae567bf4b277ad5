"""Which form an error or sign-in answer takes: HTML for a browser, JSON otherwise.

Shared by the proxy (error pages, the sign-in redirect) and authenticate (its pages).
"""

from __future__ import annotations

import functools

# The media types an answer could be in; HTML is chosen only when named explicitly.
_HTML = frozenset({(b"text", b"html"), (b"application", b"xhtml+xml")})
_OFFERS = frozenset(
    {
        *_HTML,
        (b"application", b"json"),
        (b"text", b"plain"),
        (b"application", b"grpc-web-text"),
        (b"application", b"grpc-web+proto"),
        (b"application", b"grpc+proto"),
    }
)


@functools.lru_cache(maxsize=512)
def wants_html(accept: bytes | None) -> bool:
    """Whether to answer a browser (HTML page, sign-in redirect) rather than an API client.

    True when the Accept range ranked highest (by q, then specificity, then the client's
    order) among those matching HTML, JSON, plain text or gRPC names text/html or
    application/xhtml+xml itself. Every browser's navigation Accept does. Pomerium
    negotiates the same way but starts from text/html, so it also sends `*/*`, a missing
    Accept and an unparseable one to sign in; here those get JSON, as API clients (curl,
    SDKs) send exactly these. Callers treat gRPC requests (by Content-Type) first.
    Cached: browsers send a handful of distinct values, and parsing one costs ~10 us.
    """
    if not accept:
        return False
    ranges: list[tuple[float, int, int, tuple[bytes, bytes]]] = []
    for position, item in enumerate(accept.split(b",")):
        media, *params = item.split(b";")
        kind, slash, sub = media.strip().lower().partition(b"/")
        if not kind and not slash:
            continue  # an empty list element (RFC 9110 section 5.6.1)
        if not slash or not kind or not sub:
            return False
        quality = 1.0
        for param in params:
            key, _, raw = param.partition(b"=")
            if key.strip().lower() == b"q":
                try:
                    quality = float(raw.strip())
                except ValueError:
                    return False
        if quality > 0:
            specificity = (kind != b"*") + (sub != b"*")
            ranges.append((-quality, -specificity, position, (kind, sub)))
    ranges.sort()
    for _, _, _, (kind, sub) in ranges:
        if any(kind in (b"*", offer[0]) and sub in (b"*", offer[1]) for offer in _OFFERS):
            return (kind, sub) in _HTML
    return False
