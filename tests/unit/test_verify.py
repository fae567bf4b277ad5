"""shared.verify: Vallum's own signed assertions verify; hostile tokens are refused with
the right code; the ASGI and WSGI middleware keep unverified requests from the app.

Pure: the JWKS is given as a document, time is a fake clock, the apps run in-process
through httpx's ASGI/WSGI transports (no sockets).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from shared.jwt import AssertionSigner, SigningKey, SigningKeys, identity_claims
from shared.verify import CODES, MemoryReplayCache, VerificationError, Verifier
from shared.verify.asgi import VerifyMiddleware as ASGIVerify
from shared.verify.asgi import is_exempt
from shared.verify.check import unverified_claims
from shared.verify.jwks import JWKSCache, check_url, max_age, url_for_issuer
from shared.verify.wsgi import VerifyMiddleware as WSGIVerify

HOST = "app.example.com"
NOW = 1_700_000_000.0
JTI = "jti-1"


@dataclass(frozen=True)
class User:
    user_id: str = "user-1"
    email: str = "alice@example.com"
    name: str = "Alice <b>Example</b>"
    groups: tuple[str, ...] = ("admins", "staff")
    claims: Mapping[str, object] = field(default_factory=dict)


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: object) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


@pytest.fixture(scope="module")
def keys() -> SigningKeys:
    return SigningKeys((SigningKey.from_private_key(ec.generate_private_key(ec.SECP256R1())),))


@pytest.fixture(scope="module")
def other() -> SigningKeys:
    return SigningKeys((SigningKey.from_private_key(ec.generate_private_key(ec.SECP256R1())),))


def sign(
    keys: SigningKeys, *, host: str = HOST, now: float = NOW, jti: str = JTI, **fmt: Any
) -> str:
    signer = AssertionSigner(keys.signer)
    template = signer.template(identity_claims(User(), host=host, session_id="sess-1", **fmt))
    return signer.sign(template, now, jti)


def forge(header: Mapping[str, Any], claims: Mapping[str, Any], signature: bytes = b"x") -> str:
    return f"{b64json(header)}.{b64json(claims)}.{b64(signature)}"


def verifier(jwks: Mapping[str, Any], **kw: Any) -> Verifier:
    kw.setdefault("clock", Clock())
    return Verifier(jwks=jwks, issuer=HOST, audience=HOST, **kw)


def refused(v: Verifier, token: str) -> str:
    with pytest.raises(VerificationError) as info:
        v.verify(token)
    assert info.value.code in CODES
    return info.value.code


def test_vallums_own_assertion_gives_the_identity(keys: SigningKeys) -> None:
    identity = verifier(keys.jwks()).verify(sign(keys))
    assert identity.user == "user-1"
    assert identity.email == "alice@example.com"
    assert identity.groups == ("admins", "staff")
    assert identity.name == "Alice <b>Example</b>"
    assert identity.session_id == "sess-1"
    assert identity.issuer == HOST and identity.audience == (HOST,)
    assert identity.issued_at == datetime.fromtimestamp(NOW, UTC)
    assert identity.expires_at == datetime.fromtimestamp(NOW + 300, UTC)
    assert identity.jwt_id == JTI
    assert identity.claims["sub"] == "user-1"
    with pytest.raises(TypeError):
        identity.claims["sub"] = "someone else"  # type: ignore[index]


def test_uri_issuer_format_and_lists_of_issuers(keys: SigningKeys) -> None:
    token = sign(keys, host=f"{HOST}:8443", issuer_format="uri")
    v = Verifier(
        jwks=keys.jwks(),
        issuer=[HOST, f"https://{HOST}:8443/"],
        audience=HOST,
        clock=Clock(),
    )
    assert v.verify(token).issuer == f"https://{HOST}:8443/"
    assert refused(verifier(keys.jwks()), token) == "wrong-issuer"


def test_rsa_and_eddsa_keys_when_allowed() -> None:
    for key, alg in (
        (rsa.generate_private_key(65537, 2048), "RS256"),
        (ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
    ):
        keys = SigningKeys((SigningKey.from_private_key(key),))
        assert verifier(keys.jwks(), algorithms=[alg]).verify(sign(keys)).user == "user-1"
        # Only the algorithms the app lists: ES256 by default.
        assert refused(verifier(keys.jwks()), sign(keys)) == "algorithm-not-allowed"


def test_headers_are_read_case_insensitively(keys: SigningKeys) -> None:
    v = verifier(keys.jwks())
    token = sign(keys)
    assert v.verify_headers({"X-Pomerium-JWT-Assertion": token}).user == "user-1"
    assert v.verify_headers({"x-pomerium-jwt-assertion": token}).user == "user-1"
    assert v.verify_headers(httpx.Headers({"X-POMERIUM-JWT-ASSERTION": token})).user == "user-1"
    with pytest.raises(VerificationError) as info:
        v.verify_headers({"Authorization": f"Bearer {token}"})
    assert info.value.code == "missing"


def test_signed_with_another_key(keys: SigningKeys, other: SigningKeys) -> None:
    # The other key's token names the other kid: not in this JWKS.
    assert refused(verifier(keys.jwks()), sign(other)) == "unknown-key"
    # Relabelled with this JWKS's kid, the signature is what fails.
    _, payload, signature = sign(other).split(".")
    relabelled = b64json({"alg": "ES256", "kid": keys.signer.kid, "typ": "JWT"})
    token = f"{relabelled}.{payload}.{signature}"
    assert refused(verifier(keys.jwks()), token) == "bad-signature"


def test_tampered_claims(keys: SigningKeys) -> None:
    header, payload, signature = sign(keys).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["groups"] = ["admins", "root"]
    assert refused(verifier(keys.jwks()), f"{header}.{b64json(claims)}.{signature}") == (
        "bad-signature"
    )


def test_alg_none_is_refused(keys: SigningKeys) -> None:
    claims = unverified_claims(sign(keys))
    for alg in ("none", "None", "NONE"):
        token = f"{b64json({'alg': alg, 'kid': keys.signer.kid})}.{b64json(claims)}."
        assert refused(verifier(keys.jwks()), token) == "algorithm-not-allowed"


def _hs256(keys: SigningKeys, secret: bytes) -> str:
    claims = unverified_claims(sign(keys))
    signing_input = f"{b64json({'alg': 'HS256', 'kid': keys.signer.kid})}.{b64json(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def test_hs256_signed_with_the_public_key_is_refused(keys: SigningKeys) -> None:
    """Algorithm confusion (RFC 8725 section 2.1): the public key as an HMAC secret."""
    public = keys.signer.private_key.public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk_json = json.dumps(dict(keys.signer.public_jwk)).encode()
    v = verifier(keys.jwks())
    for secret in (pem, jwk_json, json.dumps(keys.jwks()).encode()):
        assert refused(v, _hs256(keys, secret)) == "algorithm-not-allowed"


def test_hmac_and_none_cannot_be_allowed(keys: SigningKeys) -> None:
    for algorithms in (["HS256"], ["ES256", "none"], []):
        with pytest.raises(ValueError, match="algorithms"):
            verifier(keys.jwks(), algorithms=algorithms)


def test_a_key_used_for_another_algorithm(keys: SigningKeys) -> None:
    """An RS256 header naming an EC key's kid: refused before any signature check."""
    rsa_keys = SigningKeys((SigningKey.from_private_key(rsa.generate_private_key(65537, 2048)),))
    _, payload, signature = sign(rsa_keys).split(".")
    token = f"{b64json({'alg': 'RS256', 'kid': keys.signer.kid})}.{payload}.{signature}"
    v = verifier(keys.jwks(), algorithms=["ES256", "RS256"])
    assert refused(v, token) == "algorithm-not-allowed"


