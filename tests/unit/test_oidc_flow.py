"""The sign-in flow: PKCE, sealed state and CSRF, the authorization URL, the token
endpoint (code and refresh grants), userinfo, logout and the identity, against the fake IdP."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import ssl
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlsplit

import httpx
import pytest

from services.authenticate.oidc import (
    IdPError,
    IdPUnavailable,
    IdTokenError,
    State,
    StateCodec,
    StateError,
    check_csrf,
    csrf_cookie_name,
    identity_from,
    idp_ssl_context,
    new_http_client,
    pkce,
)
from services.authenticate.oidc.authrequest import authorization_url
from services.authenticate.oidc.state import MAX_REDIRECT_LENGTH, STATE_LIFETIME
from shared.config import parse_config
from tests.unit.test_oidc_discovery import (
    CLIENT_ID,
    CLIENT_SECRET,
    ISSUER,
    NOW,
    REDIRECT_URI,
    SHARED_SECRET,
    FakeIdP,
    relying_party,
)

RETURN_TO = "https://app.example.com/reports?q=1"

# --- PKCE (RFC 7636) ---------------------------------------------------------------


def test_pkce_challenge_matches_rfc_7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce.challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_new_verifiers_are_valid_and_distinct() -> None:
    verifiers = {pkce.new_verifier() for _ in range(50)}
    assert len(verifiers) == 50
    assert all(pkce.is_valid_verifier(v) and len(v) == 43 for v in verifiers)


@pytest.mark.parametrize("verifier", ["a" * 42, "a" * 129, "a" * 42 + "!", "a" * 42 + "="])
def test_invalid_verifiers_are_refused(verifier: str) -> None:
    with pytest.raises(ValueError, match="43 to 128"):
        pkce.challenge(verifier)


# --- state and CSRF ----------------------------------------------------------------


def sealed(redirect_to: str = RETURN_TO, now: float = NOW) -> tuple[State, str, str]:
    state, cookie = State.new(redirect_to, now)
    return state, StateCodec(SHARED_SECRET).seal_state(state), cookie


def test_state_round_trip() -> None:
    state, token, cookie = sealed()
    opened = StateCodec(SHARED_SECRET).open_state(token, NOW + 10)
    assert opened == state
    assert opened.redirect_to == RETURN_TO and opened.created_at == int(NOW)
    assert pkce.is_valid_verifier(opened.verifier)
    check_csrf(opened, cookie)
    # Nothing inside is readable from the token.
    assert state.nonce not in token and state.verifier not in token and "app.example" not in token


def flip(token: str, index: int) -> str:
    char = "A" if token[index] != "A" else "B"
    return token[:index] + char + token[index + 1 :]


TOKEN = sealed()[1]

STATE_FAILURES: list[tuple[str, str | None, bytes, float, str]] = [
    ("missing", None, SHARED_SECRET, NOW, "state missing"),
    ("empty", "", SHARED_SECRET, NOW, "state missing"),
    ("tampered body", flip(TOKEN, 20), SHARED_SECRET, NOW, "state tampered or foreign"),
    ("tampered tag", flip(TOKEN, len(TOKEN) - 2), SHARED_SECRET, NOW, "state tampered or foreign"),
    ("truncated", TOKEN[:10], SHARED_SECRET, NOW, "state tampered or foreign"),
    ("not base64", "s1.***", SHARED_SECRET, NOW, "state tampered or foreign"),
    ("other prefix", "v1." + TOKEN[3:], SHARED_SECRET, NOW, "state tampered or foreign"),
    ("too long", TOKEN + "A" * 5000, SHARED_SECRET, NOW, "state tampered or foreign"),
    ("foreign secret", TOKEN, bytes(32), NOW, "state tampered or foreign"),
    ("expired", TOKEN, SHARED_SECRET, NOW + STATE_LIFETIME, "state expired"),
]


@pytest.mark.parametrize(
    ("name", "token", "secret", "now", "reason"),
    STATE_FAILURES,
    ids=[case[0] for case in STATE_FAILURES],
)
def test_state_is_refused_with_its_reason(
    name: str, token: str | None, secret: bytes, now: float, reason: str
) -> None:
    with pytest.raises(StateError) as caught:
        StateCodec(secret).open_state(token, now)
    assert caught.value.reason == reason


def test_state_opens_until_just_before_it_expires() -> None:
    StateCodec(SHARED_SECRET).open_state(TOKEN, NOW + STATE_LIFETIME - 1)


def test_state_is_not_sealed_under_the_session_handle_key() -> None:
    from shared.sessions import HandleCodec, InvalidHandle

    handle = HandleCodec(SHARED_SECRET).seal("sid", int(NOW) + 60)
    with pytest.raises(StateError, match="tampered or foreign"):
        StateCodec(SHARED_SECRET).open_state("s1." + handle[3:], NOW)
    with pytest.raises(InvalidHandle):
        HandleCodec(SHARED_SECRET).open("v1." + TOKEN[3:], NOW)


@pytest.mark.parametrize(
    ("cookie", "reason"),
    [(None, "csrf cookie missing"), ("", "csrf cookie missing"), ("other", "csrf mismatch")],
)
def test_csrf_check(cookie: str | None, reason: str) -> None:
    state, _, _ = sealed()
    with pytest.raises(StateError) as caught:
        check_csrf(state, cookie)
    assert caught.value.reason == reason


def test_csrf_cookie_is_hashed_into_the_state_and_named_like_pomerium() -> None:
    state, _, cookie = sealed()
    assert cookie not in repr(state) and state.csrf_hash != cookie
    assert csrf_cookie_name("_pomerium") == "_pomerium_csrf"


def test_overlong_redirect_target_is_refused_when_sealing() -> None:
    with pytest.raises(ValueError, match="redirect target"):
        State.new("https://app.example.com/" + "a" * MAX_REDIRECT_LENGTH, NOW)


# --- the authorization request -----------------------------------------------------


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


def test_authorization_url_carries_every_protocol_parameter() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    url = authorization_url(
        "https://idp.example.com/authorize?tenant=t1&state=stale",
        client_id=CLIENT_ID,
        redirect_uri=REDIRECT_URI,
        scopes=("openid", "email"),
        state="st",
        nonce="nn",
        verifier=verifier,
        extra_params={"prompt": "login", "nonce": "attacker", "hd": "example.com"},
    )
    assert url.startswith("https://idp.example.com/authorize?")
    assert "scope=openid%20email" in url
    assert query(url) == {
        "tenant": ["t1"],
        "prompt": ["login"],
        "hd": ["example.com"],
        "response_type": ["code"],
        "client_id": [CLIENT_ID],
        "redirect_uri": [REDIRECT_URI],
        "scope": ["openid email"],
        "state": ["st"],
        "nonce": ["nn"],
        "code_challenge": ["E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"],
        "code_challenge_method": ["S256"],
    }


async def test_begin_then_complete_signs_the_user_in() -> None:
    idp = FakeIdP()
    rp = relying_party(idp)
    request = await rp.begin(redirect_uri=REDIRECT_URI, redirect_to=RETURN_TO, now=NOW)
    params = query(request.url)
    assert params["state"] == [request.state] and params["prompt"] == ["login"]
    assert params["scope"] == ["openid profile email offline_access"]
    idp.nonce = params["nonce"][0]

    done = await rp.complete(
        state=request.state,
        csrf_cookie=request.csrf_cookie,
        code="code-1",
        redirect_uri=REDIRECT_URI,
        now=NOW + 5,
    )
    assert done.redirect_to == RETURN_TO
    assert done.identity.user_id == "user-1" and done.identity.groups == ("admins", "staff")
    assert done.tokens.refresh_token == "rt-1" and done.tokens.expires_in == 3600

    (token_request,) = [r for r in idp.requests if r.url.path == "/token"]
    form = parse_qs(token_request.content.decode())
    assert form["grant_type"] == ["authorization_code"] and form["code"] == ["code-1"]
    assert form["redirect_uri"] == [REDIRECT_URI]
    # The verifier sent is the one whose challenge went out (RFC 7636 section 4.5).
    assert pkce.challenge(form["code_verifier"][0]) == params["code_challenge"][0]
    assert "client_secret" not in form
    scheme, encoded = token_request.headers["authorization"].split()
    client_id, secret = base64.b64decode(encoded).decode().split(":")
    assert scheme == "Basic" and unquote_plus(client_id) == CLIENT_ID
    assert unquote_plus(secret) == CLIENT_SECRET  # RFC 6749 2.3.1: form-encoded first


async def test_complete_checks_state_and_csrf_before_spending_the_code() -> None:
    idp = FakeIdP()
    rp = relying_party(idp)
    request = await rp.begin(redirect_uri=REDIRECT_URI, redirect_to=RETURN_TO, now=NOW)
    for state, cookie, reason in [
        (request.state, "stolen", "csrf mismatch"),
        (request.state, None, "csrf cookie missing"),
        (None, request.csrf_cookie, "state missing"),
    ]:
        with pytest.raises(StateError, match=reason):
            await rp.complete(
                state=state, csrf_cookie=cookie, code="c", redirect_uri=REDIRECT_URI, now=NOW
            )
    assert "/token" not in idp.paths()


async def test_complete_refuses_an_id_token_for_another_sign_in() -> None:
    idp = FakeIdP()  # its tokens carry nonce n-0, not the one begin() made
    rp = relying_party(idp)
    request = await rp.begin(redirect_uri=REDIRECT_URI, redirect_to=RETURN_TO, now=NOW)
    with pytest.raises(IdTokenError, match="wrong nonce"):
        await rp.complete(
            state=request.state,
            csrf_cookie=request.csrf_cookie,
            code="c",
            redirect_uri=REDIRECT_URI,
            now=NOW,
        )


async def test_complete_can_merge_userinfo() -> None:
    idp = FakeIdP()
    rp = relying_party(idp, use_userinfo=True)
    request = await rp.begin(redirect_uri=REDIRECT_URI, redirect_to=RETURN_TO, now=NOW)
    idp.nonce = query(request.url)["nonce"][0]
    done = await rp.complete(
        state=request.state,
        csrf_cookie=request.csrf_cookie,
        code="c",
        redirect_uri=REDIRECT_URI,
        now=NOW,
    )
    assert done.identity.groups == ("from-userinfo",)
    assert done.identity.claims["iss"] == ISSUER
    (info,) = [r for r in idp.requests if r.url.path == "/userinfo"]
    assert info.headers["authorization"] == "Bearer at-1"


# --- token endpoint errors, timeouts, refresh --------------------------------------


def oauth_error(status: int, error: str, description: str = "") -> httpx.Response:
    body = {"error": error, **({"error_description": description} if description else {})}
    return httpx.Response(status, json=body)


@pytest.mark.parametrize(
    ("answer", "error", "reason"),
    [
        (
            oauth_error(400, "invalid_grant", "code already used"),
            "invalid_grant",
            "authorization code invalid, expired or already used",
        ),
        (oauth_error(401, "invalid_client"), "invalid_client", "client authentication failed"),
        (oauth_error(400, "unsupported_grant_type"), "unsupported_grant_type", "refused"),
        (httpx.Response(400, text="<html>nope</html>"), None, "answered HTTP 400"),
        (httpx.Response(200, json={"token_type": "Bearer"}), None, "token response malformed"),
        (
            httpx.Response(200, json={"access_token": "at", "token_type": "Bearer"}),
            None,
            "has no id_token",
        ),
    ],
)
async def test_code_exchange_errors_name_the_reason(
    answer: httpx.Response, error: str | None, reason: str
) -> None:
    idp = FakeIdP()
    idp.token_answer = lambda _: answer
    with pytest.raises(IdPError) as caught:
        await relying_party(idp).exchange_code("code", "v" * 43, REDIRECT_URI)
    assert not isinstance(caught.value, IdPUnavailable)
    assert caught.value.error == error
    assert reason in caught.value.reason


async def test_invalid_grant_detail_keeps_the_description() -> None:
    idp = FakeIdP()
    idp.token_answer = lambda _: oauth_error(400, "invalid_grant", "code already used\n")
    with pytest.raises(IdPError) as caught:
        await relying_party(idp).exchange_code("code", "v" * 43, REDIRECT_URI)
    assert caught.value.detail == "invalid_grant: code already used?"


async def slow(_: httpx.Request) -> httpx.Response:
    await asyncio.sleep(5)
    return httpx.Response(200)


def raises(exc: Exception) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("handler", "reason"),
    [
        (slow, "token endpoint timed out"),
        (raises(httpx.ReadTimeout("read timed out")), "token endpoint timed out"),
        (raises(httpx.ConnectError("connection refused")), "token endpoint unreachable"),
        (lambda _: httpx.Response(503), "token endpoint failed"),
    ],
)
async def test_idp_faults_are_unavailable(handler: Any, reason: str) -> None:
    idp = FakeIdP()
    idp.token_answer = handler
    rp = relying_party(idp, deadline=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(IdPUnavailable) as caught:
        await rp.exchange_code("code", "v" * 43, REDIRECT_URI)
    assert caught.value.reason == reason
    assert loop.time() - started < 2


async def test_discovery_timeout_is_unavailable() -> None:
    idp = FakeIdP()
    idp.overrides["/.well-known/openid-configuration"] = slow
    with pytest.raises(IdPUnavailable, match="discovery timed out"):
        await relying_party(idp, deadline=0.1).refresh("rt")


async def test_oversized_answer_is_refused() -> None:
    idp = FakeIdP()
    idp.token_answer = lambda _: httpx.Response(200, content=b"x" * (2 << 20))
    with pytest.raises(IdPError, match="too large"):
        await relying_party(idp).exchange_code("code", "v" * 43, REDIRECT_URI)


async def test_refresh_sends_the_refresh_grant() -> None:
    idp = FakeIdP()
    idp.token_answer = lambda _: httpx.Response(
        200, json={"access_token": "at-2", "token_type": "bearer", "expires_in": "600"}
    )
    tokens = await relying_party(idp).refresh("rt-1")
    assert tokens.access_token == "at-2" and tokens.expires_in == 600
    assert tokens.refresh_token is None and tokens.id_token is None  # keep the old ones
    assert tokens.expires_at(NOW) == NOW + 600
    (request,) = [r for r in idp.requests if r.url.path == "/token"]
    assert parse_qs(request.content.decode()) == {
        "grant_type": ["refresh_token"],
        "refresh_token": ["rt-1"],
    }
    assert "at-2" not in repr(tokens)


async def test_refresh_invalid_grant_means_the_session_is_over() -> None:
    idp = FakeIdP()
    idp.token_answer = lambda _: oauth_error(400, "invalid_grant")
    with pytest.raises(IdPError) as caught:
        await relying_party(idp).refresh("rt-1")
    assert caught.value.error == "invalid_grant"
    assert caught.value.reason == "refresh token invalid, expired or revoked"


@pytest.mark.parametrize(
    ("methods", "basic"),
    [
        (["client_secret_post"], False),
        (["private_key_jwt", "client_secret_basic"], True),
        (None, True),
    ],
)
async def test_client_authentication_follows_discovery(
    methods: list[str] | None, basic: bool
) -> None:
    idp = FakeIdP()
    if methods is None:
        del idp.doc["token_endpoint_auth_methods_supported"]
    else:
        idp.doc["token_endpoint_auth_methods_supported"] = methods
    await relying_party(idp).exchange_code("code", "v" * 43, REDIRECT_URI)
    (request,) = [r for r in idp.requests if r.url.path == "/token"]
    form = parse_qs(request.content.decode())
    assert ("authorization" in request.headers) is basic
    assert ("client_secret" in form) is not basic
    if not basic:
        assert form["client_id"] == [CLIENT_ID] and form["client_secret"] == [CLIENT_SECRET]


async def test_no_supported_client_authentication_is_an_error() -> None:
    idp = FakeIdP()
    idp.doc["token_endpoint_auth_methods_supported"] = ["private_key_jwt"]
    with pytest.raises(IdPError, match="no usable client authentication"):
        await relying_party(idp).exchange_code("code", "v" * 43, REDIRECT_URI)
    assert "/token" not in idp.paths()


# --- userinfo, logout, identity ----------------------------------------------------


async def test_userinfo_about_another_user_is_refused() -> None:
    idp = FakeIdP()
    idp.userinfo_claims = {"sub": "user-2"}
    with pytest.raises(IdPError, match="sub mismatch"):
        await relying_party(idp).userinfo("at", expected_sub="user-1")


async def test_end_session_url_when_the_provider_has_one() -> None:
    url = await relying_party(FakeIdP()).end_session_url(
        "id.tok.en", "https://app.example.com/signed-out", "st"
    )
    assert url is not None and url.startswith(f"{ISSUER}/logout?")
    assert query(url) == {
        "client_id": [CLIENT_ID],
        "id_token_hint": ["id.tok.en"],
        "post_logout_redirect_uri": ["https://app.example.com/signed-out"],
        "state": ["st"],
    }


async def test_end_session_url_absent_without_an_endpoint() -> None:
    idp = FakeIdP()
    del idp.doc["end_session_endpoint"]
    assert await relying_party(idp).end_session_url("id.tok.en", None, None) is None


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        (
            {"sub": "u1", "email": "a@x", "name": "Ada", "groups": ["g1", "g2", "g1"]},
            ("u1", "a@x", "Ada", ("g1", "g2")),
        ),
        ({"sub": "u1", "groups": "Domain Admins"}, ("u1", "", "", ("Domain Admins",))),
        ({"sub": "u1", "groups": [1, True, None, {"x": 1}, "g"]}, ("u1", "", "", ("1", "g"))),
        (
            {"sub": "u1", "given_name": "Ada", "family_name": "Lovelace", "groups": None},
            ("u1", "", "Ada Lovelace", ()),
        ),
    ],
)
def test_identity_from_claims(claims: dict[str, Any], expected: tuple[Any, ...]) -> None:
    identity = identity_from(claims)
    assert (identity.user_id, identity.email, identity.name, identity.groups) == expected
    assert dict(identity.claims) == claims


def test_identity_needs_a_sub() -> None:
    with pytest.raises(IdTokenError, match="no sub"):
        identity_from({"email": "a@x"})


def test_state_dataclass_hides_secrets_from_repr() -> None:
    state, _, _ = sealed()
    shown = repr(state)
    assert state.verifier not in shown and state.nonce not in shown
    assert dataclasses.replace(state, redirect_to="x").redirect_to == "x"


# --- TLS towards the IdP -----------------------------------------------------------


def self_signed_ca() -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Demo IdP CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(2034, 1, 1, tzinfo=datetime.UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_idp_ca_is_trusted_in_addition_to_the_system_store() -> None:
    pem = b"# comment \xc3\xa9\n" + self_signed_ca()
    context = idp_ssl_context(pem)
    subjects = [str(cert.get("subject")) for cert in context.get_ca_certs()]
    assert any("'Demo IdP CA'" in subject for subject in subjects)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


async def test_new_http_client_uses_the_configured_ca() -> None:
    config = parse_config({"idp_ca": base64.b64encode(self_signed_ca()).decode()}, {}, "/")
    async with new_http_client(config) as client:
        assert client.follow_redirects is False
