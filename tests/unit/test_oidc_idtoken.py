"""ID token validation (OIDC Core 3.1.3.7) and JWKS key rotation, against the fake IdP."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from services.authenticate.oidc import IdTokenError
from tests.unit.test_oidc_discovery import (
    CLIENT_ID,
    ES_KEY,
    ISSUER,
    NOW,
    ROTATED_KEY,
    RS_KEY,
    Clock,
    FakeIdP,
    b64url,
    hs256_with,
    relying_party,
)

RSA_PUBLIC_PEM = RS_KEY.private.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


def swap_signature(idp: FakeIdP) -> str:
    token = idp.id_token()
    other = idp.id_token(sub="someone-else")
    return token.rsplit(".", 1)[0] + "." + other.rsplit(".", 1)[1]


def unsigned(claims: dict[str, Any]) -> str:
    header = b64url(json.dumps({"alg": "none", "kid": ES_KEY.kid}).encode())
    return f"{header}.{b64url(json.dumps(claims).encode())}."


def no_kid_two_ec_keys(idp: FakeIdP) -> str:
    idp.published = [ES_KEY, ROTATED_KEY]
    return jwt.encode(idp.claims(), ES_KEY.private, algorithm="ES256")


GOOD: list[tuple[str, Callable[[FakeIdP], str]]] = [
    ("ES256", lambda idp: idp.id_token(ES_KEY)),
    ("RS256", lambda idp: idp.id_token(RS_KEY)),
    ("aud list with azp", lambda idp: idp.id_token(aud=[CLIENT_ID, "api"], azp=CLIENT_ID)),
    ("expired within leeway", lambda idp: idp.id_token(exp=int(NOW) - 59)),
    ("iat ahead within leeway", lambda idp: idp.id_token(iat=int(NOW) + 59)),
]


@pytest.mark.parametrize(("name", "make"), GOOD, ids=[name for name, _ in GOOD])
async def test_good_id_tokens_are_accepted(name: str, make: Callable[[FakeIdP], str]) -> None:
    idp = FakeIdP()
    claims = await relying_party(idp).verify_id_token(make(idp), nonce="n-1", now=NOW)
    assert claims["sub"] == "user-1"
    assert claims["email"] == "ada@example.com"


BAD: list[tuple[str, Callable[[FakeIdP], str], str]] = [
    ("bad signature", swap_signature, "bad signature"),
    ("wrong audience", lambda idp: idp.id_token(aud="another-client"), "wrong audience"),
    ("aud list without us", lambda idp: idp.id_token(aud=["a", "b"]), "wrong audience"),
    ("azp mismatch", lambda idp: idp.id_token(azp="another-client"), "azp mismatch"),
    ("several aud, no azp", lambda idp: idp.id_token(aud=[CLIENT_ID, "api"]), "azp missing"),
    ("wrong nonce", lambda idp: idp.id_token(nonce="n-2"), "wrong nonce"),
    ("no nonce", lambda idp: idp.id_token(nonce=None), "wrong nonce"),
    ("expired", lambda idp: idp.id_token(exp=int(NOW) - 61), "expired"),
    ("no exp", lambda idp: idp.id_token(exp=None), "malformed"),
    ("iat in future", lambda idp: idp.id_token(iat=int(NOW) + 120), "issued in the future"),
    ("nbf in future", lambda idp: idp.id_token(nbf=int(NOW) + 120), "not yet valid"),
    ("wrong issuer", lambda idp: idp.id_token(iss="https://evil.example.com"), "wrong issuer"),
    ("issuer with slash", lambda idp: idp.id_token(iss=ISSUER + "/"), "wrong issuer"),
    ("no sub", lambda idp: idp.id_token(sub=None), "malformed"),
    (
        "alg none",
        lambda idp: unsigned(idp.claims()),
        "alg none refused",
    ),
    (
        "HS256 with the RSA public key as secret",
        lambda idp: hs256_with(RSA_PUBLIC_PEM, idp.claims(), RS_KEY.kid),
        "alg not allowed",
    ),
    (
        "key of another type than alg",
        lambda idp: idp.id_token(ES_KEY, headers={"kid": RS_KEY.kid}),
        "key does not match alg",
    ),
    ("no kid with several fitting keys", no_kid_two_ec_keys, "unknown key"),
    ("not a JWS", lambda idp: "not-a-token", "malformed"),
    ("a JWE", lambda idp: "a.b.c.d.e", "malformed"),
    ("crit header", lambda idp: idp.id_token(headers={"crit": ["exp"]}), "malformed"),
]


@pytest.mark.parametrize(("name", "make", "reason"), BAD, ids=[name for name, _, _ in BAD])
async def test_bad_id_tokens_are_refused_with_their_reason(
    name: str, make: Callable[[FakeIdP], str], reason: str
) -> None:
    idp = FakeIdP()
    with pytest.raises(IdTokenError) as caught:
        await relying_party(idp).verify_id_token(make(idp), nonce="n-1", now=NOW)
    assert caught.value.reason == reason


async def test_hs256_is_refused_even_when_the_provider_advertises_it() -> None:
    idp = FakeIdP()
    idp.doc["id_token_signing_alg_values_supported"] = ["HS256", "RS256"]
    forged = hs256_with(RSA_PUBLIC_PEM, idp.claims(), RS_KEY.kid)
    with pytest.raises(IdTokenError) as caught:
        await relying_party(idp).verify_id_token(forged, nonce="n-1", now=NOW)
    assert caught.value.reason == "alg not allowed"
    assert "asymmetric" in caught.value.detail


async def test_alg_the_provider_does_not_advertise_is_refused() -> None:
    idp = FakeIdP()
    idp.doc["id_token_signing_alg_values_supported"] = ["RS256"]
    with pytest.raises(IdTokenError) as caught:
        await relying_party(idp).verify_id_token(idp.id_token(ES_KEY), nonce="n-1", now=NOW)
    assert caught.value.reason == "alg not allowed"
    assert "advertises RS256" in caught.value.detail


async def test_a_single_key_needs_no_kid() -> None:
    idp = FakeIdP()
    idp.published = [ES_KEY]
    token = jwt.encode(idp.claims(), ES_KEY.private, algorithm="ES256")
    claims = await relying_party(idp).verify_id_token(token, nonce="n-1", now=NOW)
    assert claims["sub"] == "user-1"


async def test_a_refreshed_id_token_needs_no_nonce() -> None:
    idp = FakeIdP()
    token = idp.id_token(nonce=None)
    assert (await relying_party(idp).verify_id_token(token, nonce=None, now=NOW))["sub"]


def jwks_fetches(idp: FakeIdP) -> int:
    return idp.paths().count("/jwks")


async def test_rotated_key_causes_one_refetch_then_verifies() -> None:
    idp, clock = FakeIdP(), Clock()
    rp = relying_party(idp, clock, jwks_min_refetch_interval=30)
    await rp.verify_id_token(idp.id_token(ES_KEY), nonce="n-1", now=NOW)
    idp.published = [ROTATED_KEY, RS_KEY]
    clock.now += 31
    claims = await rp.verify_id_token(idp.id_token(ROTATED_KEY), nonce="n-1", now=NOW)
    assert claims["sub"] == "user-1"
    assert jwks_fetches(idp) == 2
    # The new key set is cached: no fetch for the next token.
    await rp.verify_id_token(idp.id_token(ROTATED_KEY), nonce="n-1", now=NOW)
    assert jwks_fetches(idp) == 2


async def test_still_unknown_kid_after_one_refetch_is_refused() -> None:
    idp, clock = FakeIdP(), Clock()
    rp = relying_party(idp, clock, jwks_min_refetch_interval=30)
    await rp.verify_id_token(idp.id_token(ES_KEY), nonce="n-1", now=NOW)
    clock.now += 31
    with pytest.raises(IdTokenError) as caught:
        await rp.verify_id_token(idp.id_token(ROTATED_KEY), nonce="n-1", now=NOW)
    assert caught.value.reason == "unknown key"
    assert "es-2" in caught.value.detail
    assert jwks_fetches(idp) == 2


async def test_unknown_kid_refetches_are_rate_limited() -> None:
    idp, clock = FakeIdP(), Clock()
    rp = relying_party(idp, clock, jwks_min_refetch_interval=30)
    await rp.verify_id_token(idp.id_token(ES_KEY), nonce="n-1", now=NOW)
    idp.published = [ROTATED_KEY]
    for _ in range(5):
        with pytest.raises(IdTokenError, match="unknown key"):
            await rp.verify_id_token(idp.id_token(ROTATED_KEY), nonce="n-1", now=NOW)
    assert jwks_fetches(idp) == 1
    clock.now += 30
    await rp.verify_id_token(idp.id_token(ROTATED_KEY), nonce="n-1", now=NOW)
    assert jwks_fetches(idp) == 2


async def test_encryption_keys_do_not_verify_signatures() -> None:
    idp = FakeIdP()
    enc: dict[str, Any] = {**ES_KEY.jwk, "use": "enc"}
    idp.overrides["/jwks"] = lambda _: httpx.Response(200, json={"keys": [enc]})
    rp = relying_party(idp)
    with pytest.raises(IdTokenError, match="unknown key"):
        await rp.verify_id_token(idp.id_token(ES_KEY), nonce="n-1", now=NOW)