@pytest.mark.parametrize(
    ("offset", "code"),
    [
        (300 + 29.9, None),  # exp + leeway not reached yet
        (300 + 30, "expired"),  # RFC 7519 4.1.4: on or after exp (+ leeway)
        (10_000, "expired"),
        (-29.9, None),  # issued slightly in "the future": clock skew within leeway
        (-30.1, "not-yet-valid"),
    ],
)
def test_time_window_and_leeway(keys: SigningKeys, offset: float, code: str | None) -> None:
    v = verifier(keys.jwks(), clock=Clock(NOW + offset))
    if code is None:
        assert v.verify(sign(keys)).user == "user-1"
    else:
        assert refused(v, sign(keys)) == code


def test_zero_leeway(keys: SigningKeys) -> None:
    assert refused(verifier(keys.jwks(), leeway=0, clock=Clock(NOW + 300)), sign(keys)) == (
        "expired"
    )
    assert verifier(keys.jwks(), leeway=0, clock=Clock(NOW + 299.9)).verify(sign(keys))


def test_wrong_issuer_and_audience(keys: SigningKeys) -> None:
    token = sign(keys, host="other.example.com")
    assert refused(verifier(keys.jwks()), token) == "wrong-issuer"
    v = Verifier(jwks=keys.jwks(), issuer="other.example.com", audience=HOST, clock=Clock())
    assert refused(v, token) == "wrong-audience"


