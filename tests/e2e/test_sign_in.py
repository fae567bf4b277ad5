"""Sign-in end to end against the real `oidc-provider` (npm): proxy → authenticate →
IdP → callback → cookie → policy → upstream with a verified identity; sign-out; and
the bad inputs, each with its page and no session."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt as pyjwt
import pytest

from shared.signed_urls import URLSigner
from tests.support.browser import Browser
from tests.support.net import free_port
from tests.support.oidc import OIDCClient, Provider, oidc_provider
from tests.support.stack import Upstream, Vallum, all_in_one, route_host, upstream

pytestmark = pytest.mark.e2e


class Env:
    def __init__(self, v: Vallum, op: Provider, app: Upstream, tmp: Path) -> None:
        self.v, self.op, self.app, self.tmp = v, op, app, tmp

    def url(self, name: str, path: str = "/") -> str:
        return f"{route_host(name, self.v.port)}{path}"

    def browser(self) -> Browser:
        return Browser(self.v.ca)

    def signer(self) -> URLSigner:
        secret = (self.v.data / "secrets" / "shared_secret").read_text().strip()
        return URLSigner(base64.b64decode(secret))


def vallum_config(
    port: int, op_issuer: str, app: Upstream
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    routes: list[dict[str, Any]] = [
        {
            "from": route_host("any", port),
            "to": app.url,
            "allow_any_authenticated_user": True,
            "pass_identity_headers": True,
        },
        {
            "from": route_host("admins", port),
            "to": app.url,
            "policy": {"allow": {"or": [{"groups": {"has": "admins"}}]}},
        },
    ]
    extra: dict[str, Any] = {
        "idp_provider_url": op_issuer,
        "idp_client_id": "vallum",
        "idp_client_secret": "vallum-test-secret",
    }
    return routes, extra


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("signin")
    port = free_port()
    auth = route_host("authenticate", port)
    client = OIDCClient(
        redirect_uris=(f"{auth}/oauth2/callback",),
        post_logout_redirect_uris=(f"{auth}/.pomerium/signed_out",),
    )
    with oidc_provider(tmp, clients=[client]) as op, upstream() as app:
        routes, extra = vallum_config(port, op.issuer, app)
        with all_in_one(tmp, routes, port, **extra) as v:
            yield Env(v, op, app, tmp)


def sign_in(env: Env, b: Browser, name: str = "any", path: str = "/echo", login: str = "alice"):  # type: ignore[no-untyped-def]
    return b.navigate(
        env.url(name, path),
        fill={"login": login, "password": "alice-password" if login == "alice" else "bob-password"},
    )


def test_browser_signs_in_and_the_app_gets_a_verified_identity(env: Env) -> None:
    b = env.browser()
    url, response = sign_in(env, b)
    assert response.status_code == 200, (url, response.text[:500])
    assert url == env.url("any", "/echo")
    headers = dict((k, v) for k, v in response.json()["headers"])
    token = headers["x-pomerium-jwt-assertion"]
    keys = b.request("GET", env.url("any", "/.well-known/pomerium/jwks.json")).json()
    key = next(k for k in keys["keys"] if k["kid"] == pyjwt.get_unverified_header(token)["kid"])
    claims = pyjwt.decode(
        token,
        pyjwt.PyJWK(key).key,
        algorithms=["ES256"],
        audience="any.localhost",
        issuer="any.localhost",
    )
    assert claims["email"] == "alice@example.com" and claims["groups"] == ["admins"]
    assert "cookie" not in headers or "_pomerium=" not in headers["cookie"]
    me = b.request("GET", env.url("any", "/.pomerium/user"), headers={"Accept": "application/json"})
    assert me.json()["email"] == "alice@example.com"
    # A second route host: one more round trip through authenticate, no second login
    # (the IdP remembers alice), and the group policy admits her.
    url, response = b.navigate(env.url("admins", "/echo"))
    assert response.status_code == 200 and url == env.url("admins", "/echo")
    b.close()


def test_bob_is_denied_by_group_policy(env: Env) -> None:
    b = env.browser()
    url, response = b.navigate(
        env.url("admins", "/echo"), fill={"login": "bob", "password": "bob-password"}
    )
    assert response.status_code == 403, (url, response.text[:300])
    assert "groups" in response.text.lower()
    b.close()


def test_api_client_gets_401_not_a_redirect(env: Env) -> None:
    b = env.browser()
    response = b.request("GET", env.url("any", "/echo"), headers={"Accept": "application/json"})
    assert response.status_code == 401
    assert response.json()["status"] == 401
    assert "sign_in_url" in response.headers["www-authenticate"]
    b.close()


def test_sign_out_ends_the_session_everywhere(env: Env) -> None:
    b = env.browser()
    _, response = sign_in(env, b)
    assert response.status_code == 200
    stolen_cookie = dict(b.cookies[urlsplit(env.url("any")).netloc])
    # Sign-out is a POST from the site itself; a cross-site POST is refused.
    evil = b.request(
        "POST", env.url("any", "/.pomerium/sign_out"), headers={"Origin": "https://evil.example"}
    )
    assert evil.status_code == 403
    out = b.request(
        "POST",
        env.url("any", "/.pomerium/sign_out"),
        headers={"Origin": env.url("any").rstrip("/")},
    )
    assert out.status_code == 303
    url, page = b.navigate(b.location(out, env.url("any")), fill={"logout": "yes"})
    assert "signed_out" in url or page.status_code == 200
    # The old cookie, replayed, is now signed out (authorize heard of the deletion).
    replay = env.browser()
    replay.cookies[urlsplit(env.url("any")).netloc] = stolen_cookie
    again = replay.request("GET", env.url("any", "/echo"), headers={"Accept": "application/json"})
    assert again.status_code == 401
    b.close()
    replay.close()


def callback_url(env: Env, b: Browser) -> str:
    """Sign in up to (not including) authenticate's callback; return that URL."""
    auth = route_host("authenticate", env.v.port)
    url, _ = b.navigate(
        env.url("any", "/echo"),
        fill={"login": "alice", "password": "alice-password"},
        stop_at=f"{auth}/oauth2/callback",
    )
    return url


