"""OIDC discovery, plus the in-memory IdP (an httpx.MockTransport) the other OIDC unit
tests share. No sockets: every request the relying party makes lands in FakeIdP.handle."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from services.authenticate.oidc import (
    ClientSettings,
    Discovery,
    DiscoveryError,
    IdPError,
    IdPUnavailable,
    RelyingParty,
    StateCodec,
)
from services.authenticate.oidc.discovery import discovery_url

ISSUER = "https://idp.example.com"
CLIENT_ID = "vallum-client"
CLIENT_SECRET = "s3cret/with+odd chars"
SHARED_SECRET = bytes(range(32))
REDIRECT_URI = "https://authenticate.example.com/oauth2/callback"
NOW = 1_700_000_000.0

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SigningKey:
    def __init__(self, kid: str, alg: str) -> None:
        self.kid, self.alg = kid, alg
        if alg.startswith("ES"):
            self.private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = ec.generate_private_key(
                ec.SECP256R1()
            )
            jwk = ECAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            jwk = RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        self.jwk: dict[str, Any] = {**jwk, "kid": kid, "use": "sig", "alg": alg}


# Key generation (RSA especially) is slow; the same keys serve every test.
ES_KEY = SigningKey("es-1", "ES256")
RS_KEY = SigningKey("rs-1", "RS256")
ROTATED_KEY = SigningKey("es-2", "ES256")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class FakeIdP:
    """Discovery, JWKS, token and userinfo endpoints, answering from attributes that
    tests change; every request is recorded."""

    def __init__(self, issuer: str = ISSUER) -> None:
        self.issuer = issuer
        self.doc: dict[str, Any] = {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/authorize?tenant=t1",
            "token_endpoint": f"{issuer}/token",
            "jwks_uri": f"{issuer}/jwks",
            "userinfo_endpoint": f"{issuer}/userinfo",
            "end_session_endpoint": f"{issuer}/logout",
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": ["S256"],
        }
        self.published: list[SigningKey] = [ES_KEY, RS_KEY]
        self.requests: list[httpx.Request] = []
        self.token_answer: Handler = self._tokens
        self.userinfo_claims: dict[str, Any] = {"sub": "user-1", "groups": ["from-userinfo"]}
        self.overrides: dict[str, Handler] = {}
        self.nonce = "n-0"

    def paths(self) -> list[str]:
        return [request.url.path for request in self.requests]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path in self.overrides:
            answer = self.overrides[path](request)
            return await answer if isinstance(answer, Awaitable) else answer
        if path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=self.doc)
        if path == "/jwks":
            return httpx.Response(200, json={"keys": [key.jwk for key in self.published]})
        if path == "/token":
            answer = self.token_answer(request)
            return await answer if isinstance(answer, Awaitable) else answer
        if path == "/userinfo":
            return httpx.Response(200, json=self.userinfo_claims)
        return httpx.Response(404)

    def _tokens(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            json={
                "access_token": "at-1",
                "token_type": "Bearer",
                "id_token": self.id_token(nonce=self.nonce),
                "refresh_token": "rt-1",
                "expires_in": 3600,
                "scope": "openid profile email",
            },
        )

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))

    def claims(self, **overrides: Any) -> dict[str, Any]:
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": "user-1",
            "aud": CLIENT_ID,
            "exp": int(NOW) + 300,
            "iat": int(NOW) - 10,
            "nonce": "n-1",
            "email": "ada@example.com",
            "name": "Ada Lovelace",
            "groups": ["admins", "staff"],
        }
        claims.update(overrides)
        return {name: value for name, value in claims.items() if value is not None}

    def id_token(
        self, key: SigningKey = ES_KEY, headers: dict[str, Any] | None = None, **claims: Any
    ) -> str:
        return jwt.encode(
            self.claims(**claims),
            key.private,
            algorithm=key.alg,
            headers={"kid": key.kid, **(headers or {})},
        )


def hs256_with(secret: bytes, claims: dict[str, Any], kid: str) -> str:
    """The key-confusion forgery: HS256 with a public key's bytes as the HMAC secret."""
    header = b64url(json.dumps({"alg": "HS256", "kid": kid}).encode())
    payload = b64url(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(mac)}"


def relying_party(idp: FakeIdP, clock: Clock | None = None, **options: Any) -> RelyingParty:
    settings = ClientSettings(
        issuer=idp.issuer,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        request_params={"prompt": "login"},
    )
    return RelyingParty(
        settings, idp.http(), StateCodec(SHARED_SECRET), clock=clock or time.monotonic, **options
    )