def test_issuer_and_audience_are_required(keys: SigningKeys) -> None:
    for kw in ({"issuer": None, "audience": HOST}, {"issuer": HOST, "audience": ""}):
        with pytest.raises(ValueError, match="required"):
            Verifier(jwks=keys.jwks(), **kw)


def test_exactly_one_key_source(keys: SigningKeys) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Verifier(issuer=HOST, audience=HOST)
    with pytest.raises(ValueError, match="exactly one"):
        Verifier(
            jwks=keys.jwks(),
            jwks_url=f"https://{HOST}/.well-known/pomerium/jwks.json",
            issuer=HOST,
            audience=HOST,
        )
    with pytest.raises(ValueError, match="trust_on_first_use"):
        Verifier(jwks=keys.jwks(), trust_on_first_use=True, issuer=HOST, audience=HOST)


def test_replayed_jti(keys: SigningKeys) -> None:
    clock = Clock()
    cache = MemoryReplayCache(clock=clock)
    v = verifier(keys.jwks(), replay_cache=cache, clock=clock)
    v.verify(sign(keys, jti="a"))
    assert refused(v, sign(keys, jti="a")) == "replayed"
    v.verify(sign(keys, jti="b"))
    # Without a jti a replay cannot be told apart.
    assert refused(v, sign(keys, jti="")) == "malformed"
    # A forged token does not get as far as the cache.
    assert refused(v, sign(keys, jti="c", host="other.example.com")) == "wrong-issuer"
    v.verify(sign(keys, jti="c"))


def test_a_malformed_token_does_not_use_up_its_jti(keys: SigningKeys) -> None:
    clock = Clock()
    v = verifier(keys.jwks(), replay_cache=MemoryReplayCache(clock=clock), clock=clock)
    signer = keys.signer
    claims = {"iss": HOST, "aud": HOST, "iat": NOW, "exp": NOW + 60, "jti": "d", "email": 3}
    signing_input = f"{b64json({'alg': 'ES256', 'kid': signer.kid})}.{b64json(claims)}"
    token = f"{signing_input}.{b64(signer.sign(signing_input.encode()))}"
    assert refused(v, token) == "malformed"
    v.verify(sign(keys, jti="d"))


def test_memory_replay_cache_forgets_and_is_bounded() -> None:
    clock = Clock(0)
    cache = MemoryReplayCache(max_entries=3, clock=clock)
    assert not cache.seen("a", 10) and cache.seen("a", 10)
    assert not cache.seen("b", 20) and not cache.seen("c", 30)
    assert len(cache) == 3
    assert not cache.seen("d", 40)  # full: the one closest to expiry ("a") goes
    assert len(cache) == 3 and not cache.seen("a", 50)
    clock.now = 35
    assert len(cache) == 2  # b, c expired; d and the new a remain
    assert cache.seen("d", 40)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not a token",
        "a.b",
        "a.b.c.d",
        "!!!.e30.",
        f"{b64(b'[1]')}.e30.",
        f"{b64json({'alg': 'ES256'})}.e30.",
        f"{b64json({'alg': 'ES256', 'kid': 7})}.e30.",
        "x" * 20_000,
        # Nested arrays deep enough to exhaust json's recursion, yet under MAX_TOKEN.
        f"{b64(b'[' * 11_000)}.e30.",
    ],
)
def test_malformed_strings(keys: SigningKeys, token: str) -> None:
    assert refused(verifier(keys.jwks()), token) in {"missing", "malformed"}


def test_valid_signature_over_bad_claims_is_malformed(keys: SigningKeys) -> None:
    signer = keys.signer
    for claims in (
        {"iss": HOST, "aud": HOST, "iat": NOW, "exp": "soon"},
        {"iss": HOST, "aud": HOST, "exp": NOW + 60},
        {"iss": HOST, "aud": HOST, "iat": NOW, "exp": NOW + 60, "groups": "a,b", "email": 3},
    ):
        signing_input = f"{b64json({'alg': 'ES256', 'kid': signer.kid})}.{b64json(claims)}"
        token = f"{signing_input}.{b64(signer.sign(signing_input.encode()))}"
        assert refused(verifier(keys.jwks()), token) == "malformed"


