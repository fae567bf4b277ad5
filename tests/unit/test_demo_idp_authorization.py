"""The demo IdP's protocol core: requests, codes, PKCE, tokens, logout (no sockets)."""

from __future__ import annotations

import base64
import itertools
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest

from services.demo_idp.authorization import (
    AuthorizationServer,
    OAuthError,
    RedirectError,
    RequestRejected,
    basic_credentials,
    pkce_matches,
    s256,
)
from services.demo_idp.config import DemoIdPConfig
from services.demo_idp.id_token import at_hash

ISSUER = "https://idp.localhost:5446"
REDIRECT = "https://authenticate.localhost/oauth2/callback"
VERIFIER = "v" * 43 + "-._~0123456789"


class Clock:
    """Starts at the real time: PyJWT checks iat and exp against it."""

    def __init__(self) -> None:
        self.t = float(int(time.time()))

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(clock: Clock) -> AuthorizationServer:
    config = DemoIdPConfig(
        issuer=ISSUER + "/",
        cert_file=Path("unused.pem"),
        key_file=Path("unused-key.pem"),
        client_id="vallum",
        client_secret="s3cret",
        redirect_uris=(REDIRECT,),
        post_logout_redirect_uris=("https://authenticate.localhost/signed_out",),
    )
    counter = itertools.count()
    return AuthorizationServer(config, now=clock, token=lambda: f"t{next(counter)}")


def params(**overrides: str) -> dict[str, str]:
    base = {
        "response_type": "code",
        "client_id": "vallum",
        "redirect_uri": REDIRECT,
        "scope": "openid email profile offline_access unknown",
        "state": "st",
        "nonce": "nn",
        "code_challenge": s256(VERIFIER),
        "code_challenge_method": "S256",
    }
    return {**base, **overrides}


def code_for(server: AuthorizationServer, login: str = "alice") -> str:
    request_id = server.hold(server.check_request(params()))
    location = server.log_in(request_id, login, "demo")
    assert location is not None
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["st"] and query["iss"] == [ISSUER]
    return query["code"][0]


def exchange(server: AuthorizationServer, code: str, **overrides: str) -> dict[str, Any]:
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT}
    return server.exchange_code({**form, "code_verifier": VERIFIER, **overrides}).as_json()


def claims_of(server: AuthorizationServer, id_token: str) -> dict[str, Any]:
    key = jwt.PyJWK(server.signer.jwks()["keys"][0])
    result: dict[str, Any] = jwt.decode(
        id_token, key, algorithms=["ES256"], audience="vallum", issuer=ISSUER, leeway=60
    )
    return result


def test_pkce_s256_known_answer() -> None:
    # RFC 7636 appendix B.
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    assert pkce_matches(verifier, s256(verifier))
    assert not pkce_matches(verifier[:-1] + "l", s256(verifier))
    assert not pkce_matches("short", s256("short"))


def test_basic_credentials_are_form_decoded() -> None:
    header = "Basic " + base64.b64encode(b"my%20client:p%3Ass+w").decode()
    assert basic_credentials(header) == ("my client", "p:ss w")
    assert basic_credentials("Bearer x") is None
    assert basic_credentials("Basic !!!") is None
    assert basic_credentials(None) is None


@pytest.mark.parametrize(
    "bad",
    [{"client_id": "other"}, {"redirect_uri": REDIRECT + "/"}, {"redirect_uri": ""}],
)
def test_unknown_client_or_redirect_uri_never_redirects(
    server: AuthorizationServer, bad: dict[str, str]
) -> None:
    with pytest.raises(RequestRejected):
        server.check_request(params(**bad))


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "email"}, "invalid_scope"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": ""}, "invalid_request"),
    ],
)
def test_other_request_errors_go_back_to_the_client(
    server: AuthorizationServer, bad: dict[str, str], error: str
) -> None:
    with pytest.raises(RedirectError) as caught:
        server.check_request(params(**bad))
    query = parse_qs(urlsplit(caught.value.location).query)
    assert query["error"] == [error] and query["state"] == ["st"]


def test_unknown_scopes_are_dropped(server: AuthorizationServer) -> None:
    request = server.check_request(params())
    assert request.scope == ("openid", "email", "profile", "offline_access")


def test_wrong_password_gives_no_code(server: AuthorizationServer) -> None:
    request_id = server.hold(server.check_request(params()))
    assert server.log_in(request_id, "alice", "wrong") is None
    assert server.log_in(request_id, "mallory", "demo") is None
    assert server.log_in(request_id, "alice@example.com", "demo") is not None
    with pytest.raises(RequestRejected):  # the login page is single-use
        server.log_in(request_id, "alice", "demo")