# --- discovery ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("issuer", "url"),
    [
        ("https://idp.example.com", "https://idp.example.com/.well-known/openid-configuration"),
        ("https://idp.example.com/", "https://idp.example.com/.well-known/openid-configuration"),
        (
            "https://login.example.com/tenant/v2.0",
            "https://login.example.com/tenant/v2.0/.well-known/openid-configuration",
        ),
    ],
)
def test_discovery_url_follows_section_4(issuer: str, url: str) -> None:
    assert discovery_url(issuer) == url


async def test_discovery_reads_the_endpoints() -> None:
    idp = FakeIdP()
    metadata = await Discovery(idp.http(), ISSUER).metadata()
    assert metadata.token_endpoint == f"{ISSUER}/token"
    assert metadata.jwks_uri == f"{ISSUER}/jwks"
    assert metadata.end_session_endpoint == f"{ISSUER}/logout"
    assert metadata.id_token_signing_alg_values_supported == ("RS256", "ES256")


@pytest.mark.parametrize(
    ("change", "reason", "detail"),
    [
        ({"issuer": "https://evil.example.com"}, "issuer mismatch", "evil.example.com"),
        # Section 4.3: identical, so even a trailing slash is a mismatch.
        ({"issuer": ISSUER + "/"}, "issuer mismatch", "trailing"),
        ({"issuer": None}, "issuer mismatch", "None"),
        ({"token_endpoint": None}, "discovery document incomplete", "token_endpoint"),
        ({"jwks_uri": "http://idp.example.com/jwks"}, "discovery document malformed", "jwks_uri"),
        ({"id_token_signing_alg_values_supported": "RS256"}, "discovery document malformed", ""),
    ],
)
async def test_discovery_refuses_a_bad_document(
    change: dict[str, Any], reason: str, detail: str
) -> None:
    idp = FakeIdP()
    idp.doc.update(change)
    with pytest.raises(DiscoveryError) as caught:
        await Discovery(idp.http(), ISSUER).metadata()
    assert caught.value.reason == reason
    assert detail in caught.value.detail


async def test_discovery_defaults_follow_the_specs() -> None:
    idp = FakeIdP()
    for name in ("id_token_signing_alg_values_supported", "token_endpoint_auth_methods_supported"):
        del idp.doc[name]
    metadata = await Discovery(idp.http(), ISSUER).metadata()
    assert metadata.id_token_signing_alg_values_supported == ("RS256",)
    assert metadata.token_endpoint_auth_methods_supported == ("client_secret_basic",)


async def test_discovery_is_cached_for_its_ttl_and_then_refetched() -> None:
    idp, clock = FakeIdP(), Clock()
    discovery = Discovery(idp.http(), ISSUER, ttl=3600, clock=clock)
    await discovery.metadata()
    clock.now += 3599
    await discovery.metadata()
    assert len(idp.requests) == 1
    clock.now += 2
    await discovery.metadata()
    assert len(idp.requests) == 2


async def test_failed_refresh_serves_the_cached_document_and_retries_later() -> None:
    idp, clock = FakeIdP(), Clock()
    discovery = Discovery(idp.http(), ISSUER, ttl=60, retry_after=30, clock=clock)
    first = await discovery.metadata()
    idp.overrides["/.well-known/openid-configuration"] = lambda _: httpx.Response(503)
    clock.now += 61
    assert await discovery.metadata() is first
    assert await discovery.metadata() is first
    assert len(idp.requests) == 2  # the second call waits out retry_after
    del idp.overrides["/.well-known/openid-configuration"]
    clock.now += 31
    assert (await discovery.metadata()) is not first
    assert len(idp.requests) == 3


async def test_discovery_failure_without_a_cache_raises_and_the_next_call_retries() -> None:
    idp = FakeIdP()
    idp.overrides["/.well-known/openid-configuration"] = lambda _: httpx.Response(503)
    discovery = Discovery(idp.http(), ISSUER)
    with pytest.raises(IdPUnavailable):
        await discovery.metadata()
    idp.overrides["/.well-known/openid-configuration"] = lambda _: httpx.Response(404)
    with pytest.raises(IdPError) as caught:
        await discovery.metadata()
    assert not isinstance(caught.value, IdPUnavailable)
    del idp.overrides["/.well-known/openid-configuration"]
    assert (await discovery.metadata()).issuer == ISSUER
    assert len(idp.requests) == 3


async def test_discovery_does_not_follow_redirects() -> None:
    idp = FakeIdP()
    idp.overrides["/.well-known/openid-configuration"] = lambda _: httpx.Response(
        302, headers={"location": "https://evil.example.com/"}
    )
    with pytest.raises(DiscoveryError, match="HTTP 302"):
        await Discovery(idp.http(), ISSUER).metadata()
    assert len(idp.requests) == 1