def test_unknown_kid_in_a_fixed_jwks(keys: SigningKeys) -> None:
    token = forge({"alg": "ES256", "kid": "made-up"}, unverified_claims(sign(keys)))
    assert refused(verifier(keys.jwks()), token) == "unknown-key"


def test_error_codes_are_checked() -> None:
    with pytest.raises(ValueError):
        VerificationError("nope")


# --- the JWKS rules (jwks.py) ---


def test_jwks_url_must_be_https() -> None:
    assert check_url("https://a.example/.well-known/pomerium/jwks.json")
    assert check_url("http://127.0.0.1:8000/jwks.json")
    assert check_url("http://localhost/jwks.json")
    for bad in ("http://a.example/jwks.json", "ftp://a.example/", "https:///x", "jwks.json"):
        with pytest.raises(ValueError, match="https"):
            check_url(bad)
    with pytest.raises(ValueError, match="https"):
        Verifier(jwks_url="http://a.example/jwks.json", issuer=HOST, audience=HOST)


def test_url_for_issuer() -> None:
    assert url_for_issuer(HOST) == f"https://{HOST}/.well-known/pomerium/jwks.json"
    assert url_for_issuer(f"https://{HOST}:8443/") == (
        f"https://{HOST}:8443/.well-known/pomerium/jwks.json"
    )
    for bad in ("", "evil.example/path", "user@host", "http://host/"):
        with pytest.raises(ValueError):
            url_for_issuer(bad)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, 300),
        ("max-age=60", 60),
        ("public, max-age=3600", 3600),
        ('max-age="120"', 120),
        ("max-age=999999999", 86_400),
        ("no-store", 0),
        ("no-cache, max-age=60", 0),
        ("s-maxage=10", 300),
        ("garbage", 300),
    ],
)
def test_cache_control(header: str | None, seconds: float) -> None:
    assert max_age(header) == seconds


def test_cache_refetch_rules(keys: SigningKeys) -> None:
    from shared.verify.check import KeySet

    cache = JWKSCache(min_refetch_interval=30)
    kid = keys.signer.kid
    assert cache.should_fetch(0, kid)
    cache.attempted(0)
    # Failed and nothing cached: not again within the interval.
    assert not cache.should_fetch(10, kid) and cache.should_fetch(30, kid)
    cache.attempted(30)
    cache.fetched(KeySet(keys.jwks()), 30, "max-age=60")
    assert not cache.should_fetch(40, kid)
    assert not cache.should_fetch(40, "unknown")  # rate limited
    assert cache.should_fetch(60, "unknown")  # the interval has passed
    assert cache.should_fetch(90, kid)  # stale
    assert cache.fetches == 2


def test_keys_read_before_a_refetch_are_not_handed_out_for_a_kid_they_lack(
    keys: SigningKeys, other: SigningKeys
) -> None:
    """The race that rotation under load found: one thread reads the cached keys, another
    stores a refetched set that holds the new kid (and so starts the rate limit); the
    first must not then decide "no fetch allowed" and verify with the older set."""
    from shared.verify.check import KeySet

    cache = JWKSCache(min_refetch_interval=30)
    old = KeySet(keys.jwks())
    cache.attempted(0)
    cache.fetched(old, 0, "max-age=60")
    new_kid = other.signer.kid
    # Another thread refetches now: the new set holds the new kid.
    cache.attempted(5)
    cache.fetched(KeySet({"keys": [*keys.jwks()["keys"], *other.jwks()["keys"]]}), 5, "max-age=60")
    assert not cache.holds(old, 6, new_kid)  # the set read earlier is not enough...
    assert not cache.should_fetch(6, new_kid)  # ...and what is cached now is
    assert cache.keys is not None and new_kid in cache.keys


# --- middleware, in-process ---


def _starlette() -> Starlette:
    async def whoami(request: Request) -> JSONResponse:
        identity = request.state.vallum_identity
        assert request.scope["vallum.identity"] is identity
        return JSONResponse({"user": identity.user, "groups": list(identity.groups)})

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/whoami", whoami), Route("/healthz", health)])


