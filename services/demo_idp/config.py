"""What the demo IdP serves: where it listens, its one client, its demo users.

DEVELOPMENT ONLY (see the package docstring). Plain dataclasses: the supervisor fills
them from Vallum's own config; nothing here reads files or the environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Shown on the login page and prefilled: these accounts protect nothing.
DEMO_PASSWORD = "demo"  # noqa: S105 - a published demo password, not a secret


@dataclass(frozen=True, slots=True)
class DemoUser:
    """One demo account; `login` is also the subject (`sub`)."""

    login: str
    email: str
    name: str
    groups: tuple[str, ...] = ()
    password: str = DEMO_PASSWORD

    def claims(self) -> dict[str, object]:
        """The identity claims in ID tokens and at userinfo (OIDC Core section 5.1)."""
        return {
            "sub": self.login,
            "email": self.email,
            "email_verified": True,
            "name": self.name,
            "preferred_username": self.login,
            "groups": list(self.groups),
        }


DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("alice", "alice@example.com", "Alice (demo admin)", ("admins",)),
    DemoUser("bob", "bob@example.com", "Bob (demo staff)", ("staff",)),
)


@dataclass(frozen=True, slots=True)
class DemoIdPConfig:
    """Everything the demo IdP needs; the supervisor issues `cert_file`/`key_file`."""

    issuer: str
    cert_file: Path
    key_file: Path
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 5446
    users: tuple[DemoUser, ...] = DEMO_USERS
    # Seconds. Short access tokens make the refresh path run during a demo.
    access_token_ttl: int = 300
    id_token_ttl: int = 300
    refresh_token_ttl: int = 8 * 3600
    code_ttl: int = 60
    login_page_ttl: int = 600
    # Requested scopes outside these are dropped (RFC 6749 section 3.3); openid is required.
    scopes: tuple[str, ...] = ("openid", "profile", "email", "groups", "offline_access")

    @property
    def issuer_url(self) -> str:
        """The issuer without a trailing slash: endpoint URLs are built from it."""
        return self.issuer.rstrip("/")

    def user(self, login: str) -> DemoUser | None:
        """The user named by login or by email address."""
        return next((u for u in self.users if login in (u.login, u.email)), None)
