"""The OIDC test provider (real oidc-provider under Node) does what Vallum's tests rely
on, shown by a plain OIDC client written here with httpx and PyJWT."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest

from tests.support.oidc import OIDCClient, Provider, follow, oidc_provider, sign_in

pytestmark = pytest.mark.integration

CLIENT = OIDCClient(
    client_id="harness-rp",
    client_secret="harness-secret",
    redirect_uris=("http://127.0.0.1:9/callback",),
    post_logout_redirect_uris=("http://127.0.0.1:9/signed-out",),
)
REDIRECT = CLIENT.redirect_uris[0]


@pytest.fixture
def op(tmp_path: Path) -> Iterator[Provider]:
    with oidc_provider(tmp_path, clients=[CLIENT], ttl={"access_token": 60}) as provider:
        yield provider


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorize_url(discovery: dict[str, Any], challenge: str, state: str, nonce: str) -> str:
    query = {
        "response_type": "code",
        "client_id": CLIENT.client_id,
        "redirect_uri": REDIRECT,
        "scope": "openid profile email offline_access",
        "state": state,
        "nonce": nonce,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    return f"{discovery['authorization_endpoint']}?{urlencode(query)}"


def token_request(discovery: dict[str, Any], **form: str) -> httpx.Response:
    return httpx.post(
        discovery["token_endpoint"], data=form, auth=(CLIENT.client_id, CLIENT.client_secret)
    )


def verify_id_token(op: Provider, token: str, nonce: str | None = None) -> dict[str, Any]:
    jwks = jwt.PyJWKClient(op.discovery()["jwks_uri"], cache_jwk_set=False)
    key = jwks.get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["RS256", "ES256"], audience=CLIENT.client_id, issuer=op.issuer
    )
    if nonce is not None:
        assert claims["nonce"] == nonce
    return claims


def sign_in_alice(op: Provider, http: httpx.Client) -> tuple[dict[str, Any], str]:
    """Code + PKCE flow up to the token response; returns it and the nonce sent."""
    discovery = op.discovery()
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    location = sign_in(
        http, authorize_url(discovery, challenge, state, nonce), REDIRECT, "alice", "alice-password"
    )
    assert location.params["state"] == state
    assert location.params["iss"] == op.issuer  # RFC 9207
    response = token_request(
        discovery,
        grant_type="authorization_code",
        code=location.params["code"],
        redirect_uri=REDIRECT,
        code_verifier=verifier,
    )
    assert response.status_code == 200, response.text
    tokens: dict[str, Any] = response.json()
    return tokens, nonce


def test_discovery_document(op: Provider) -> None:
    discovery = op.discovery()
    assert discovery["issuer"] == op.issuer
    assert discovery["code_challenge_methods_supported"] == ["S256"]
    assert {"openid", "profile", "email", "offline_access"} <= set(discovery["scopes_supported"])
    assert "client_secret_basic" in discovery["token_endpoint_auth_methods_supported"]
    assert discovery["end_session_endpoint"].startswith(op.issuer)
    assert "groups" in discovery["claims_supported"]


def test_code_flow_with_pkce_refresh_and_userinfo(op: Provider) -> None:
    with httpx.Client() as http:
        tokens, nonce = sign_in_alice(op, http)
    assert tokens["token_type"].lower() == "bearer"
    assert 0 < tokens["expires_in"] <= 60
    claims = verify_id_token(op, tokens["id_token"], nonce)
    assert claims["sub"] == "alice"
    assert claims["email"] == "alice@example.com"
    assert claims["groups"] == ["admins"]

    userinfo = httpx.get(
        op.discovery()["userinfo_endpoint"],
        headers={"authorization": f"Bearer {tokens['access_token']}"},
    ).json()
    assert userinfo["groups"] == ["admins"] and userinfo["sub"] == "alice"

    # Groups changed at the IdP show on the next refresh; the refresh token rotates.
    op.set_account("alice", groups=["admins", "auditors"])
    refreshed = token_request(
        op.discovery(), grant_type="refresh_token", refresh_token=tokens["refresh_token"]
    )
    assert refreshed.status_code == 200, refreshed.text
    renewed = refreshed.json()
    assert renewed["refresh_token"] != tokens["refresh_token"]
    assert verify_id_token(op, renewed["id_token"])["groups"] == ["admins", "auditors"]


def test_pkce_is_required_and_checked(op: Provider) -> None:
    discovery = op.discovery()
    query = {
        "response_type": "code",
        "client_id": CLIENT.client_id,
        "redirect_uri": REDIRECT,
        "scope": "openid",
    }
    response = httpx.get(f"{discovery['authorization_endpoint']}?{urlencode(query)}")
    location = httpx.URL(response.headers["location"])
    assert location.params["error"] == "invalid_request"

    with httpx.Client() as http:
        _, challenge = pkce_pair()
        location = sign_in(
            http, authorize_url(discovery, challenge, "s", "n"), REDIRECT, "bob", "bob-password"
        )
    wrong = token_request(
        discovery,
        grant_type="authorization_code",
        code=location.params["code"],
        redirect_uri=REDIRECT,
        code_verifier=pkce_pair()[0],
    )
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"


def test_wrong_password_shows_the_form_again(op: Provider) -> None:
    _, challenge = pkce_pair()
    with httpx.Client() as http, pytest.raises(AssertionError, match="401"):
        sign_in(http, authorize_url(op.discovery(), challenge, "s", "n"), REDIRECT, "alice", "nope")


def test_key_rotation_changes_the_kid(op: Provider) -> None:
    before = op.signing_kids()
    with httpx.Client() as http:
        first, _ = sign_in_alice(op, http)
    assert jwt.get_unverified_header(first["id_token"])["kid"] == before["RS256"]

    after = op.rotate()
    assert after["RS256"] != before["RS256"] and after["ES256"] != before["ES256"]
    published = {key["kid"] for key in httpx.get(op.discovery()["jwks_uri"]).json()["keys"]}
    assert {before["RS256"], after["RS256"], after["ES256"]} <= published

    # The session and refresh token made before the rotation still work.
    refreshed = token_request(
        op.discovery(), grant_type="refresh_token", refresh_token=first["refresh_token"]
    ).json()
    assert jwt.get_unverified_header(refreshed["id_token"])["kid"] == after["RS256"]
    assert verify_id_token(op, refreshed["id_token"])["sub"] == "alice"


def test_rp_initiated_logout_redirects_back(op: Provider) -> None:
    discovery = op.discovery()
    with httpx.Client() as http:
        tokens, _ = sign_in_alice(op, http)
        query = {
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": CLIENT.post_logout_redirect_uris[0],
            "state": "bye",
        }
        url = f"{discovery['end_session_endpoint']}?{urlencode(query)}"
        back = follow(http, url, CLIENT.post_logout_redirect_uris[0])
    assert back.params["state"] == "bye"


def test_a_client_can_ask_for_es256_id_tokens(tmp_path: Path) -> None:
    es256 = OIDCClient(
        client_id=CLIENT.client_id,
        client_secret=CLIENT.client_secret,
        redirect_uris=CLIENT.redirect_uris,
        id_token_signed_response_alg="ES256",
    )
    with oidc_provider(tmp_path, clients=[es256]) as op, httpx.Client() as http:
        tokens, nonce = sign_in_alice(op, http)
        assert jwt.get_unverified_header(tokens["id_token"])["alg"] == "ES256"
        assert verify_id_token(op, tokens["id_token"], nonce)["groups"] == ["admins"]