async def test_asgi_middleware(keys: SigningKeys) -> None:
    app = ASGIVerify(_starlette(), verifier(keys.jwks()), exempt_paths=["/healthz"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=f"https://{HOST}") as client:
        ok = await client.get("/whoami", headers={"X-Pomerium-JWT-Assertion": sign(keys)})
        assert ok.status_code == 200
        assert ok.json() == {"user": "user-1", "groups": ["admins", "staff"]}
        missing = await client.get("/whoami")
        assert missing.status_code == 401
        assert missing.json() == {"error": "unauthorized", "reason": "missing"}
        assert missing.headers["www-authenticate"] == "Pomerium"
        forged = await client.get(
            "/whoami", headers={"X-Pomerium-JWT-Assertion": sign(keys, host="other.example")}
        )
        assert forged.status_code == 401 and forged.json()["reason"] == "wrong-issuer"
        assert (await client.get("/healthz")).text == "ok"


async def test_asgi_on_error_answers_instead(keys: SigningKeys) -> None:
    seen: list[str] = []

    def on_error(error: VerificationError, scope: Any) -> Any:
        seen.append(error.code)
        return PlainTextResponse("go away", status_code=403)

    app = ASGIVerify(_starlette(), verifier(keys.jwks()), on_error=on_error)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=f"https://{HOST}") as client:
        response = await client.get("/whoami", headers={"X-Pomerium-JWT-Assertion": "x.y.z"})
    assert response.status_code == 403 and response.text == "go away"
    assert seen == ["malformed"]


async def _websocket(app: Any, headers: list[tuple[bytes, bytes]], **scope: Any) -> list[Any]:
    sent: list[Any] = []
    inbox = [{"type": "websocket.connect"}, {"type": "websocket.disconnect", "code": 1000}]

    async def receive() -> Any:
        return inbox.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "websocket", "path": "/ws", "headers": headers, **scope}, receive, send)
    return sent


async def test_asgi_websocket(keys: SigningKeys) -> None:
    called: list[Any] = []

    async def ws_app(scope: Any, receive: Any, send: Any) -> None:
        called.append(scope["state"]["vallum_identity"].user)
        await receive()
        await send({"type": "websocket.accept"})

    app = ASGIVerify(ws_app, verifier(keys.jwks()))
    denied = await _websocket(app, [])
    assert denied == [{"type": "websocket.close", "code": 1008, "reason": "missing"}]
    denied = await _websocket(app, [], extensions={"websocket.http.response": {}})
    assert denied[0]["type"] == "websocket.http.response.start" and denied[0]["status"] == 401
    assert json.loads(denied[1]["body"])["reason"] == "missing"
    assert called == []
    accepted = await _websocket(app, [(b"x-pomerium-jwt-assertion", sign(keys).encode())])
    assert accepted == [{"type": "websocket.accept"}] and called == ["user-1"]


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    identity = environ["vallum.identity"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"hello {identity.email}".encode()]


def test_wsgi_middleware(keys: SigningKeys) -> None:
    app = WSGIVerify(_wsgi_app, verifier(keys.jwks()), exempt_paths=["/static/"])
    with httpx.Client(transport=httpx.WSGITransport(app=app), base_url=f"https://{HOST}") as c:
        ok = c.get("/", headers={"x-pomerium-jwt-assertion": sign(keys)})
        assert ok.status_code == 200 and ok.text == "hello alice@example.com"
        bad = c.get("/", headers={"x-pomerium-jwt-assertion": sign(keys, now=NOW - 3600)})
        assert bad.status_code == 401
        assert bad.json() == {"error": "unauthorized", "reason": "expired"}
        assert bad.headers["www-authenticate"] == "Pomerium"
        # Exempt prefix: the app runs (and finds no identity, so it fails loudly here).
        with pytest.raises(KeyError):
            c.get("/static/app.css")
        assert c.get("/staticx").status_code == 401


def test_dot_segments_are_never_exempt() -> None:
    exempt = ["/static/", "/healthz"]
    assert is_exempt("/static/app.css", exempt) and is_exempt("/healthz", exempt)
    assert not is_exempt("/static/../admin", exempt)
    assert not is_exempt("/static/./x", exempt)
    assert not is_exempt("/static/..", exempt)
    assert not is_exempt("/anything", [])
    assert is_exempt("/static/..x/y", exempt)  # only whole segments are dot segments


def test_trust_on_first_use_checks_the_issuer_before_fetching(keys: SigningKeys) -> None:
    v = Verifier(trust_on_first_use=True, issuer=HOST, audience=HOST, clock=Clock())
    assert refused(v, sign(keys, host="evil.example")) == "wrong-issuer"
    assert v.jwks_url is None and v.fetches == 0
