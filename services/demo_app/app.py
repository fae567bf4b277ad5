"""The "verify" page of `make run`: what Vallum told the app, and whether it checks out.
DEVELOPMENT ONLY.

It shows the request headers, verifies `X-Pomerium-JWT-Assertion` with
shared.verify.Verifier against the JWKS of the route host it was reached on
(X-Forwarded-Host, else Host), and shows the verified identity, or why the assertion
was refused. It only verifies for the route hosts it was given (those headers are the
client's to choose; fetching keys from any host named there would let anyone point
the app at their own JWKS).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from shared.jwt.claims import ASSERTION_HEADER, split_host
from shared.verify import Identity, VerificationError, Verifier

ASSERTION = ASSERTION_HEADER.lower()

_STYLE = (
    "body{font:16px system-ui;max-width:52rem;margin:2rem auto;padding:0 1rem}"
    "th{text-align:left;padding-right:1rem;vertical-align:top}td{word-break:break-all}"
    ".ok{background:#bbf7d0;padding:.5rem}.bad{background:#fecaca;padding:.5rem}"
)


def _decoded(token: str) -> dict[str, Any]:
    """The claims as the token states them, NOT verified (shown when verification fails)."""
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _table(rows: list[tuple[str, str]]) -> str:
    cells = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
        for name, value in rows
    )
    return f"<table>{cells}</table>"


def _identity_rows(identity: Identity) -> list[tuple[str, str]]:
    return [
        ("user", identity.user),
        ("email", identity.email),
        ("groups", ", ".join(identity.groups)),
        ("name", identity.name),
        ("session id", identity.session_id),
        ("issued at", identity.issued_at.isoformat()),
        ("expires at", identity.expires_at.isoformat()),
        ("issuer", identity.issuer),
        ("audience", ", ".join(identity.audience)),
    ]


def create_app(verifiers: Mapping[str, Verifier]) -> Starlette:
    """The demo app; `verifiers` maps each route host name to the Verifier for it."""

    async def page(request: Request) -> HTMLResponse:
        token = request.headers.get(ASSERTION, "").strip()
        # Vallum rewrites Host to the upstream's (as Pomerium does) and names the route
        # host in X-Forwarded-Host. A client going around Vallum can forge either, but
        # only to pick among the configured hosts, whose verifiers check iss and aud.
        forwarded = request.headers.get("x-forwarded-host", "").split(",")[0].strip()
        host = split_host(forwarded or request.headers.get("host", ""))[0]
        verifier = verifiers.get(host)
        identity: Identity | None = None
        if verifier is None:
            verdict = (
                "<p id=verdict class=bad>The identity assertion was NOT checked: "
                f"<code>{html.escape(host)}</code> is not a route host of this demo.</p>"
            )
        else:
            try:
                identity = await verifier.averify(token)
                verdict = (
                    "<p id=verdict class=ok>The identity assertion checked out: signed by "
                    f"Vallum's key for <code>{html.escape(host)}</code>, unexpired, "
                    "and meant for this app.</p>"
                )
            except VerificationError as error:
                verdict = (
                    "<p id=verdict class=bad>The identity assertion did NOT check out: "
                    f"<code>{html.escape(error.code)}</code> ({html.escape(error.detail)}). "
                    "A real app must refuse this request.</p>"
                )
        if identity is not None:
            who = identity.email or identity.user or "an anonymous visitor"
            details = f"<h2>Verified identity</h2>{_table(_identity_rows(identity))}"
            claims = identity.claims
            claims_title = "Claims (verified)"
        else:
            who = "nobody (no verified identity)"
            details = ""
            claims = _decoded(token)
            claims_title = "Claims (decoded, NOT verified: do not trust them)"
        claim_rows = [(str(k), json.dumps(v, ensure_ascii=False)) for k, v in claims.items()]
        header_rows = sorted(request.headers.items())
        body = (
            "<!doctype html><meta charset=utf-8><title>Vallum demo app</title>"
            f"<style>{_STYLE}</style>"
            "<p style='background:#fde68a;padding:.5rem'>Demo app: DEVELOPMENT ONLY</p>"
            f"<h1>Hello, {html.escape(who)}</h1>{verdict}"
            "<p><a href='/.pomerium/'>Your Vallum session</a></p>"
            f"{details}<h2>{html.escape(claims_title)}</h2>{_table(claim_rows)}"
            f"<h2>Request headers</h2>{_table(header_rows)}"
        )
        return HTMLResponse(body, headers={"Cache-Control": "no-store"})

    return Starlette(routes=[Route("/{path:path}", page)])
