"""The demo IdP over HTTPS on 127.0.0.1, driven by a plain OIDC client (httpx + PyJWT):
discovery, the login form, code + PKCE, tokens, userinfo, refresh, end_session."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import re
import secrets
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest

from services.demo_idp import DemoIdP, DemoIdPConfig, start
from shared.pki import issue_server, write_issued
from shared.rpc import StartupError
from tests.support.certs import make_ca
from tests.support.net import free_port

pytestmark = pytest.mark.integration

REDIRECT = "https://authenticate.localhost/oauth2/callback"
SIGNED_OUT = "https://authenticate.localhost/signed_out"
CLIENT = ("vallum", "demo-client-secret")


@dataclass
class Running:
    idp: DemoIdP
    config: DemoIdPConfig
    http: httpx.AsyncClient


def make_config(tmp_path: Path, port: int) -> DemoIdPConfig:
    ca = make_ca(tmp_path / "ca")
    paths = write_issued(issue_server(ca, ["localhost", "127.0.0.1"]), tmp_path, "idp")
    return DemoIdPConfig(
        issuer=f"https://127.0.0.1:{port}",
        cert_file=paths.cert,
        key_file=paths.key,
        client_id=CLIENT[0],
        client_secret=CLIENT[1],
        redirect_uris=(REDIRECT,),
        post_logout_redirect_uris=(SIGNED_OUT,),
        host="127.0.0.1",
        port=port,
    )


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Running]:
    config = make_config(tmp_path, free_port())
    idp = await start(config)
    context = ssl.create_default_context(cafile=str(tmp_path / "ca" / "ca.pem"))
    try:
        async with httpx.AsyncClient(verify=context, timeout=10.0) as http:
            yield Running(idp, config, http)
    finally:
        await idp.stop(5)


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


async def discovery(demo: Running) -> dict[str, Any]:
    response = await demo.http.get(f"{demo.config.issuer}/.well-known/openid-configuration")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def user_form(page: str, login: str) -> tuple[str, dict[str, str]]:
    """The action and fields of the login form for `login`, as a browser would submit."""
    for form in re.findall(r"<form\b.*?</form>", page, re.DOTALL):
        fields = {
            unescape(name): unescape(value)
            for name, value in re.findall(r'<input [^>]*name=(\w+) value="([^"]*)"', form)
        }
        if fields.get("login") == login:
            action = re.search(r'action="([^"]+)"', form)
            assert action is not None
            return unescape(action.group(1)), fields
    raise AssertionError(f"no login form for {login}: {page}")


async def sign_in(demo: Running, login: str = "alice") -> tuple[dict[str, Any], str]:
    """Authorization code + PKCE through the login page; the token response and nonce."""
    doc = await discovery(demo)
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(8), secrets.token_urlsafe(8)
    query = {
        "response_type": "code",
        "client_id": CLIENT[0],
        "redirect_uri": REDIRECT,
        "scope": "openid profile email offline_access",
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    page = await demo.http.get(f"{doc['authorization_endpoint']}?{urlencode(query)}")
    assert page.status_code == 200 and "DEVELOPMENT ONLY" in page.text
    action, fields = user_form(page.text, login)
    answer = await demo.http.post(f"{demo.config.issuer}{action}", data=fields)
    assert answer.status_code == 303, answer.text
    location = httpx.URL(answer.headers["location"])
    assert str(location).startswith(REDIRECT + "?")
    assert location.params["state"] == state and location.params["iss"] == demo.config.issuer
    form = {
        "grant_type": "authorization_code",
        "code": location.params["code"],
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    response = await demo.http.post(doc["token_endpoint"], data=form, auth=CLIENT)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    tokens: dict[str, Any] = response.json()
    return tokens, nonce


async def verify(demo: Running, id_token: str) -> dict[str, Any]:
    doc = await discovery(demo)
    keys = jwt.PyJWKSet.from_dict((await demo.http.get(doc["jwks_uri"])).json())
    key = next(k for k in keys.keys if k.key_id == jwt.get_unverified_header(id_token)["kid"])
    claims: dict[str, Any] = jwt.decode(
        id_token, key, algorithms=["ES256"], audience=CLIENT[0], issuer=demo.config.issuer
    )
    return claims


async def test_discovery_document(demo: Running) -> None:
    doc = await discovery(demo)
    issuer = demo.config.issuer
    assert doc["issuer"] == issuer
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["id_token_signing_alg_values_supported"] == ["ES256"]
    for name in ("authorization", "token", "userinfo", "end_session"):
        assert doc[f"{name}_endpoint"].startswith(issuer + "/")
    assert "DEVELOPMENT ONLY" in demo.idp.describe()


async def test_sign_in_refresh_and_sign_out(demo: Running) -> None:
    tokens, nonce = await sign_in(demo)
    claims = await verify(demo, tokens["id_token"])
    assert claims["nonce"] == nonce and claims["sub"] == "alice"
    assert claims["email"] == "alice@example.com" and claims["email_verified"] is True
    assert claims["groups"] == ["admins"] and claims["azp"] == CLIENT[0]

    doc = await discovery(demo)
    bearer = {"authorization": f"Bearer {tokens['access_token']}"}
    userinfo = await demo.http.get(doc["userinfo_endpoint"], headers=bearer)
    assert userinfo.json()["email"] == "alice@example.com"

    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    refreshed = await demo.http.post(doc["token_endpoint"], data=form, auth=CLIENT)
    assert refreshed.status_code == 200, refreshed.text
    renewed = refreshed.json()
    assert renewed["refresh_token"] != tokens["refresh_token"]
    assert (await verify(demo, renewed["id_token"]))["sub"] == "alice"

    query = {
        "id_token_hint": renewed["id_token"],
        "post_logout_redirect_uri": SIGNED_OUT,
        "state": "bye",
    }
    out = await demo.http.get(f"{doc['end_session_endpoint']}?{urlencode(query)}")
    assert out.status_code == 303 and out.headers["location"] == f"{SIGNED_OUT}?state=bye"
    form["refresh_token"] = renewed["refresh_token"]
    after = await demo.http.post(doc["token_endpoint"], data=form, auth=CLIENT)
    assert after.status_code == 400 and after.json()["error"] == "invalid_grant"


async def test_bob_is_staff(demo: Running) -> None:
    tokens, _ = await sign_in(demo, "bob")
    assert (await verify(demo, tokens["id_token"]))["groups"] == ["staff"]


async def test_errors_the_client_sees(demo: Running) -> None:
    doc = await discovery(demo)
    bad_redirect = {"client_id": CLIENT[0], "redirect_uri": "https://evil.example/cb"}
    page = await demo.http.get(f"{doc['authorization_endpoint']}?{urlencode(bad_redirect)}")
    assert page.status_code == 400 and "not registered" in page.text
    assert "location" not in page.headers

    no_pkce = {**bad_redirect, "redirect_uri": REDIRECT, "response_type": "code"}
    no_pkce |= {"scope": "openid", "state": "s"}
    answer = await demo.http.get(f"{doc['authorization_endpoint']}?{urlencode(no_pkce)}")
    location = httpx.URL(answer.headers["location"])
    assert location.params["error"] == "invalid_request" and location.params["state"] == "s"

    wrong_secret = await demo.http.post(
        doc["token_endpoint"], data={"grant_type": "refresh_token"}, auth=(CLIENT[0], "nope")
    )
    assert wrong_secret.status_code == 401 and wrong_secret.json()["error"] == "invalid_client"
    assert wrong_secret.headers["www-authenticate"].startswith("Basic")

    userinfo = await demo.http.get(doc["userinfo_endpoint"])
    assert userinfo.status_code == 401
    assert userinfo.headers["www-authenticate"] == 'Bearer error="invalid_token"'

    bad_logout = {"post_logout_redirect_uri": "https://evil.example/"}
    out = await demo.http.get(f"{doc['end_session_endpoint']}?{urlencode(bad_logout)}")
    assert out.status_code == 400 and "location" not in out.headers


async def test_start_logs_development_only_and_refuses_bad_setups(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = make_config(tmp_path, free_port())
    with caplog.at_level(logging.WARNING, logger="vallum.demo_idp"):
        idp = await start(config)
    try:
        assert any("DEVELOPMENT ONLY" in record.getMessage() for record in caplog.records)
        with pytest.raises(StartupError, match="cannot listen"):
            await start(config)  # the same port again
    finally:
        await idp.stop(5)
    missing = dataclasses.replace(config, cert_file=tmp_path / "none.pem")
    with pytest.raises(StartupError, match="does not exist"):
        await start(missing)
