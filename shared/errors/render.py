"""An ErrorPage as an HTTP response: HTML for browsers, JSON for API clients.

Every value on a page may come from outside (the Host the client sent, reason names
from authorize, a request id from a header), so all of it is escaped, and the HTML
carries a policy that forbids scripts, frames and every external fetch: even a missed
escape could not run anything.
"""

from __future__ import annotations

import json
from html import escape
from http import HTTPStatus
from typing import Final
from urllib.parse import urlsplit

from shared.errors.pages import ErrorPage

Headers = list[tuple[bytes, bytes]]

# Not in HTTPStatus: nginx's code for a bad client certificate, which Pomerium uses.
_PHRASES: Final = {495: "SSL Certificate Error"}

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)

_COMMON: Final[Headers] = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
_HTML_ONLY: Final[Headers] = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-frame-options", b"DENY"),
]


def phrase(status: int) -> str:
    if status in _PHRASES:
        return _PHRASES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _safe_link(url: str | None) -> str | None:
    # Links come from config, but an href is where an escaped value can still run code
    # (javascript:), so only http(s) and same-site paths are printed.
    if not url:
        return None
    if url.startswith("/") and not url.startswith("//"):
        return url
    return url if urlsplit(url).scheme in ("http", "https") else None


def as_json(page: ErrorPage) -> bytes:
    document: dict[str, object] = {
        "status": page.status,
        "error": phrase(page.status),
        "title": page.title,
        "detail": page.detail,
        "reasons": [{"name": n, "text": t} for n, t in page.reason_texts()],
        "advice": page.advice,
        "request_id": page.request_id,
    }
    for key, url in (("sign_in_url", page.sign_in_url), ("sign_out_url", page.sign_out_url)):
        link = _safe_link(url)
        if link:
            document[key] = link
    # ensure_ascii keeps the body 7-bit whatever the reasons hold.
    return json.dumps(document, separators=(",", ":")).encode()


_STYLE: Final = """
*{box-sizing:border-box}
body{margin:0;background:#f4f5f7;color:#1d2330;
font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:40rem;margin:2rem auto;padding:0 1rem}
.card{background:#fff;border-radius:10px;box-shadow:0 1px 3px rgba(0,0,0,.12);
padding:1.5rem 1.75rem;border-top:5px solid #b3261e}
.brand{font-weight:700;letter-spacing:.08em;text-transform:uppercase;font-size:.8rem;
color:#4a5568;margin:0 0 1rem}
.status{margin:0;color:#b3261e;font-weight:600;font-size:.9rem}
h1{font-size:1.5rem;line-height:1.25;margin:.25rem 0 .75rem}
h2{font-size:1rem;margin:1.25rem 0 .4rem}
ul{margin:0;padding-left:1.25rem}
li{margin:.2rem 0}
code{font:.85em ui-monospace,SFMono-Regular,Menlo,monospace;background:#eef0f3;
padding:.1em .35em;border-radius:4px;overflow-wrap:anywhere}
.name{color:#6b7280;white-space:nowrap}
.links{margin:1.25rem 0 0;display:flex;gap:.75rem;flex-wrap:wrap}
.links a{display:inline-block;padding:.45rem 1rem;border-radius:6px;background:#1d4ed8;
color:#fff;text-decoration:none;font-weight:600}
.links a.secondary{background:#e5e7eb;color:#1d2330}
footer{margin-top:1.5rem;padding-top:1rem;border-top:1px solid #e5e7eb;font-size:.9rem;
color:#4a5568}
p{overflow-wrap:anywhere}
"""


def as_html(page: ErrorPage) -> bytes:
    status = f"{page.status} {phrase(page.status)}"
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        '<meta name="robots" content="noindex">',
        f"<title>{escape(page.title)} · Vallum</title><style>{_STYLE}</style></head>",
        '<body><main><div class="card"><p class="brand">Vallum</p>',
        f'<p class="status">Error {escape(status)}</p><h1>{escape(page.title)}</h1>',
        f"<p>{escape(page.detail)}</p>",
    ]
    if page.reasons:
        parts.append("<h2>Why</h2><ul>")
        parts.extend(
            f'<li>{escape(text)} <code class="name">{escape(name)}</code></li>'
            for name, text in page.reason_texts()
        )
        parts.append("</ul>")
    if page.advice:
        parts.append(f"<h2>What you can do</h2><p>{escape(page.advice)}</p>")
    links = [
        (url, label, cls)
        for url, label, cls in (
            (_safe_link(page.sign_in_url), "Sign in", ""),
            (_safe_link(page.sign_out_url), "Sign out", ' class="secondary"'),
        )
        if url
    ]
    if links:
        parts.append('<p class="links">')
        parts.extend(f'<a href="{escape(url)}"{cls}>{label}</a>' for url, label, cls in links)
        parts.append("</p>")
    request_id = escape(page.request_id or "unknown")
    parts.append(
        f"<footer>Request ID: <code>{request_id}</code><br>Quote it when you ask for "
        "help: it finds this request in Vallum's logs.</footer></div></main></body></html>"
    )
    return "".join(parts).encode()


def render(page: ErrorPage, *, html: bool) -> tuple[int, Headers, bytes]:
    """Status, headers (lower-case names, as the protocol layer sends them) and body."""
    body = as_html(page) if html else as_json(page)
    kind = b"text/html; charset=utf-8" if html else b"application/json"
    headers: Headers = [(b"content-type", kind), (b"content-length", str(len(body)).encode())]
    headers += _COMMON
    if html:
        headers += _HTML_ONLY
    return page.status, headers, body