def with_param(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return parts._replace(query=urlencode(query)).geturl()


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda url, b: with_param(url, state="s1.AAAA"), "sign-in-state-invalid"),
        (lambda url, b: with_param(url, state=""), "sign-in-state-invalid"),
        (lambda url, b: with_param(url, code="forged-code"), "sign-in-code-invalid"),
    ],
)
def test_bad_callbacks_get_a_page_and_no_session(env: Env, tamper, reason) -> None:  # type: ignore[no-untyped-def]
    b = env.browser()
    url = callback_url(env, b)
    response = b.request("GET", tamper(url, b), headers={"Accept": "application/json"})
    assert response.status_code in (400, 502), response.text
    assert response.json()["reasons"][0]["name"] == reason
    assert not any("_pomerium" in jar for host, jar in b.cookies.items() if "any.localhost" in host)
    b.close()


def test_missing_csrf_cookie_and_replayed_code_are_refused(env: Env) -> None:
    b = env.browser()
    url = callback_url(env, b)
    auth = urlsplit(route_host("authenticate", env.v.port)).netloc
    saved = dict(b.cookies.get(auth, {}))
    b.cookies[auth] = {}
    missing = b.request("GET", url, headers={"Accept": "application/json"})
    assert (
        missing.status_code == 400
        and missing.json()["reasons"][0]["name"] == "sign-in-state-invalid"
    )
    b.cookies[auth] = dict(saved)
    first = b.request("GET", url)
    assert first.status_code == 302  # the code works once
    b.cookies[auth] = dict(saved)
    replay = b.request("GET", url, headers={"Accept": "application/json"})
    assert (
        replay.status_code == 400 and replay.json()["reasons"][0]["name"] == "sign-in-code-invalid"
    )
    b.close()


def test_sign_in_links_must_be_signed_and_point_at_a_route(env: Env) -> None:
    b = env.browser()
    base = route_host("authenticate", env.v.port) + "/.pomerium/sign_in"
    unsigned = b.request(
        "GET",
        f"{base}?{urlencode({'pomerium_redirect_uri': env.url('any')})}",
        headers={"Accept": "application/json"},
    )
    assert unsigned.status_code == 400
    assert unsigned.json()["reasons"][0]["name"] == "sign-in-link-invalid"
    evil = env.signer().signed_url(base, "sign_in", "https://evil.example.com/", time.time())
    refused = b.request("GET", evil, headers={"Accept": "application/json"})
    assert refused.status_code == 400
    assert refused.json()["reasons"][0]["name"] == "sign-in-redirect-refused"
    b.close()


def test_hand_over_for_another_host_is_refused(env: Env) -> None:
    token = env.signer().seal_transfer(
        "some-session", int(time.time()) + 60, env.url("admins", "/"), time.time()
    )
    b = env.browser()
    response = b.request(
        "GET", env.url("any", "/.pomerium/callback") + "?" + urlencode({"pomerium_transfer": token})
    )
    assert response.status_code == 400
    assert not b.cookies.get(urlsplit(env.url("any")).netloc)
    b.close()
