"""HTML of the demo IdP: the login page, the signed-out page, the error page.

DEVELOPMENT ONLY, and every page says so in a banner. The login page lists the demo
users with their password shown and prefilled: they protect nothing. Pure code.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from services.demo_idp.config import DemoUser

BANNER = (
    "DEVELOPMENT ONLY: Vallum's built-in demo identity provider. Anyone can sign in "
    "as any demo user. Configure a real OpenID Connect provider before real use."
)

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
.banner{background:#b00020;color:#fff;padding:.8em 1.2em;font-weight:600}
main{max-width:34em;margin:2em auto;padding:0 1em}
.user{background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:1em;margin:1em 0}
.user h2{margin:0 0 .2em;font-size:1.1em}.muted{color:#5a6372;font-size:.9em}
label{display:block;margin:.6em 0 .2em}input{font:inherit;padding:.3em;width:14em}
button{font:inherit;margin-top:.8em;padding:.4em 1.2em;background:#1f5fbf;color:#fff;
border:0;border-radius:4px;cursor:pointer}.error{color:#b00020;font-weight:600}
code{background:#eef0f3;padding:0 .3em}
"""


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · Vallum demo IdP</title><style>{_STYLE}</style></head>"
        f"<body><div class=banner role=alert>{escape(BANNER)}</div><main>{body}</main>"
        "</body></html>\n"
    )


def login_page(
    action: str, request_id: str, client_id: str, users: Sequence[DemoUser], error: str = ""
) -> str:
    """One form per demo user; the password is shown and prefilled."""
    cards = []
    for user in users:
        groups = ", ".join(user.groups) or "(none)"
        cards.append(
            f'<form class=user method=post action="{escape(action)}">'
            f"<h2>{escape(user.name)}</h2>"
            f"<div class=muted>{escape(user.email)} · groups: {escape(groups)}</div>"
            f'<input type=hidden name=request_id value="{escape(request_id)}">'
            f'<input type=hidden name=login value="{escape(user.login)}">'
            f"<label>Password (demo: <code>{escape(user.password)}</code>)</label>"
            f'<input type=password name=password value="{escape(user.password)}">'
            f"<br><button type=submit>Sign in as {escape(user.login)}</button></form>"
        )
    failure = f"<p class=error>{escape(error)}</p>" if error else ""
    return _page(
        "Sign in",
        f"<h1>Sign in to {escape(client_id)}</h1>{failure}"
        "<p>Pick a demo user. The passwords are shown because this is a demo.</p>" + "".join(cards),
    )


def signed_out_page() -> str:
    return _page("Signed out", "<h1>Signed out</h1><p>You are signed out of the demo IdP.</p>")


def error_page(message: str) -> str:
    return _page("Error", f"<h1>Sign-in cannot continue</h1><p class=error>{escape(message)}</p>")
