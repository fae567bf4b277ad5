"""A page that shows what Vallum told the app: the identity assertion's claims and
the request headers. DEVELOPMENT ONLY, for `make run`.

The claims are shown as decoded, not verified here: an app that trusts them must
verify the assertion against the route host's JWKS (see the README, "Identity to
the upstream").
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route


def _claims(token: str) -> dict[str, Any]:
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


async def page(request: Request) -> HTMLResponse:
    claims = _claims(request.headers.get("x-pomerium-jwt-assertion", ""))
    who = claims.get("email") or "nobody (no identity header)"
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
        for k, v in sorted(request.headers.items())
        if k != "x-pomerium-jwt-assertion"
    )
    claim_rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v))}</td></tr>"
        for k, v in claims.items()
    )
    body = (
        "<!doctype html><meta charset=utf-8><title>Vallum demo app</title>"
        "<body style='font:16px system-ui;max-width:48rem;margin:2rem auto;padding:0 1rem'>"
        "<p style='background:#fde68a;padding:.5rem'>Demo app: DEVELOPMENT ONLY</p>"
        f"<h1>Hello, {html.escape(str(who))}</h1>"
        "<p><a href='/.pomerium/'>Your Vallum session</a></p>"
        f"<h2>Identity assertion (decoded, not verified here)</h2><table>{claim_rows}</table>"
        f"<h2>Request headers</h2><table>{rows}</table>"
    )
    return HTMLResponse(body)


app = Starlette(routes=[Route("/{path:path}", page)])
