"""The real third-party OpenID Provider (panva's `oidc-provider`, run by Node) for tests.

    with oidc_provider(tmp_path) as op:          # alice (admins) and bob (staff)
        op.issuer                                # http://127.0.0.1:<port>, plain http
        op.rotate(); op.set_account("alice", groups=["staff"])

The harness lives in tests/tools/oidc (provider.mjs, pinned package.json + lock);
tests/tools/install.sh runs `npm ci` there. Without node or the installed package a
test skips naming what is missing, or fails under CI=true, where install.sh has run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

from tests.support.procs import ROOT, Proc

HARNESS = ROOT / "tests" / "tools" / "oidc"
SCRIPT = HARNESS / "provider.mjs"
READY = "oidc-provider ready on "


@dataclass(frozen=True)
class OIDCClient:
    """A client registered at the provider (client_secret_basic, code + PKCE S256)."""

    client_id: str = "vallum"
    client_secret: str = "vallum-test-secret"
    redirect_uris: tuple[str, ...] = ("https://authenticate.localhost/oauth2/callback",)
    post_logout_redirect_uris: tuple[str, ...] = ("https://authenticate.localhost/signed_out",)
    id_token_signed_response_alg: str = "RS256"

    def as_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "redirect_uris": list(self.redirect_uris),
            "post_logout_redirect_uris": list(self.post_logout_redirect_uris),
            "id_token_signed_response_alg": self.id_token_signed_response_alg,
        }


# The accounts format of provider.mjs: login name -> password and claims.
DEFAULT_ACCOUNTS: Mapping[str, Mapping[str, Any]] = {
    "alice": {
        "password": "alice-password",
        "email": "alice@example.com",
        "name": "Alice",
        "groups": ["admins"],
    },
    "bob": {
        "password": "bob-password",
        "email": "bob@example.com",
        "name": "Bob",
        "groups": ["staff"],
    },
}


def harness_missing() -> str | None:
    """Why the harness cannot run here, or None when it can."""
    if shutil.which("node") is None:
        return "node is not installed (tests/tools/install.sh installs it)"
    if not (HARNESS / "node_modules" / "oidc-provider" / "package.json").is_file():
        return (
            "oidc-provider is not installed in tests/tools/oidc/node_modules "
            "(run: bash tests/tools/install.sh)"
        )
    return None


def require_harness() -> None:
    """Skip (or fail under CI=true, where nothing may be missing) without the harness."""
    reason = harness_missing()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and the OIDC test provider cannot run: {reason}")
    pytest.skip(reason)


@dataclass
class Provider:
    """A running oidc-provider: where it is, and its loopback-only admin endpoints."""

    url: str
    proc: Proc
    config_path: Path
    _http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=10.0))

    @property
    def issuer(self) -> str:
        return self.url

    def discovery(self) -> dict[str, Any]:
        response = self._http.get(f"{self.url}/.well-known/openid-configuration")
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document

    def health(self) -> dict[str, Any]:
        return self._admin("GET", "health")

    def signing_kids(self) -> dict[str, str]:
        """The kid that signs now, per algorithm."""
        kids: dict[str, str] = {}
        for key in self.health()["keys"]:
            kids.setdefault(key["alg"], key["kid"])
        return kids

    def rotate(self) -> dict[str, str]:
        """New ES256 and RS256 keys sign from now on (old ones stay in the JWKS)."""
        self._admin("POST", "rotate")
        return self.signing_kids()

    def set_account(self, name: str, **claims: Any) -> dict[str, Any]:
        """Change (or create) an account at the IdP, e.g. groups=[...]; returns its claims."""
        result: dict[str, Any] = self._admin("POST", f"accounts/{name}", claims)["claims"]
        return result

    def stop(self) -> int:
        self._http.close()
        return self.proc.stop()

    def _admin(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        response = self._http.request(method, f"{self.url}/__admin/{path}", json=body)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


@contextmanager
def oidc_provider(
    tmp_path: Path,
    *,
    clients: Sequence[OIDCClient] = (OIDCClient(),),
    accounts: Mapping[str, Mapping[str, Any]] = DEFAULT_ACCOUNTS,
    ttl: Mapping[str, int] | None = None,
    rotate_refresh_tokens: bool = True,
    port: int = 0,
) -> Iterator[Provider]:
    """Start `node provider.mjs` on a free loopback port (or on `port`, e.g. to start a
    provider again where a stopped one was: same issuer); stop it (by PID) on exit.

    ttl keys (seconds): access_token, id_token, refresh_token, authorization_code, session.
    """
    require_harness()
    config = {
        "clients": [client.as_json() for client in clients],
        "accounts": {name: dict(claims) for name, claims in accounts.items()},
        "ttl": dict(ttl or {}),
        "rotate_refresh_tokens": rotate_refresh_tokens,
    }
    config_path = tmp_path / "oidc-provider.json"
    config_path.write_text(json.dumps(config, indent=2))
    proc = Proc(
        ["node", str(SCRIPT), "--port", str(port), "--config", str(config_path)], cwd=HARNESS
    )
    try:
        line = proc.lines[proc.wait_for(READY, timeout=30)]
        provider = Provider(line.split(READY, 1)[1].strip(), proc, config_path)
    except BaseException:
        proc.stop()
        raise
    try:
        yield provider
    finally:
        provider.stop()


_FORM = re.compile(r"<form\b[^>]*>.*?</form>", re.IGNORECASE | re.DOTALL)
_ACTION = re.compile(r'\baction=(?:"([^"]*)"|([^\s>]+))', re.IGNORECASE)
_INPUT = re.compile(r"<input\b[^>]*>", re.IGNORECASE)
# HTML allows unquoted attribute values (the demo IdP uses them).
_ATTR = re.compile(r'\b(name|value)=(?:"([^"]*)"|([^\s">]+))', re.IGNORECASE)


def form_fields(page: str) -> tuple[str, dict[str, str]]:
    """The first form's action and the values its inputs carry as served."""
    form = _FORM.search(page)
    action = _ACTION.search(form.group(0)) if form else None
    if form is None or action is None:
        raise AssertionError(f"no form in the page: {page}")
    fields: dict[str, str] = {}
    for tag in _INPUT.findall(form.group(0)):
        attrs = {key.lower(): unescape(q or bare) for key, q, bare in _ATTR.findall(tag)}
        if "name" in attrs:
            fields[attrs["name"]] = attrs.get("value", "")
    return unescape(action.group(1) or action.group(2)), fields


def follow(
    http: httpx.Client, url: str, stop_at: str, fill: Mapping[str, str] | None = None
) -> httpx.URL:
    """Walk a browser's path: GET `url`, follow redirects and submit each form page
    (its own inputs, overridden by `fill`) until a redirect points at `stop_at`, which
    is not followed (it need not exist). Returns that Location, with its `code` and
    `state` (or `error`)."""
    response = http.get(url)
    for _ in range(10):
        location = response.headers.get("location")
        if response.is_redirect and location is not None:
            target = httpx.URL(urljoin(str(response.url), location))
            if str(target).startswith(stop_at):
                return target
            response = http.get(target)
            continue
        if response.status_code != 200:
            raise AssertionError(f"{response.status_code} from {response.url}: {response.text}")
        action, fields = form_fields(response.text)
        response = http.post(urljoin(str(response.url), action), data={**fields, **(fill or {})})
    raise AssertionError(f"too many redirects from {url}")


def sign_in(
    http: httpx.Client, authorize_url: str, redirect_uri: str, login: str, password: str
) -> httpx.URL:
    """The authorization request through the login form, up to the redirect_uri."""
    return follow(http, authorize_url, redirect_uri, {"login": login, "password": password})