def test_login_page_expires(server: AuthorizationServer, clock: Clock) -> None:
    request_id = server.hold(server.check_request(params()))
    clock.t += server.config.login_page_ttl
    with pytest.raises(RequestRejected, match="expired"):
        server.log_in(request_id, "alice", "demo")


def test_code_exchange_issues_a_signed_id_token(server: AuthorizationServer, clock: Clock) -> None:
    tokens = exchange(server, code_for(server))
    claims = claims_of(server, tokens["id_token"])
    assert claims["sub"] == "alice" and claims["azp"] == "vallum"
    assert claims["email"] == "alice@example.com" and claims["email_verified"] is True
    assert claims["groups"] == ["admins"] and claims["nonce"] == "nn"
    assert claims["exp"] - claims["iat"] == server.config.id_token_ttl
    assert claims["at_hash"] == at_hash(tokens["access_token"])
    assert tokens["scope"] == "openid email profile offline_access"
    assert server.userinfo(tokens["access_token"])["groups"] == ["admins"]


def test_code_is_single_use_and_a_replay_revokes(server: AuthorizationServer) -> None:
    code = code_for(server)
    tokens = exchange(server, code)
    with pytest.raises(OAuthError, match="already used"):
        exchange(server, code)
    with pytest.raises(OAuthError, match="invalid_token"):
        server.userinfo(tokens["access_token"])


def test_code_expires(server: AuthorizationServer, clock: Clock) -> None:
    code = code_for(server)
    clock.t += server.config.code_ttl
    with pytest.raises(OAuthError, match="invalid_grant"):
        exchange(server, code)


@pytest.mark.parametrize(
    "bad",
    [{"code_verifier": "w" * 43}, {"code_verifier": ""}, {"redirect_uri": REDIRECT + "?x=1"}],
)
def test_code_exchange_checks_pkce_and_redirect_uri(
    server: AuthorizationServer, bad: dict[str, str]
) -> None:
    with pytest.raises(OAuthError) as caught:
        exchange(server, code_for(server), **bad)
    assert caught.value.error == "invalid_grant"


def test_client_authentication(server: AuthorizationServer) -> None:
    good = "Basic " + base64.b64encode(b"vallum:s3cret").decode()
    server.authenticate_client(good, {})
    server.authenticate_client(None, {"client_id": "vallum", "client_secret": "s3cret"})
    for header, form in [
        (None, {}),
        ("Basic " + base64.b64encode(b"vallum:nope").decode(), {}),
        (None, {"client_id": "other", "client_secret": "s3cret"}),
    ]:
        with pytest.raises(OAuthError) as caught:
            server.authenticate_client(header, form)
        assert caught.value.error == "invalid_client" and caught.value.status == 401
    with pytest.raises(OAuthError, match="invalid_request"):
        server.authenticate_client(good, {"client_id": "other"})


def test_refresh_rotates_and_a_replay_ends_the_sign_in(
    server: AuthorizationServer, clock: Clock
) -> None:
    first = exchange(server, code_for(server))
    clock.t += 10
    second = server.refresh({"refresh_token": first["refresh_token"]}).as_json()
    claims = claims_of(server, second["id_token"])
    assert "nonce" not in claims and claims["auth_time"] == int(clock.t - 10)
    assert second["refresh_token"] != first["refresh_token"]
    with pytest.raises(OAuthError, match="already used"):
        server.refresh({"refresh_token": first["refresh_token"]})
    with pytest.raises(OAuthError, match="revoked"):
        server.refresh({"refresh_token": second["refresh_token"]})


def test_access_and_refresh_tokens_expire(server: AuthorizationServer, clock: Clock) -> None:
    tokens = exchange(server, code_for(server))
    clock.t += server.config.access_token_ttl
    with pytest.raises(OAuthError, match="invalid_token"):
        server.userinfo(tokens["access_token"])
    clock.t += server.config.refresh_token_ttl
    with pytest.raises(OAuthError, match="invalid_grant"):
        server.refresh({"refresh_token": tokens["refresh_token"]})


def test_end_session_revokes_and_redirects_only_to_registered_uris(
    server: AuthorizationServer,
) -> None:
    tokens = exchange(server, code_for(server))
    target = "https://authenticate.localhost/signed_out"
    with pytest.raises(RequestRejected):
        server.end_session({"post_logout_redirect_uri": "https://evil.example/"})
    with pytest.raises(RequestRejected):
        server.end_session({"id_token_hint": "not.a.token"})
    location = server.end_session(
        {"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": target, "state": "x"}
    )
    assert location == f"{target}?state=x"
    with pytest.raises(OAuthError):
        server.refresh({"refresh_token": tokens["refresh_token"]})
    assert server.end_session({}) is None
