"""Vallum's built-in demo OpenID Connect provider — DEVELOPMENT ONLY.

It lets a newcomer sign in within a minute of `make run`, with no outside service:
a small OIDC provider (code flow with PKCE S256, refresh tokens, userinfo, JWKS,
RP-initiated logout) with demo users whose passwords are shown on its login page.
Anyone who can reach it can sign in as any demo user, its signing key lives in memory
and all state dies with the process. Never enable it where anything real is protected:
point Vallum at a real identity provider instead.

config.py says what it serves; authorization.py is the protocol (pure); id_token.py
signs; pages.py is the HTML; app.py the endpoints; service.py runs it over HTTPS.
"""

from services.demo_idp.config import DEMO_PASSWORD, DEMO_USERS, DemoIdPConfig, DemoUser
from services.demo_idp.service import DemoIdP, start

__all__ = ["DEMO_PASSWORD", "DEMO_USERS", "DemoIdP", "DemoIdPConfig", "DemoUser", "start"]
